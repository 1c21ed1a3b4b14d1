//! TCP connection tracking: netfilter's state table plus window tracking after G. van Rooij,
//! "Real Stateful TCP Packet Filtering in IP Filter".

use crate::config::Config;
use crate::reason::DropReason;
use crate::seq::{after, before};
use crate::table::{
    Entry, IgnoredSyn, Peer, PEER_CLOSE_INIT, PEER_DATA_UNACK, PEER_LIBERAL, PEER_SACK_PERM,
    PEER_WSCALE, STATUS_ASSURED, STATUS_LIBERAL, STATUS_SEEN_REPLY,
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
    /// A SYN in the original direction that the state table ignores (the entry may be out of
    /// sync): accepted without updating anything, and to be remembered (see [`ignored_syn`]).
    IgnoreSyn,
    /// A SYN/ACK in the reply direction that the state table ignores: accepted without
    /// updating anything, unless it acknowledges a remembered SYN (see [`resync`]).
    IgnoreSynAck,
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
    if let Some(ws) = seg.options.window_scale() {
        f |= PEER_WSCALE;
        e.scale[side] = ws.min(14);
    } else {
        e.scale[side] = 0;
    }
    if seg.options.sack_permitted() {
        f |= PEER_SACK_PERM;
    }
    e.pflags[side] = f;
}

/// The state a new connection opened by `seg` starts in; `None` when the segment cannot
/// open one.
pub(crate) fn open_state(seg: &Tcp, cfg: &Config) -> Option<TcpState> {
    match crate::wire::tcp_class(seg.flags) {
        TcpClass::Syn => Some(TcpState::SynSent),
        TcpClass::Ack if cfg.tcp_loose => Some(TcpState::Established),
        _ => None,
    }
}

/// Initialises a new entry from the segment that opens it, in the state [`open_state`]
/// gave for it.
pub(crate) fn open(e: &mut Entry, seg: &Tcp, state: TcpState) {
    let end = seq_len(seg);
    let win = u32::from(seg.window);
    match state {
        TcpState::SynSent => {
            e.state = SS;
            e.peer[0] = Peer {
                end,
                maxend: end,
                maxwin: win.max(1),
            };
            take_options(e, 0, seg);
        }
        _ => {
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
        }
    }
}

enum Window {
    Pass,
    /// Outside bounds II or IV: pass, change nothing.
    Ignore,
    Invalid(DropReason),
    /// A RST in the window of an established connection that is not at the sequence number
    /// the receiver expects: pass, but keep the state (RFC 5961 3.2).
    RstKeep,
}

/// van Rooij's four bounds, with netfilter's initialisation rules.
#[inline(always)]
fn in_window(e: &mut Entry, dir: usize, seg: &Tcp, liberal: bool) -> Window {
    // `dir` is 0 or 1; masking tells the compiler so, which drops the bounds checks.
    let dir = dir & 1;
    let s = dir;
    let sack = sack_of(e, dir ^ 1, seg);
    let end = seq_len(seg);
    let state = e.state;
    if e.peer[s].maxwin == 0
        || (((state == SS && dir == 0) || (state == SR && dir == 1)) && after(end, e.peer[s].end))
    {
        return in_window_init(e, dir, *seg, liberal);
    }
    bounds(e, dir, seg, liberal, sack, end)
}

/// The highest sequence number `seg` acknowledges: its ack, or its highest SACK block when
/// the receiver (side `r`) allowed SACK.
#[inline(always)]
fn sack_of(e: &Entry, r: usize, seg: &Tcp) -> u32 {
    let mut sack = seg.ack;
    if e.pflags[r & 1] & PEER_SACK_PERM != 0 {
        if let Some(m) = seg.options.sack_max() {
            if after(m, sack) {
                sack = m;
            }
        }
    }
    sack
}

