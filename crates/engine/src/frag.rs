//! Fragments, tracked safely without reassembly.
//!
//! Only a datagram's first fragment carries the transport header, so only it can be
//! tracked like any packet. The engine remembers, per datagram (addresses, protocol and
//! identification), what the first fragment was: its ports, and whether it was tracked,
//! exempted or invalid. A later fragment of that datagram is then classified as the first
//! was (ports filled in, so rules see them; counted against the connection; translated with
//! it), and one arriving without its first is invalid (`fragment`), as is one overlapping a
//! piece already seen (`fragment-overlap`: overlaps are how fragmentation attacks rewrite a
//! header the firewall judged; RFC 5722 discards the datagram, and so does this: every later
//! piece of it is refused too).
//!
//! Memory and time are bounded: a fixed table of datagrams (allocated on the first fragment
//! ever seen), 8-way set-associative under a keyed hash; a record lasts 30 seconds (Linux's
//! `ipfrag_time`); one source holds at most two slots of any set, so a source sending
//! fragments without end only recycles its own records.

use crate::wire::{Addr, Family, Ip};

/// Datagrams the table can hold.
const SLOTS: usize = 2048;
const WAYS: usize = 8;
/// How long a datagram's record lasts, in seconds.
const LIFETIME: u32 = 30;
/// Disjoint pieces remembered per datagram; more, out of order, and later pieces are refused.
const PIECES: usize = 8;
/// Slots one source may hold in a set.
const PER_SOURCE: usize = 2;

/// What the first fragment of a datagram was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum First {
    /// Tracked under a key with these ports (or ICMP identifier and class).
    Tracked {
        sport: u16,
        dport: u16,
    },
    /// Exempted from tracking.
    Untracked,
    Invalid(crate::reason::DropReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DatagramKey {
    src: Addr,
    dst: Addr,
    id: u32,
    proto: u8,
    family: u8,
}

#[derive(Clone, Copy, Debug)]
struct Record {
    key: DatagramKey,
    first: First,
    /// Byte ranges of the payload seen, `[start, end)`, merged when they touch.
    pieces: [(u32, u32); PIECES],
    npieces: u8,
    poisoned: bool,
    expires: u32,
}

/// What a later fragment belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Later {
    /// No first fragment on record (lost, late, or never sent).
    Unknown,
    /// It overlaps a piece already seen, or its datagram already had an overlap.
    Overlap,
    /// Its datagram is more pieces out of order than are remembered.
    TooScattered,
    Of(First),
}

pub(crate) struct Fragments {
    slots: Vec<Option<Record>>,
    hasher: ahash::RandomState,
}

fn key_of(ip: &Ip<'_>) -> DatagramKey {
    DatagramKey {
        src: ip.src,
        dst: ip.dst,
        id: ip.frag_id,
        proto: ip.proto,
        family: match ip.family {
            Family::V4 => 4,
            Family::V6 => 6,
        },
    }
}

impl Fragments {
    pub(crate) fn new(key: [u64; 4]) -> Fragments {
        Fragments {
            slots: Vec::new(),
            hasher: ahash::RandomState::with_seeds(key[3], key[1], key[2], key[0]),
        }
    }

    fn set(&mut self, k: &DatagramKey) -> Option<&mut [Option<Record>]> {
        if self.slots.is_empty() {
            self.slots = vec![None; SLOTS];
        }
        let sets = SLOTS / WAYS;
        let h = self
            .hasher
            .hash_one((k.src, k.dst, k.id, k.proto, k.family));
        let start = usize::try_from(h % sets as u64).ok()? * WAYS;
        self.slots.get_mut(start..start + WAYS)
    }

    /// Records a datagram's first fragment (`ip`) and what became of it.
    pub(crate) fn first(&mut self, ip: &Ip<'_>, first: First, now_s: u32) {
        let k = key_of(ip);
        let end = ip.l4_len;
        let Some(ways) = self.set(&k) else {
            return;
        };
        let rec = Record {
            key: k,
            first,
            pieces: [(0, end); PIECES],
            npieces: 1,
            poisoned: false,
            expires: now_s.saturating_add(LIFETIME),
        };
        let live = |r: &Option<Record>| r.as_ref().is_some_and(|r| r.expires > now_s);
        // Its own record (a retransmitted first fragment), a free or expired slot, else the
        // oldest of this source's if it holds its share of the set, else the oldest.
        let own = ways
            .iter()
            .position(|r| r.as_ref().is_some_and(|r| r.key == k && r.expires > now_s));
        if let Some(i) = own {
            if let Some(Some(r)) = ways.get_mut(i) {
                // The same first piece again is an overlap.
                r.poisoned = true;
            }
            return;
        }
        let same_src = ways
            .iter()
            .filter(|r| live(r) && r.as_ref().is_some_and(|r| r.key.src == k.src))
            .count();
        let oldest = |pred: &dyn Fn(&Record) -> bool| {
            ways.iter()
                .enumerate()
                .filter_map(|(i, r)| r.as_ref().filter(|r| pred(r)).map(|r| (i, r.expires)))
                .min_by_key(|&(_, e)| e)
                .map(|(i, _)| i)
        };
        let i = ways.iter().position(|r| !live(r)).or_else(|| {
            if same_src >= PER_SOURCE {
                oldest(&|r: &Record| r.key.src == k.src)
            } else {
                oldest(&|_: &Record| true)
            }
        });
        if let Some(slot) = i.and_then(|i| ways.get_mut(i)) {
            *slot = Some(rec);
        }
    }

    /// A later fragment (`ip`): what its datagram's first fragment was, with the piece
    /// added, or why it cannot be judged.
    pub(crate) fn later(&mut self, ip: &Ip<'_>, now_s: u32) -> Later {
        let k = key_of(ip);
        let start = ip.frag_offset;
        let end = start.saturating_add(ip.l4_len);
        let Some(ways) = self.set(&k) else {
            return Later::Unknown;
        };
        let Some(r) = ways
            .iter_mut()
            .flatten()
            .find(|r| r.key == k && r.expires > now_s)
        else {
            return Later::Unknown;
        };
        let n = usize::from(r.npieces).min(PIECES);
        let overlaps = r.pieces.iter().take(n).any(|&(a, b)| start < b && a < end);
        if r.poisoned || overlaps || start >= end {
            r.poisoned = true;
            return Later::Overlap;
        }
        // Merge with a piece it touches, else keep it apart while there is room.
        if let Some(p) = r
            .pieces
            .iter_mut()
            .take(n)
            .find(|(a, b)| *b == start || end == *a)
        {
            *p = (p.0.min(start), p.1.max(end));
        } else if let Some(p) = r.pieces.get_mut(n) {
            *p = (start, end);
            r.npieces += 1;
        } else {
            return Later::TooScattered;
        }
        Later::Of(r.first)
    }
}
