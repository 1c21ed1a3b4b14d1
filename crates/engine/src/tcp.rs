//! TCP connection tracking: netfilter's state table plus window tracking after G. van Rooij,
//! "Real Stateful TCP Packet Filtering in IP Filter".

use crate::config::Config;
use crate::reason::DropReason;
use crate::seq::{after, before};
use crate::table::{
    Entry, Peer, PEER_CLOSE_INIT, PEER_DATA_UNACK, PEER_LIBERAL, PEER_SACK_PERM, PEER_WSCALE,
    STATUS_ASSURED, STATUS_LIBERAL, STATUS_SEEN_REPLY,
};
use crate::wire::{Tcp, TcpClass, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// TCP connection states, numbered as netfilter numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    None = 0,
    SynSent = 1,
    SynRecv = 2,
    Established = 3,
    FinWait = 4,
    CloseWait = 5,
    LastAck = 6,
    TimeWait = 7,
    Close = 8,
    SynSent2 = 9,
}

impl TcpState {
    pub const ALL: [TcpState; 10] = [
        TcpState::None,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TimeWait,
        TcpState::Close,
        TcpState::SynSent2,
    ];

    /// The name conntrack prints.
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
        }
    }

    pub(crate) fn from_u8(v: u8) -> TcpState {
        TcpState::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(TcpState::None)
    }
}

use TcpState::TimeWait;

const NO: u8 = 0;
const SS: u8 = 1;
const SR: u8 = 2;
const ES: u8 = 3;
const FW: u8 = 4;
const CW: u8 = 5;
const LA: u8 = 6;
const TW: u8 = 7;
const CL: u8 = 8;
const S2: u8 = 9;
/// Invalid: the segment does not fit the state.
const IV: u8 = 10;
/// Ignore: pass the segment without changing the state (it may be a stale retransmission or
/// the state table may be out of sync).
const IG: u8 = 11;

/// `TRANSITIONS[dir][class][state]`, cell for cell netfilter's `tcp_conntracks`. Columns are
/// NONE SYN_SENT SYN_RECV ESTABLISHED FIN_WAIT CLOSE_WAIT LAST_ACK TIME_WAIT CLOSE SYN_SENT2.
#[rustfmt::skip]
const TRANSITIONS: [[[u8; 10]; 6]; 2] = [
    [
        // ORIGINAL
        /* syn    */ [SS, SS, IG, IG, IG, IG, IG, SS, SS, S2],
        /* synack */ [IV, IV, SR, IV, IV, IV, IV, IV, IV, SR],
        /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* ack    */ [ES, IV, ES, ES, CW, CW, TW, TW, CL, IV],
        /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ],
    [
        // REPLY
        /* syn    */ [IV, S2, IV, IV, IV, IV, IV, SS, IV, S2],
        /* synack */ [IV, SR, IG, IG, IG, IG, IG, IG, IG, SR],
        /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /* ack    */ [IV, IG, SR, ES, CW, CW, TW, TW, CL, IG],
        /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ],
];

/// netfilter's MAXACKWINCONST: the least slack allowed below the receiver's end for an ack.
const MAX_ACK_WINDOW: u32 = 66_000;

/// What the tracker decided about a segment of a known connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Accepted; state and windows updated.
    Accept,
    /// Accepted without updating anything (netfilter's "ignore").
    Ignore,
    /// The segment is invalid; the connection is left alone.
    Invalid(DropReason),
    /// A SYN on a TIME_WAIT or CLOSE entry: end the old entry, open a new one.
    Reopen,
    /// Accepted, and the connection is over: a RST answered a connection never replied to.
    AcceptAndRemove,
}

#[inline(always)]
fn seq_len(seg: &Tcp) -> u32 {
    seg.seq
        .wrapping_add(seg.payload_len)
        .wrapping_add(u32::from(seg.flags & TCP_SYN != 0))
        .wrapping_add(u32::from(seg.flags & TCP_FIN != 0))
}

fn take_options(e: &mut Entry, side: usize, seg: &Tcp) {
    let mut f = e.pflags[side] & !(PEER_WSCALE | PEER_SACK_PERM);
    if let Some(ws) = seg.options.window_scale {
        f |= PEER_WSCALE;
        e.scale[side] = ws.min(14);
    } else {
        e.scale[side] = 0;
    }
    if seg.options.sack_permitted {
        f |= PEER_SACK_PERM;
    }
    e.pflags[side] = f;
}