/// [`in_window`] for a segment that (re)initialises its sender's side: the first segment
/// seen from it (a SYN/ACK, a SYN in simultaneous open, or the other side's first segment
/// of a connection picked up mid-stream), or a SYN with higher sequence numbers on a
/// connection still opening. A segment that then fails the bounds leaves the entry as it
/// was: it must not leave behind window state it did not earn (a spoofed SYN/ACK with a
/// wrong ack would otherwise make the real one fail bound I). Out of line, so the fast path
/// pays nothing for keeping the old state.
#[inline(never)]
fn in_window_init(e: &mut Entry, dir: usize, seg: Tcp, liberal: bool) -> Window {
    let seg = &seg;
    let dir = dir & 1;
    let (s, r) = (dir, dir ^ 1);
    let saved = (e.peer, e.scale, e.pflags);
    let is_syn = seg.flags & TCP_SYN != 0;
    let is_ack = seg.flags & TCP_ACK != 0;
    let win = u32::from(seg.window);
    let end = seq_len(seg);
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
            let sack = sack_of(e, r, seg);
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
    } else {
        // RFC 793: a reinitialised TCP may reuse the connection with higher sequence numbers.
        e.peer[s] = Peer {
            end,
            maxend: end,
            maxwin: win.max(1),
        };
        take_options(e, s, seg);
    }
    let w = bounds(e, dir, seg, liberal, sack_of(e, r, seg), end);
    if !matches!(w, Window::Pass) {
        (e.peer, e.scale, e.pflags) = saved;
    }
    w
}

