//! Connection events, as `conntrack -E` reports them: an entry confirmed (NEW), its TCP
//! state or its seen-reply/assured status changed (UPDATE), an entry gone (DESTROY).
//!
//! Opt-in ([`crate::Engine::set_events`]): with the log off the per-packet cost is one
//! branch on an `Option`. The log is a bounded ring; when the reader falls behind, the oldest
//! events are dropped and counted, as a netlink socket overflows (`ENOBUFS`).
//!
//! Expiry is lazy: an entry past its deadline is reclaimed by the sweep, by a packet of the
//! same tuple, by [`crate::Engine::expire`] or [`crate::Engine::remove_where`], or to make room,
//! and its DESTROY is recorded then, not at the deadline itself.

use crate::engine::{conn_view, Conn};
use crate::table::{Table, STATUS_ASSURED, STATUS_NAT, STATUS_SEEN_REPLY};
use std::collections::VecDeque;

/// What happened to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    New,
    Update,
    Destroy,
}

impl EventKind {
    /// The name as `conntrack -E` prints it, in upper case without brackets.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::New => "NEW",
            EventKind::Update => "UPDATE",
            EventKind::Destroy => "DESTROY",
        }
    }
}

/// One connection event: the connection as it was right after the change (for DESTROY, as
/// it was when reclaimed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub conn: Conn,
    /// Whether the TCP state changed with this event; netfilter reports the state only
    /// then (always for NEW and DESTROY).
    pub state_changed: bool,
}

/// The status bits an UPDATE reports.
const REPORTED: u8 = STATUS_SEEN_REPLY | STATUS_ASSURED;

pub(crate) struct EventLog {
    ring: VecDeque<Event>,
    cap: usize,
    lost: u64,
    /// The entry the current packet found, with its TCP state and reported status bits
    /// before the packet changed them.
    before: Option<(u32, u8, u8)>,
}

impl EventLog {
    pub(crate) fn new(cap: usize) -> EventLog {
        EventLog {
            ring: VecDeque::with_capacity(cap.min(4096)),
            cap: cap.max(1),
            lost: 0,
            before: None,
        }
    }

    pub(crate) fn lost(&self) -> u64 {
        self.lost
    }

    pub(crate) fn drain(&mut self, out: &mut Vec<Event>) {
        out.extend(self.ring.drain(..));
    }

    fn push(&mut self, ev: Event) {
        if self.ring.len() >= self.cap {
            self.ring.pop_front();
            self.lost += 1;
        }
        self.ring.push_back(ev);
    }

    fn snapshot(table: &Table, id: u32, now_s: u32) -> Conn {
        let e = table.get(id);
        let x = (e.status & STATUS_NAT != 0).then(|| table.ext(id));
        conn_view(e, x, now_s)
    }

    /// Remembers the entry a packet found, before tracking changes it.
    #[inline(always)]
    pub(crate) fn found(&mut self, id: u32, state: u8, status: u8) {
        self.before = Some((id, state, status & REPORTED));
    }

    /// Records the entry `id`, about to be removed.
    #[inline(never)]
    pub(crate) fn destroy(&mut self, table: &Table, id: u32, now_s: u32) {
        let conn = Self::snapshot(table, id, now_s);
        self.push(Event {
            kind: EventKind::Destroy,
            conn,
            state_changed: true,
        });
    }

    /// After a packet: an UPDATE if the entry it found changed state or reported status,
    /// and a NEW if it created an entry the policy kept.
    #[inline(never)]
    pub(crate) fn after_packet(&mut self, table: &Table, created: Option<u32>, now_s: u32) {
        if let Some((id, state, status)) = self.before.take() {
            let e = table.get(id);
            // Gone with this packet (its DESTROY is recorded), or replaced by a reopened
            // connection (whose NEW follows).
            if !e.is_free() && created != Some(id) {
                let state_changed = e.state != state;
                if state_changed || e.status & REPORTED != status {
                    let conn = Self::snapshot(table, id, now_s);
                    self.push(Event {
                        kind: EventKind::Update,
                        conn,
                        state_changed,
                    });
                }
            }
        }
        if let Some(id) = created {
            let conn = Self::snapshot(table, id, now_s);
            self.push(Event {
                kind: EventKind::New,
                conn,
                state_changed: true,
            });
        }
    }

    /// Forgets a found entry whose changes no packet will report (outside packet
    /// processing).
    pub(crate) fn forget(&mut self) {
        self.before = None;
    }
}