/// Initialises a new entry from the segment that opens it. Returns `None` when the segment
/// cannot open a connection.
pub(crate) fn open(e: &mut Entry, seg: &Tcp, cfg: &Config) -> Option<TcpState> {
    let class = crate::wire::tcp_class(seg.flags);
    let end = seq_len(seg);
    let win = u32::from(seg.window);
    match class {
        TcpClass::Syn => {
            e.state = SS;
            e.peer[0] = Peer {
                end,
                maxend: end,
                maxwin: win.max(1),
            };
            take_options(e, 0, seg);
            Some(TcpState::SynSent)
        }
        TcpClass::Ack if cfg.tcp_loose => {
            // Picked up mid-stream: the history is lost, so take what this segment says and
            // relax window checks until both directions have been seen.
            e.state = ES;
            let maxwin = win.max(1);
            e.peer[0] = Peer {
                end,
                maxend: end.wrapping_add(maxwin),
                maxwin,
            };
            e.peer[1] = Peer {
                end: seg.ack,
                maxend: seg.ack,
                maxwin: 0,
            };
            e.pflags = [PEER_SACK_PERM | PEER_LIBERAL; 2];
            Some(TcpState::Established)
        }
        _ => None,
    }
}

enum Window {
    Pass,
    /// Outside bounds II or IV: pass, change nothing.
    Ignore,
    Invalid(DropReason),
}

/// van Rooij's four bounds, with netfilter's initialisation rules.
#[inline(always)]
fn in_window(e: &mut Entry, dir: usize, seg: &Tcp, liberal: bool) -> Window {
    // `dir` is 0 or 1; masking tells the compiler so, which drops the bounds checks.
    let dir = dir & 1;
    let (s, r) = (dir, dir ^ 1);
    let mut seq = seg.seq;
    let mut ack = seg.ack;
    let mut sack = ack;
    let flags = seg.flags;
    let is_syn = flags & TCP_SYN != 0;
    let is_ack = flags & TCP_ACK != 0;
    let is_rst = flags & TCP_RST != 0;
    let mut win = u32::from(seg.window);
    let mut end = seq_len(seg);
    if e.pflags[r] & PEER_SACK_PERM != 0 {
        if let Some(m) = seg.options.sack_max {
            if after(m, sack) {
                sack = m;
            }
        }
    }
    let state = e.state;

    if e.peer[s].maxwin == 0 {
        if is_syn {
            // SYN/ACK answering a SYN, or a SYN from the reply side in simultaneous open.
            e.peer[s] = Peer {
                end,
                maxend: end,
                maxwin: win.max(1),
            };
            take_options(e, s, seg);
            // RFC 7323: scaling applies only if both sides offered it.
            if e.pflags[s] & PEER_WSCALE == 0 || e.pflags[r] & PEER_WSCALE == 0 {
                e.scale = [0, 0];
            }
            if !is_ack {
                return Window::Pass;
            }
        } else {
            let swin = (win << e.scale[s]).max(1);
            e.peer[s] = Peer {
                end,
                maxend: end.wrapping_add(swin),
                maxwin: swin,
            };
            if e.peer[r].maxwin == 0 {
                e.peer[r].end = sack;
                e.peer[r].maxend = sack;
            } else if sack == e.peer[r].end.wrapping_add(1) {
                // Likely the answer to a keepalive.
                e.peer[r].end = e.peer[r].end.wrapping_add(1);
            }
        }
    } else if ((state == SS && dir == 0) || (state == SR && dir == 1)) && after(end, e.peer[s].end)
    {
        // RFC 793: a reinitialised TCP may reuse the connection with higher sequence numbers.
        e.peer[s] = Peer {
            end,
            maxend: end,
            maxwin: win.max(1),
        };
        take_options(e, s, seg);
    }

    if !is_ack || (is_rst && ack == 0) {
        // No ACK (or a broken stack's RST|ACK with ack 0): pretend it acknowledged what it had.
        ack = e.peer[r].end;
        sack = ack;
    }
    if is_rst && seq == 0 && state == SS {
        // RST answering a SYN.
        seq = e.peer[s].end;
        end = seq;
    }

    let snd = e.peer[s];
    let rcv = e.peer[r];
    let max_ack_window = snd.maxwin.max(MAX_ACK_WINDOW);
    let b1 = before(seq, snd.maxend.wrapping_add(1));
    let b2 = !before(end, snd.end.wrapping_sub(rcv.maxwin));
    let b3 = before(sack, rcv.end.wrapping_add(1));
    let b4 = !before(sack, rcv.end.wrapping_sub(max_ack_window));

    if !(b1 && b2 && b3 && b4) {
        if liberal || e.pflags[s] & PEER_LIBERAL != 0 {
            return Window::Ignore;
        }
        if is_rst && !(b1 && b2) {
            return Window::Invalid(DropReason::TcpRstOutOfWindow);
        }
        if !b1 {
            return Window::Invalid(DropReason::TcpSeqOverWindow);
        }
        if !b3 {
            return Window::Invalid(DropReason::TcpAckOverWindow);
        }
        return Window::Ignore;
    }

    if !is_syn {
        win <<= e.scale[s];
    }
    let swin = win.wrapping_add(sack.wrapping_sub(ack));
    let snd = &mut e.peer[s];
    if snd.maxwin < swin {
        snd.maxwin = swin;
    }
    if after(end, snd.end) {
        snd.end = end;
        e.pflags[s] |= PEER_DATA_UNACK;
    }
    let snd_maxend = e.peer[s].maxend;
    let rcv = &mut e.peer[r];
    if rcv.maxwin != 0 && after(end, snd_maxend) {
        rcv.maxwin = rcv.maxwin.wrapping_add(end.wrapping_sub(snd_maxend));
    }
    if after(sack.wrapping_add(win), rcv.maxend.wrapping_sub(1)) {
        rcv.maxend = sack.wrapping_add(win);
        if win == 0 {
            rcv.maxend = rcv.maxend.wrapping_add(1);
        }
    }
    if ack == rcv.end {
        e.pflags[r] &= !PEER_DATA_UNACK;
    }
    if e.peer[r].maxwin != 0 {
        // Both directions are now known: windows are tracked for real from here on.
        e.pflags[s] &= !PEER_LIBERAL;
    }
    Window::Pass
}