/// The bounds check proper and, for a segment that passes, the window updates. `sack` is
/// [`sack_of`] the segment and `end` its [`seq_len`].
#[inline(always)]
fn bounds(
    e: &mut Entry,
    dir: usize,
    seg: &Tcp,
    liberal: bool,
    mut sack: u32,
    mut end: u32,
) -> Window {
    let dir = dir & 1;
    let (s, r) = (dir, dir ^ 1);
    let mut seq = seg.seq;
    let mut ack = seg.ack;
    let flags = seg.flags;
    let is_syn = flags & TCP_SYN != 0;
    let is_ack = flags & TCP_ACK != 0;
    let is_rst = flags & TCP_RST != 0;
    let mut win = u32::from(seg.window);
    let state = e.state;

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
    if is_rst {
        if let Some(w) = rst_in_established(e, s, seq, liberal) {
            return w;
        }
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

/// netfilter's check of a RST on an established, assured connection (RFC 5961 3.2), for a RST
/// already found in the window: it closes the connection only at exactly the sequence number
/// the receiver expects; below what the receiver has acknowledged it is invalid; anywhere
/// else in the window the state stays, so that the receiver's challenge ACK finds it. `None`
/// when the RST closes the connection as usual (other states, liberal tracking).
///
/// netfilter compares with the receiver's highest ack (`td_maxack`), which the entry has no
/// room for. What it keeps is as good where it matters: when the receiver has acknowledged
/// everything the sender sent (no `PEER_DATA_UNACK`), its highest ack is the sender's `end`,
/// so that is the one sequence number that closes and anything below is invalid. With data
/// in flight its highest ack is somewhere below `end`: a RST at `end` (RFC 793's reset at
/// SND.NXT, netfilter's "RST train") still closes, and one below keeps the state with the
/// close timeout, so that if it was genuine the entry goes within seconds all the same.
#[cold]
#[inline(never)]
fn rst_in_established(e: &Entry, s: usize, seq: u32, liberal: bool) -> Option<Window> {
    let established = e.state == ES && e.status & STATUS_ASSURED != 0;
    if !established || liberal || (e.pflags[0] | e.pflags[1]) & PEER_LIBERAL != 0 {
        return None;
    }
    let s = s & 1;
    let end = e.peer[s].end;
    if seq == end {
        None
    } else if e.pflags[s] & PEER_DATA_UNACK == 0 && before(seq, end) {
        Some(Window::Invalid(DropReason::TcpRstOutOfWindow))
    } else {
        Some(Window::RstKeep)
    }
}

/// What to remember of a SYN ignored on entry `id` (netfilter's `last_*` annotations).
pub(crate) fn ignored_syn(id: u32, seg: &Tcp) -> IgnoredSyn {
    let mut flags = 0;
    let mut scale = 0;
    if let Some(ws) = seg.options.window_scale() {
        flags |= PEER_WSCALE;
        scale = ws.min(14);
    }
    if seg.options.sack_permitted() {
        flags |= PEER_SACK_PERM;
    }
    IgnoredSyn {
        id,
        end: seq_len(seg),
        win: seg.window,
        scale,
        flags,
    }
}

/// netfilter's resynchronisation on a SYN/ACK in the reply direction that the state table
/// ignores but that acknowledges the SYN last ignored on the entry (`syn`): client and server
/// are in sync and the firewall is not (both forgot the old connection without the firewall
/// seeing it close, and the 4-tuple is being reused). The entry goes back to SYN_SENT as the
/// remembered SYN would have made it, its reply side forgotten, and takes the SYN/ACK from
/// there (to SYN_RECV). The caller has checked that the SYN/ACK acknowledges `syn.end`.
/// Returns whether the entry was resynchronised; if the SYN/ACK does not pass, the entry is
/// left as it was.
pub(crate) fn resync(
    e: &mut Entry,
    syn: &IgnoredSyn,
    seg: &Tcp,
    cfg: &Config,
    timeouts: &StateTimeouts,
    now_s: u32,
) -> bool {
    let mut n = *e;
    n.state = SS;
    n.peer[0] = Peer {
        end: syn.end,
        maxend: syn.end,
        maxwin: u32::from(syn.win).max(1),
    };
    n.peer[1] = Peer::default();
    n.scale = [syn.scale, 0];
    // As netfilter: the SYN's options, and only the "be liberal" flag survives.
    n.pflags = [
        syn.flags | (e.pflags[0] & PEER_LIBERAL),
        e.pflags[1] & PEER_LIBERAL,
    ];
    if track(&mut n, 1, seg, cfg, timeouts, now_s) != Decision::Accept {
        return false;
    }
    *e = n;
    true
}

/// Tracks a segment of a known connection travelling in `dir` (0 original, 1 reply).
/// `timeouts` are `cfg`'s, by state.
#[inline(always)]
pub(crate) fn track(
    e: &mut Entry,
    dir: usize,
    seg: &Tcp,
    cfg: &Config,
    timeouts: &StateTimeouts,
    now_s: u32,
) -> Decision {
    let dir = dir & 1;
    let class = crate::wire::tcp_class(seg.flags);
    let old = e.state;
    let Some(&new) = TRANSITIONS[dir][class as usize].get(usize::from(old)) else {
        return Decision::Invalid(DropReason::TcpInvalidTransition);
    };
    match new {
        IV => return Decision::Invalid(DropReason::TcpInvalidTransition),
        IG => {
            return match class {
                TcpClass::Syn => Decision::IgnoreSyn,
                TcpClass::SynAck => Decision::IgnoreSynAck,
                _ => Decision::Ignore,
            }
        }
        SS if old == TW || old == CL => return Decision::Reopen,
        _ => {}
    }
    let liberal = cfg.tcp_liberal || e.status & STATUS_LIBERAL != 0;
    match in_window(e, dir, seg, liberal) {
        Window::Pass => {}
        Window::Ignore => return Decision::Ignore,
        Window::Invalid(r) => return Decision::Invalid(r),
        Window::RstKeep => {
            // As netfilter: the state and windows stay, the timeout becomes the close
            // timeout. A genuine reset lets the entry go soon; the receiver's challenge ACK
            // (or any traffic) restores the state's timeout.
            e.expires = now_s.saturating_add(cfg.timeouts.tcp_close);
            return Decision::Accept;
        }
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
    let mut timeout = timeouts.get(new);
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

/// Each TCP state's timeout, by state number. Looked up on every segment, where a `match`
/// on the state compiles to a jump table whose indirect branch mispredicts as connections
/// move from state to state. Built from the timeouts in force whenever they change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StateTimeouts([u32; 16]);

impl StateTimeouts {
    pub(crate) fn new(cfg: &Config) -> StateTimeouts {
        StateTimeouts(core::array::from_fn(|i| {
            u8::try_from(i).map_or(cfg.timeouts.tcp_close, |state| state_timeout(state, cfg))
        }))
    }

    /// `state_timeout(state, cfg)` of the `cfg` this was built from.
    #[inline(always)]
    fn get(&self, state: u8) -> u32 {
        self.0[usize::from(state) % 16]
    }
}

/// Timeout for the segment that opened the entry.
pub(crate) fn open_timeout(state: TcpState, cfg: &Config) -> u32 {
    match state {
        TcpState::Established => cfg.timeouts.tcp_unacknowledged,
        s => state_timeout(s as u8, cfg),
    }
}