/// Tracks a segment of a known connection travelling in `dir` (0 original, 1 reply).
#[inline(always)]
pub(crate) fn track(e: &mut Entry, dir: usize, seg: &Tcp, cfg: &Config, now_s: u32) -> Decision {
    let dir = dir & 1;
    let class = crate::wire::tcp_class(seg.flags);
    let old = e.state;
    let Some(&new) = TRANSITIONS[dir][class as usize].get(usize::from(old)) else {
        return Decision::Invalid(DropReason::TcpInvalidTransition);
    };
    match new {
        IV => return Decision::Invalid(DropReason::TcpInvalidTransition),
        IG => return Decision::Ignore,
        SS if old == TW || old == CL => return Decision::Reopen,
        _ => {}
    }
    let liberal = cfg.tcp_liberal || e.status & STATUS_LIBERAL != 0;
    match in_window(e, dir, seg, liberal) {
        Window::Pass => {}
        Window::Ignore => return Decision::Ignore,
        Window::Invalid(r) => return Decision::Invalid(r),
    }
    if class == TcpClass::Fin && e.pflags[dir ^ 1] & PEER_CLOSE_INIT == 0 {
        e.pflags[dir] |= PEER_CLOSE_INIT;
    }
    e.state = new;
    // netfilter: if the only reply is a RST (a closed port), there never was a connection.
    if class == TcpClass::Rst && e.status & STATUS_SEEN_REPLY == 0 {
        return Decision::AcceptAndRemove;
    }
    let seen_reply = e.status & STATUS_SEEN_REPLY != 0 || dir == 1;
    if seen_reply && e.status & STATUS_ASSURED == 0 && (old == SR || old == ES) && new == ES {
        e.status |= STATUS_ASSURED;
    }
    let t = &cfg.timeouts;
    let mut timeout = state_timeout(new, cfg);
    if class == TcpClass::Rst {
        timeout = t.tcp_close;
    } else if (e.pflags[0] | e.pflags[1]) & PEER_DATA_UNACK != 0 || (new == ES && !seen_reply) {
        timeout = timeout.min(t.tcp_unacknowledged);
    }
    e.expires = now_s.saturating_add(timeout);
    Decision::Accept
}

pub(crate) fn state_timeout(state: u8, cfg: &Config) -> u32 {
    let t = &cfg.timeouts;
    match state {
        SS | S2 => t.tcp_syn_sent,
        SR => t.tcp_syn_recv,
        ES => t.tcp_established,
        FW => t.tcp_fin_wait,
        CW => t.tcp_close_wait,
        LA => t.tcp_last_ack,
        TW => t.tcp_time_wait,
        CL | NO => t.tcp_close,
        _ => t.tcp_close,
    }
}

/// Timeout for the segment that opened the entry.
pub(crate) fn open_timeout(state: TcpState, cfg: &Config) -> u32 {
    match state {
        TcpState::Established => cfg.timeouts.tcp_unacknowledged,
        s => state_timeout(s as u8, cfg),
    }
}
