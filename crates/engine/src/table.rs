//! The state table: compact entries in a chunked slab, found through one open-addressing index.
//!
//! Memory layout is what makes the benchmark targets reachable:
//! - An [`Entry`] is 104 bytes and holds the original tuple only. The reply tuple is the
//!   inverse, so one index slot serves both directions: the hash is symmetric (it orders the
//!   two endpoints before hashing), and the direction falls out of comparing the packet's
//!   tuple with the stored one.
//! - The index is an array of 64-byte buckets, each one cache line with eight 32-bit tags and
//!   eight 32-bit entry ids. A lookup touches one bucket line and, on a tag match, one entry.
//! - Entries live in fixed chunks of [`CHUNK`] so growth never copies the table and never
//!   over-allocates by more than one chunk.
//! - The hash is keyed with the caller's secret (two folded multiplies for IPv4 tuples,
//!   [`ahash`] for IPv6), so nobody who lacks the key can aim connections at one bucket.

use crate::wire::Addr;
pub(crate) use crate::wire::Key;
use core::hash::Hasher;

/// Ids the sweep visits at a time, once every `SWEEP_RUN` packets: the same pace as one id
/// per packet.
pub(crate) const SWEEP_RUN: u32 = 8;

/// Entries per slab chunk.
pub(crate) const CHUNK: usize = 4096;
const CHUNK_SHIFT: u32 = 12;
/// [`CHUNK`] as an id count.
const CHUNK_IDS: u32 = 1 << CHUNK_SHIFT;
const NIL: u32 = u32::MAX;

/// An index slot's id carries, in its top two bits, which of its entry's tuples it was filed
/// under: the entry's own key (matching both directions), or one of the two tuples address
/// translation adds (netfilter hashes a connection's original and reply tuples the same way).
pub(crate) const FORM_SHIFT: u32 = 30;
pub(crate) const ID_MASK: u32 = (1 << FORM_SHIFT) - 1;
pub(crate) const FORM_KEY: u32 = 0;
/// The reply direction as replies arrive: addressed to the translated source.
pub(crate) const FORM_REPLY: u32 = 1;
/// The original direction as it arrives: addressed to the untranslated destination.
pub(crate) const FORM_ORIGINAL: u32 = 2;
/// The most entries the table can hold: ids must leave the form bits free.
pub(crate) const MAX_ENTRIES: u32 = ID_MASK;

const TAG_EMPTY: u32 = 0;
const TAG_TOMB: u32 = 1;
const SLOTS: usize = 8;

/// One direction's TCP window state (van Rooij): `end` is the highest sequence number sent
/// plus length, `maxend` the highest ack+window the peer allowed, `maxwin` the largest window.
/// For UDP, `peer[0].end` holds the second at which a replied flow counts as a stream.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct Peer {
    pub end: u32,
    pub maxend: u32,
    pub maxwin: u32,
}

/// A tracked connection. 104 bytes; see the module docs for why it is this small.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct Entry {
    /// The original-direction tuple. For ICMP queries `sport` is the identifier and `dport`
    /// the query class; `family` 0 marks a free slot.
    pub key: Key,
    /// TCP state (`tcp::State` as u8); unused for other protocols.
    pub state: u8,
    /// `STATUS_*` bits.
    pub status: u8,
    /// Whole second (of the caller's clock) at which the entry expires; for a free entry, the
    /// next free id.
    pub expires: u32,
    /// TCP window scale per direction (0 when scaling is off).
    pub scale: [u8; 2],
    /// `PEER_*` bits per direction.
    pub pflags: [u8; 2],
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub peer: [Peer; 2],
}

pub(crate) const STATUS_SEEN_REPLY: u8 = 1;
pub(crate) const STATUS_ASSURED: u8 = 2;
/// Window checks off for this connection.
pub(crate) const STATUS_LIBERAL: u8 = 4;
/// The connection is translated: its [`NatExt`] is valid.
pub(crate) const STATUS_NAT: u8 = 8;
/// A SYN was ignored on this connection and may be in the table's [`IgnoredSyn`] memo.
pub(crate) const STATUS_SYN_IGNORED: u8 = 16;
/// The policy counts this connection against its source: report it when it goes.
pub(crate) const STATUS_COUNTED: u8 = 32;

/// An original-direction SYN that tracking ignored on a live connection (netfilter's
/// `last_seq`/`last_end`/`last_win`/`last_wscale`/`last_flags`), kept so that a SYN/ACK
/// acknowledging it can resynchronise the entry. These are not in [`Entry`] (which has no
/// room for them and whose size the hot path depends on) but in a small direct-mapped memo
/// beside the table: a SYN ignored on another entry with the same slot overwrites it, and
/// then that SYN/ACK is ignored as it would have been without the memo.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct IgnoredSyn {
    /// The entry the SYN was ignored on.
    pub id: u32,
    /// The SYN's sequence number plus length: what a SYN/ACK for it acknowledges.
    pub end: u32,
    /// The SYN's window (never scaled).
    pub win: u16,
    /// The SYN's window scale option, capped at 14 (0 without the option).
    pub scale: u8,
    /// `PEER_WSCALE` and `PEER_SACK_PERM`, as the SYN offered them.
    pub flags: u8,
}

/// Slots in the ignored-SYN memo.
const SYN_MEMO: usize = 1024;

/// Address translation of one connection, kept beside its entry (only translated
/// connections pay for it). The entry's key is the connection as tracking sees it: after
/// destination NAT, before source NAT. Original packets arrive addressed to `dnat` and leave
/// from `snat`; replies arrive addressed to `snat` and leave from `dnat`. 44 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NatExt {
    /// Per direction (original, reply), where the packet leaves from: `snat` and `dnat`,
    /// as set. Once `fill_rows` has run on an IPv4 connection (`NAT_ROWS`), each row is
    /// instead the direction's whole rewrite, in the packet's own terms: source address,
    /// destination address, source port and destination port as the packet leaves with
    /// them (bytes 12 to 24 of its IPv4 header, so a rewrite copies them as they are), then
    /// what the rewrite adds to the IPv4 header checksum and to the transport checksum
    /// (RFC 1624's `~m + m'` over the changed words, folded; big-endian, like the fields
    /// they are added to, so they are added as they lie). Every packet of a direction
    /// changes the same fields from the same values. The row still begins with `snat` (or
    /// `dnat`) when it is translated: the accessors read it from there.
    rows: [[u8; 16]; 2],
    pub snat_port: u16,
    pub dnat_port: u16,
    /// `NAT_*` bits.
    pub flags: u8,
    /// With `NAT_SEQ`: what the reply side's sequence numbers are ahead of what the original
    /// side knows them as (a SYN proxy answered the original side's SYN with its own initial
    /// sequence number): original packets' acknowledgments are raised by it, replies'
    /// sequence numbers lowered.
    pub seq_delta: u32,
}

pub(crate) const NAT_SRC: u8 = 1;
pub(crate) const NAT_DST: u8 = 2;
/// The connection's release is reported (see `NatReleased`).
pub(crate) const NAT_REPORT: u8 = 4;
/// The source mapping is endpoint-independent.
pub(crate) const NAT_EIM: u8 = 8;
/// Sequence numbers are translated (`seq_delta`).
pub(crate) const NAT_SEQ: u8 = 16;
/// `rows` hold an IPv4 connection's rewrites (see `NatExt::rows`).
pub(crate) const NAT_ROWS: u8 = 32;

impl NatExt {
    pub(crate) const NONE: NatExt = NatExt {
        rows: [[0; 16]; 2],
        snat_port: 0,
        dnat_port: 0,
        flags: 0,
        seq_delta: 0,
    };

    /// Row `i`'s address: all of it, or with `NAT_ROWS` its IPv4 address; zero when that
    /// side is not translated.
    #[inline(always)]
    fn addr(&self, i: usize, flag: u8) -> Addr {
        let Some(r) = self.rows.get(i) else {
            return [0; 16];
        };
        if self.flags & flag == 0 {
            [0; 16]
        } else if self.flags & NAT_ROWS != 0 {
            // Built whole (see `wire::v4_addr`), not four bytes copied over zeros: the
            // lookups compare it in 16-byte loads.
            crate::wire::v4_addr(u32::from_ne_bytes([r[0], r[1], r[2], r[3]]))
        } else {
            *r
        }
    }

    /// The translated source (zero without `NAT_SRC`).
    #[inline(always)]
    pub(crate) fn snat(&self) -> Addr {
        self.addr(0, NAT_SRC)
    }

    /// The untranslated destination (zero without `NAT_DST`).
    #[inline(always)]
    pub(crate) fn dnat(&self) -> Addr {
        self.addr(1, NAT_DST)
    }

    /// Sets the translated source; `flags` says whether it is in force.
    pub(crate) fn set_snat(&mut self, a: Addr, port: u16) {
        self.rows[0] = a;
        self.snat_port = port;
    }

    /// Sets the untranslated destination; `flags` says whether it is in force.
    pub(crate) fn set_dnat(&mut self, a: Addr, port: u16) {
        self.rows[1] = a;
        self.dnat_port = port;
    }

    /// With `NAT_ROWS`, direction `dir`'s rewrite (see `NatExt::rows`).
    #[inline(always)]
    pub(crate) fn row(&self, dir: usize) -> Option<&[u8; 16]> {
        if self.flags & NAT_ROWS == 0 {
            return None;
        }
        self.rows.get(dir & 1)
    }

    /// Direction `dir`'s checksum sums (zero without `NAT_ROWS`).
    pub(crate) fn sums(&self, dir: usize) -> [u16; 2] {
        self.row(dir).map_or([0; 2], row_sums)
    }

    /// The original direction as it arrives (before destination NAT).
    pub(crate) fn arrive_original(&self, k: &Key) -> Key {
        if self.flags & NAT_DST == 0 {
            return *k;
        }
        Key {
            dst: self.dnat(),
            dport: self.dnat_port,
            ..*k
        }
    }

    /// The reply direction as it arrives (addressed to the translated source).
    pub(crate) fn arrive_reply(&self, k: &Key) -> Key {
        let (dst, dport) = if self.flags & NAT_SRC != 0 {
            (self.snat(), self.snat_port)
        } else {
            (k.src, k.sport)
        };
        Key {
            src: k.dst,
            sport: k.dport,
            dst,
            dport,
            ..*k
        }
    }

    /// For an IPv4 connection tracked as `k`, replaces `rows` with each direction's
    /// rewrite, from the tuple its packets arrive with to the one they leave with (see
    /// `NatExt::rows`). Runs once per translated connection, in `Table::set_nat`; IPv6
    /// keeps its addresses.
    pub(crate) fn fill_rows(&mut self, k: &Key) {
        /// An IPv4 address as a number, and the sum of its two 16-bit words.
        fn v4(a: &Addr) -> (u32, u64) {
            let x = u32::from_be_bytes([a[0], a[1], a[2], a[3]]);
            (x, u64::from(x >> 16) + u64::from(x & 0xffff))
        }
        /// A row: the four fields as the packet leaves with them, then the two sums.
        fn row(src: u32, dst: u32, sport: u16, dport: u16, sums: [u16; 2]) -> [u8; 16] {
            let mut r = [0; 16];
            r[..4].copy_from_slice(&src.to_be_bytes());
            r[4..8].copy_from_slice(&dst.to_be_bytes());
            r[8..10].copy_from_slice(&sport.to_be_bytes());
            r[10..12].copy_from_slice(&dport.to_be_bytes());
            // Big-endian, as the checksum fields they are added to: see `row_sums_wire`.
            r[12..14].copy_from_slice(&sums[0].to_be_bytes());
            r[14..16].copy_from_slice(&sums[1].to_be_bytes());
            r
        }
        if k.family != 4 {
            return;
        }
        let (src, s) = v4(&k.src);
        let (dst, d) = v4(&k.dst);
        // The translated source and the untranslated destination. Until now each row holds
        // its side's whole address (`set_snat`, `set_dnat`).
        let ((sa, a), sp) = if self.flags & NAT_SRC != 0 {
            (v4(&self.rows[0]), self.snat_port)
        } else {
            ((src, s), k.sport)
        };
        let ((da, b), dp) = if self.flags & NAT_DST != 0 {
            (v4(&self.rows[1]), self.dnat_port)
        } else {
            ((dst, d), k.dport)
        };
        // Original packets arrive as k.src -> (da, dp) and leave as (sa, sp) -> k.dst;
        // replies arrive as k.dst -> (sa, sp) and leave as (da, dp) -> k.src. RFC 1624's
        // `~m + m'` is summed over every word, changed or not: an unchanged word adds 0xffff,
        // which is zero to a one's-complement sum, so the sums agree (modulo 0xffff) with
        // those over the changed words alone. Only a part where nothing changed must give 0
        // (nothing to add) rather than 0xffff. The constants keep each total above zero. A
        // reply undoes what its original did, so its totals are the originals' negated:
        // the constant less the original's total.
        let ip = 4 * 0xffff + a + d - s - b;
        let (ks, kd) = (u64::from(k.sport), u64::from(k.dport));
        let (ts, td) = (u64::from(sp), u64::from(dp));
        let ports = 2 * 0xffff + ts + kd - ks - td;
        let ip_same = sa == src && da == dst;
        let ports_same = sp == k.sport && dp == k.dport;
        // Every total is below 2^20, so two folding steps leave 16 bits.
        let fold = |t: u64| {
            let t = (t & 0xffff) + (t >> 16);
            #[allow(clippy::cast_possible_truncation)]
            let f = ((t & 0xffff) + (t >> 16)) as u16;
            f
        };
        let sums = |ip: u64, l4: u64| {
            [
                if ip_same { 0 } else { fold(ip) },
                if ip_same && ports_same { 0 } else { fold(l4) },
            ]
        };
        let out = sums(ip, ip + ports);
        let back = sums(8 * 0xffff - ip, 12 * 0xffff - ip - ports);
        // Each direction as it leaves: the original from the translated source to the
        // tracked destination, the reply from the untranslated destination to the tracked
        // source.
        self.rows = [
            row(sa, dst, sp, k.dport, out),
            row(da, src, dp, k.sport, back),
        ];
        self.flags |= NAT_ROWS;
    }

    /// Whether the entry's own key is filed too: not when both ends are translated (NAT
    /// reflection), where no packet ever carries it and two connections may share it.
    pub(crate) fn keeps_key_slot(&self) -> bool {
        self.flags & (NAT_SRC | NAT_DST) != NAT_SRC | NAT_DST
    }
}

/// What a row (see `NatExt::rows`) adds to the IPv4 header checksum and to the transport
/// checksum.
#[inline(always)]
pub(crate) fn row_sums(r: &[u8; 16]) -> [u16; 2] {
    [
        u16::from_be_bytes([r[12], r[13]]),
        u16::from_be_bytes([r[14], r[15]]),
    ]
}

/// [`row_sums`] as they lie in the row, in network byte order, for
/// `checksum::add_folded_wire_at`.
#[inline(always)]
pub(crate) fn row_sums_wire(r: &[u8; 16]) -> [[u8; 2]; 2] {
    [[r[12], r[13]], [r[14], r[15]]]
}

/// A source-translated connection that asked to be reported has left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatReleased {
    pub proto: u8,
    /// The inside endpoint and the outside address and port it was mapped to.
    pub inside: (core::net::IpAddr, u16),
    pub outside: (core::net::IpAddr, u16),
    pub endpoint_independent: bool,
}

/// What a lookup found: the entry, the packet's direction in it, and the form of the tuple
/// that matched (`FORM_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub id: u32,
    pub dir: usize,
    pub form: u32,
}

pub(crate) const PEER_WSCALE: u8 = 1;
pub(crate) const PEER_SACK_PERM: u8 = 2;
/// Picked up mid-stream: window checks relaxed until this side's window is known.
pub(crate) const PEER_LIBERAL: u8 = 4;
/// This side sent the first FIN.
pub(crate) const PEER_CLOSE_INIT: u8 = 8;
pub(crate) const PEER_DATA_UNACK: u8 = 16;

const _: () = assert!(core::mem::size_of::<Entry>() == 104);

impl Entry {
    const FREE: Entry = Entry {
        key: Key::EMPTY,
        state: 0,
        status: 0,
        expires: NIL,
        scale: [0; 2],
        pflags: [0; 2],
        packets: [0; 2],
        bytes: [0; 2],
        peer: [Peer {
            end: 0,
            maxend: 0,
            maxwin: 0,
        }; 2],
    };

    pub(crate) fn new(key: &Key) -> Entry {
        Entry {
            key: *key,
            ..Entry::FREE
        }
    }

    pub(crate) fn is_free(&self) -> bool {
        self.key.family == 0
    }

    /// Which direction a packet with this tuple travels, if it belongs here.
    #[inline(always)]
    pub(crate) fn direction_of(&self, k: &Key) -> Option<usize> {
        let e = &self.key;
        if e.proto != k.proto || e.family != k.family {
            return None;
        }
        if e.sport == k.sport && e.dport == k.dport && e.src == k.src && e.dst == k.dst {
            Some(0)
        } else if e.sport == k.dport && e.dport == k.sport && e.src == k.dst && e.dst == k.src {
            Some(1)
        } else {
            None
        }
    }

    pub(crate) fn expired(&self, now_s: u32) -> bool {
        self.expires <= now_s
    }
}

#[derive(Clone)]
pub(crate) struct Hashing {
    state: ahash::RandomState,
    /// The IPv4 hash's keys (see [`Hashing::hash_v4`]).
    v4: [u64; 4],
}

/// The high and low halves of the full 128-bit product, folded together.
#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    #[allow(clippy::cast_possible_truncation)]
    let (hi, lo) = ((p >> 64) as u64, p as u64);
    hi ^ lo
}

impl Hashing {
    pub(crate) fn new(key: [u64; 4]) -> Hashing {
        // The IPv4 keys are derived from the secret rather than equal to ahash's seeds, and the
        // final multiplier is odd so that it loses no bits.
        let mix = |i: usize, k: u64| {
            folded_multiply(
                k ^ 0x243f_6a88_85a3_08d3,
                0x9e37_79b9_7f4a_7c15 + i as u64 * 2,
            )
        };
        Hashing {
            state: ahash::RandomState::with_seeds(key[0], key[1], key[2], key[3]),
            v4: [
                mix(0, key[0]),
                mix(1, key[1]),
                mix(2, key[2]),
                mix(3, key[3]) | 1,
            ],
        }
    }

    /// The same value for a tuple and its reverse.
    #[inline(always)]
    pub(crate) fn hash(&self, k: &Key) -> u64 {
        if k.family == 4 {
            return self.hash_v4(k);
        }
        // Big-endian integers order like the byte arrays, without a memcmp call.
        let (s, d) = (u128::from_be_bytes(k.src), u128::from_be_bytes(k.dst));
        let (a, ap, b, bp) = if (s, k.sport) <= (d, k.dport) {
            (&k.src, k.sport, &k.dst, k.dport)
        } else {
            (&k.dst, k.dport, &k.src, k.sport)
        };
        let mut h = self.state.build_hasher();
        h.write_u128(u128::from_ne_bytes(*a));
        h.write_u128(u128::from_ne_bytes(*b));
        h.write_u64(
            u64::from(ap)
                | u64::from(bp) << 16
                | u64::from(k.proto) << 32
                | u64::from(k.family) << 40,
        );
        h.finish()
    }

    /// An IPv4 tuple fits in two 64-bit words (each endpoint's address and port, plus the
    /// protocol), so it is hashed as one block the way ahash's portable path hashes each
    /// 128-bit block (a folded multiply of the two words, each XORed with a secret key)
    /// and finished with a second folded multiply by a secret: two multiplies where the
    /// general path hashes three blocks and finishes (about 22 instructions per packet
    /// fewer on the synthetic benchmark). Without the keys nobody can work out which tuples
    /// share a bucket.
    #[inline(always)]
    fn hash_v4(&self, k: &Key) -> u64 {
        let s = u32::from_be_bytes([k.src[0], k.src[1], k.src[2], k.src[3]]);
        let d = u32::from_be_bytes([k.dst[0], k.dst[1], k.dst[2], k.dst[3]]);
        let (a, ap, b, bp) = if (s, k.sport) <= (d, k.dport) {
            (s, k.sport, d, k.dport)
        } else {
            (d, k.dport, s, k.sport)
        };
        let w0 = u64::from(a) << 32 | u64::from(ap) << 16 | u64::from(k.proto);
        let w1 = u64::from(b) << 32 | u64::from(bp) << 16;
        let [k0, k1, k2, k3] = self.v4;
        let m = folded_multiply(w0 ^ k0, w1 ^ k1);
        folded_multiply(m ^ k2, k3).rotate_left((m & 63) as u32)
    }
}

trait BuildHasherExt {
    fn build_hasher(&self) -> ahash::AHasher;
}

impl BuildHasherExt for ahash::RandomState {
    #[inline(always)]
    fn build_hasher(&self) -> ahash::AHasher {
        core::hash::BuildHasher::build_hasher(self)
    }
}

/// Buckets for an index of `want` live slots at 2/3 load (never fewer than 16).
fn buckets_for(want: usize) -> usize {
    (want * 3 / 2).max(SLOTS * 16).div_ceil(SLOTS)
}

#[inline(always)]
fn tag_of(hash: u64) -> u32 {
    // The high half; values 0 and 1 are reserved for empty and deleted slots.
    #[allow(clippy::cast_possible_truncation)]
    let t = (hash >> 32) as u32;
    t.max(2)
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    tags: [u32; SLOTS],
    ids: [u32; SLOTS],
}

impl Bucket {
    /// Bit `i` set where slot `i`'s tag is `tag`: all eight compared at once (the loop
    /// compiles to one vector compare and a mask extraction).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn matches(&self, tag: u32) -> u32 {
        use core::arch::x86_64::{
            __m128i, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_loadu_si128, _mm_movemask_ps,
            _mm_set1_epi32,
        };
        let p = self.tags.as_ptr().cast::<__m128i>();
        // SAFETY: SSE2 is part of the x86_64 baseline. `tags` is 32 bytes, so both unaligned
        // 16-byte loads (at `p` and `p + 1`) stay inside it.
        let m = unsafe {
            let t = _mm_set1_epi32(tag.cast_signed());
            let lo = _mm_cmpeq_epi32(_mm_loadu_si128(p), t);
            let hi = _mm_cmpeq_epi32(_mm_loadu_si128(p.add(1)), t);
            _mm_movemask_ps(_mm_castsi128_ps(lo)) | _mm_movemask_ps(_mm_castsi128_ps(hi)) << 4
        };
        m.cast_unsigned()
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    fn matches(&self, tag: u32) -> u32 {
        let mut m = 0u32;
        for (i, &t) in self.tags.iter().enumerate() {
            m |= u32::from(t == tag) << i;
        }
        m
    }

    /// The id in slot `i` (taken modulo the slot count, so never out of bounds).
    #[inline(always)]
    fn id(&self, i: u32) -> u32 {
        self.ids[i as usize % SLOTS]
    }
}

const EMPTY_BUCKET: Bucket = Bucket {
    tags: [TAG_EMPTY; SLOTS],
    ids: [NIL; SLOTS],
};

/// A chunk of [`CHUNK`] records. Fixed-size, so that an offset masked below `CHUNK` needs no
/// bounds check on the per-packet path.
type Chunk<T> = Box<[T; CHUNK]>;

/// Where id `id` lives: its chunk, and its offset in the chunk (below [`CHUNK`], so indexing
/// a [`Chunk`] with it needs no bounds check). Entries, creation times and translation
/// records share the layout.
#[inline(always)]
fn split(id: u32) -> (usize, usize) {
    ((id >> CHUNK_SHIFT) as usize, id as usize & (CHUNK - 1))
}

/// A chunk with every record `fill`, built on the heap (an array this size would overflow
/// the stack on its way there).
fn chunk<T: Clone>(fill: T) -> Chunk<T> {
    match vec![fill; CHUNK].into_boxed_slice().try_into() {
        Ok(c) => c,
        Err(_) => unreachable!("a vector of CHUNK records converts to a chunk"),
    }
}

pub(crate) struct Table {
    chunks: Vec<Chunk<Entry>>,
    free: u32,
    /// Ids below this have been handed out at least once.
    high: u32,
    len: usize,
    buckets: Vec<Bucket>,
    /// Occupied plus deleted slots; the index is rebuilt when this passes 7/8 of capacity.
    used: usize,
    /// Occupied slots: one per entry, plus those address translation adds.
    filed: usize,
    /// Slots set aside by [`Table::reserve_room`]: the index is never rebuilt smaller.
    reserved_slots: usize,
    sweep: u32,
    /// Per chunk, a second no live entry in it expires before (a lower bound, not the
    /// least): while it is in the future the sweep passes the chunk by without reading it.
    floors: Vec<u32>,
    /// The chunk the sweep is reading from its first id, if any, with what its floor will be.
    scan: Scan,
    /// A floor for a chunk allocated now: the latest `now + margin` the sweep was given.
    fresh_floor: u32,
    hashing: Hashing,
    /// The whole second each entry was created at (of the caller's clock), in chunks
    /// parallel to `chunks`: only listings read it, so it stays off the entries' cache
    /// lines.
    born: Vec<Chunk<u32>>,
    /// Translation records, in chunks parallel to `chunks`; allocated on first use.
    nat: Vec<Chunk<NatExt>>,
    nat_live: usize,
    /// Endpoint-independent mappings released since the caller last collected them.
    released: Vec<NatReleased>,
    released_lost: u64,
    release_cap: usize,
    /// Original sources of counted connections that have left the table.
    departed: Vec<core::net::IpAddr>,
    /// SYNs ignored on live connections, by entry id modulo [`SYN_MEMO`]; allocated on first
    /// use.
    syns: Vec<IgnoredSyn>,
}

/// The sweep's progress through one chunk (see [`Table::sweep_run`]).
#[derive(Clone, Copy)]
struct Scan {
    /// The chunk, or [`NIL`] when no chunk is being read from its start.
    chunk: u32,
    /// `now + margin` when its reading began: no expiry written since is earlier.
    cap: u32,
    /// The least expiry of the live entries read so far.
    least: u32,
}

impl Scan {
    const NONE: Scan = Scan {
        chunk: NIL,
        cap: 0,
        least: u32::MAX,
    };
}

impl Table {
    pub(crate) fn new(hashing: Hashing) -> Table {
        Table {
            born: Vec::new(),
            hashing,
            chunks: Vec::new(),
            free: NIL,
            high: 0,
            len: 0,
            buckets: vec![EMPTY_BUCKET; 16],
            used: 0,
            filed: 0,
            reserved_slots: 0,
            sweep: 0,
            floors: Vec::new(),
            scan: Scan::NONE,
            fresh_floor: 0,
            nat: Vec::new(),
            nat_live: 0,
            released: Vec::new(),
            released_lost: 0,
            departed: Vec::new(),
            release_cap: 1 << 20,
            syns: Vec::new(),
        }
    }

    /// Translated connections live.
    pub(crate) fn nat_len(&self) -> usize {
        self.nat_live
    }

    /// Moves the released endpoint-independent mappings into `out`.
    pub(crate) fn take_released(&mut self, out: &mut Vec<NatReleased>) {
        out.append(&mut self.released);
    }

    /// Releases dropped because nobody collected them.
    pub(crate) fn released_lost(&self) -> u64 {
        self.released_lost
    }

    pub(crate) fn set_release_cap(&mut self, cap: usize) {
        self.release_cap = cap;
    }

    #[inline(always)]
    fn prefetch_ext(&self, id: u32) {
        let (c, o) = split(id);
        if let Some(chunk) = self.nat.get(c) {
            // Records are not line-aligned: most straddle two lines.
            let p = chunk.as_ptr().wrapping_add(o).cast::<u8>();
            prefetch_read(p);
            prefetch_read(p.wrapping_add(core::mem::size_of::<NatExt>() - 1));
        }
    }

    /// Gives translated entry `id` a sequence offset (see `NatExt::seq_delta`).
    pub(crate) fn set_seq_delta(&mut self, id: u32, delta: u32) -> bool {
        if self.get(id).status & STATUS_NAT == 0 {
            return false;
        }
        match self.ext_mut(id) {
            Some(x) => {
                x.seq_delta = delta;
                x.flags |= NAT_SEQ;
                true
            }
            None => false,
        }
    }

    /// Entry `id`'s translation record, if its chunk of records is allocated.
    #[inline]
    fn ext_mut(&mut self, id: u32) -> Option<&mut NatExt> {
        let (c, o) = split(id);
        self.nat.get_mut(c).map(|chunk| &mut chunk[o])
    }

    /// The translation of entry `id` (`NatExt::NONE` if it has none).
    #[inline]
    pub(crate) fn ext(&self, id: u32) -> &NatExt {
        let (c, o) = split(id);
        self.nat.get(c).map_or(&NatExt::NONE, |chunk| &chunk[o])
    }

    #[inline(always)]
    pub(crate) fn hash(&self, key: &Key) -> u64 {
        self.hashing.hash(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes held by entries and index.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.chunks.len() * CHUNK * core::mem::size_of::<Entry>()
            + self.buckets.len() * core::mem::size_of::<Bucket>()
            + self.chunks.capacity() * core::mem::size_of::<Chunk<Entry>>()
            + self.born.len() * CHUNK * core::mem::size_of::<u32>()
            + self.nat.len() * CHUNK * core::mem::size_of::<NatExt>()
            + self.syns.len() * core::mem::size_of::<IgnoredSyn>()
            + self.floors.capacity() * core::mem::size_of::<u32>()
    }

    /// Records the second entry `id` was created at.
    pub(crate) fn set_born(&mut self, id: u32, second: u32) {
        let (c, i) = (id as usize / CHUNK, id as usize % CHUNK);
        if let Some(b) = self.born.get_mut(c).and_then(|c| c.get_mut(i)) {
            *b = second;
        }
    }

    /// The second entry `id` was created at.
    pub(crate) fn born(&self, id: u32) -> u32 {
        let (c, i) = (id as usize / CHUNK, id as usize % CHUNK);
        self.born
            .get(c)
            .and_then(|c| c.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Remembers a SYN ignored on entry `syn.id`, replacing any earlier one in its slot.
    pub(crate) fn remember_syn(&mut self, syn: IgnoredSyn) {
        if self.syns.is_empty() {
            self.syns = vec![IgnoredSyn::default(); SYN_MEMO];
        }
        if let Some(slot) = self.syns.get_mut(syn.id as usize % SYN_MEMO) {
            *slot = syn;
            self.get_mut(syn.id).status |= STATUS_SYN_IGNORED;
        }
    }

    /// The SYN last ignored on entry `id`, if it is still remembered. A freed entry loses its
    /// status bits, so a later entry with the same id never sees an older one's SYN.
    pub(crate) fn ignored_syn(&self, id: u32) -> Option<IgnoredSyn> {
        if self.get(id).status & STATUS_SYN_IGNORED == 0 {
            return None;
        }
        self.syns
            .get(id as usize % SYN_MEMO)
            .filter(|m| m.id == id)
            .copied()
    }

    /// Forgets the SYN ignored on entry `id`.
    pub(crate) fn forget_syn(&mut self, id: u32) {
        self.get_mut(id).status &= !STATUS_SYN_IGNORED;
    }

    #[inline(always)]
    fn bucket_of(&self, hash: u64) -> usize {
        self.bucket_of_tag(tag_of(hash))
    }

    /// The home bucket comes from the stored tag alone, so rebuilding the index never has to
    /// read an entry back to re-hash it. Multiply-shift maps the tag onto any bucket count.
    #[inline(always)]
    fn bucket_of_tag(&self, tag: u32) -> usize {
        #[allow(clippy::cast_possible_truncation)]
        let b = ((u64::from(tag) * self.buckets.len() as u64) >> 32) as usize;
        b
    }

    /// Asks the CPU to start loading the bucket a lookup for `hash` will read.
    #[inline(always)]
    pub(crate) fn prefetch(&self, hash: u64) {
        let b = self.bucket_of(hash);
        if let Some(bucket) = self.buckets.get(b) {
            prefetch_read(bucket as *const Bucket as *const u8);
        }
    }

    /// Prefetches the entry the first tag match in `hash`'s bucket points to, and gives that
    /// index slot (its id and form), for [`Table::find_from`] to start from.
    #[inline(always)]
    pub(crate) fn prefetch_entry(&self, hash: u64) -> Option<u32> {
        let tag = tag_of(hash);
        let bucket = self.buckets.get(self.bucket_of(hash))?;
        let m = bucket.matches(tag);
        if m == 0 {
            return None;
        }
        let raw = bucket.id(m.trailing_zeros());
        let e = self.get_opt(raw & ID_MASK)?;
        // Entries are not line-aligned: one can straddle three lines.
        let p = e as *const Entry as *const u8;
        prefetch_read(p);
        prefetch_read(p.wrapping_add(64));
        prefetch_read(p.wrapping_add(core::mem::size_of::<Entry>() - 1));
        if !self.nat.is_empty() {
            // A translated connection's packet reads its record too.
            self.prefetch_ext(raw & ID_MASK);
        }
        Some(raw)
    }

    /// [`Table::find`] (not for a quoted packet, entry prefetched) given the index slot
    /// [`Table::prefetch_entry`] found for `hash` some packets before. The slot is only a
    /// guess: the entry it names is the answer when it holds `key` in the slot's form, and
    /// that form is one the entry is filed under. As a tuple names at most one entry, that
    /// is the entry a search of the bucket finds. Otherwise (the entry went, its id was
    /// taken again, another tuple's tag matched first) the bucket is searched.
    #[inline(always)]
    pub(crate) fn find_from(&self, hash: u64, key: &Key, slot: Option<u32>) -> Option<Found> {
        if let Some(raw) = slot {
            let (id, form) = (raw & ID_MASK, raw >> FORM_SHIFT);
            if let Some(e) = self.get_opt(id) {
                // Only in a form the entry is filed under, as `nat_forms` files them.
                let dir = if e.status & STATUS_NAT == 0 {
                    (form == FORM_KEY).then(|| e.direction_of(key)).flatten()
                } else {
                    let x = self.ext(id);
                    match form {
                        FORM_KEY if x.keeps_key_slot() => e.direction_of(key),
                        FORM_REPLY if x.flags & NAT_SRC != 0 => {
                            form_direction(&e.key, x, form, key, false)
                        }
                        FORM_ORIGINAL if x.flags & NAT_DST != 0 => {
                            form_direction(&e.key, x, form, key, false)
                        }
                        _ => None,
                    }
                };
                if let Some(dir) = dir {
                    let f = Found { id, dir, form };
                    debug_assert_eq!(Some(f), self.find(hash, key, false, true));
                    return Some(f);
                }
            }
        }
        self.find(hash, key, false, true)
    }

    #[inline(always)]
    pub(crate) fn get(&self, id: u32) -> &Entry {
        let (c, o) = split(id);
        &self.chunks[c][o]
    }

    #[inline(always)]
    pub(crate) fn get_mut(&mut self, id: u32) -> &mut Entry {
        let (c, o) = split(id);
        &mut self.chunks[c][o]
    }

    pub(crate) fn get_opt(&self, id: u32) -> Option<&Entry> {
        let (c, o) = split(id);
        self.chunks.get(c).map(|chunk| &chunk[o])
    }

    /// Finds the entry for a packet tuple: its id, the packet's direction and the form that
    /// matched. A tuple filed by address translation matches only the way packets carry it,
    /// unless `quoted` (a packet quoted in an ICMP error, which may have left translated).
    /// `prefetched`: the caller requested the entry's lines ahead (`prefetch_entry`).
    #[inline(always)]
    pub(crate) fn find(
        &self,
        hash: u64,
        key: &Key,
        quoted: bool,
        prefetched: bool,
    ) -> Option<Found> {
        let tag = tag_of(hash);
        let n = self.buckets.len();
        let mut b = self.bucket_of(hash);
        for _ in 0..n {
            let bucket = &self.buckets[b];
            let mut m = bucket.matches(tag);
            while m != 0 {
                let i = m.trailing_zeros();
                let raw = bucket.id(i);
                let id = raw & ID_MASK;
                let form = raw >> FORM_SHIFT;
                if !prefetched && !self.nat.is_empty() {
                    // A translated entry's record is read right after the entry: start
                    // loading its line now, so the two misses overlap instead of queueing.
                    self.prefetch_ext(id);
                }
                let dir = if form == FORM_KEY {
                    self.get(id).direction_of(key)
                } else {
                    form_direction(&self.get(id).key, self.ext(id), form, key, quoted)
                };
                if let Some(dir) = dir {
                    return Some(Found { id, dir, form });
                }
                m &= m - 1;
            }
            if bucket.matches(TAG_EMPTY) != 0 {
                return None;
            }
            b += 1;
            if b == n {
                b = 0;
            }
        }
        None
    }

    /// Whether any connection is filed under `key` (either way round for an entry's own key).
    pub(crate) fn in_use(&self, key: &Key) -> bool {
        self.in_use_hashed(self.hash(key), key)
    }

    /// [`Table::in_use`] for a `key` whose hash is `hash`.
    #[inline(always)]
    pub(crate) fn in_use_hashed(&self, hash: u64, key: &Key) -> bool {
        self.find(hash, key, false, false).is_some()
    }

    /// Inserts a new entry; the caller has checked the key is absent and the limit.
    pub(crate) fn insert(&mut self, hash: u64, entry: Entry) -> u32 {
        self.insert_with(hash, |e| *e = entry)
    }

    /// [`Table::insert`] of the entry `init` writes into its slot (which holds a freed
    /// entry until then); `init` must give it the key `hash` is of.
    #[inline(always)]
    pub(crate) fn insert_with(&mut self, hash: u64, init: impl FnOnce(&mut Entry)) -> u32 {
        self.reserve(1);
        let id = self.alloc(init);
        self.place(hash, id);
        self.len += 1;
        id
    }

    /// Makes room in the index for `k` more slots.
    fn reserve(&mut self, k: usize) {
        if (self.used + k) * 8 > self.buckets.len() * SLOTS * 7 {
            self.rebuild(self.filed + k);
        }
    }

    fn place(&mut self, hash: u64, raw: u32) {
        self.filed += 1;
        self.place_tag(tag_of(hash), raw);
    }

    /// Takes the slot holding `raw` under `hash` out of the index.
    fn unplace(&mut self, hash: u64, raw: u32) {
        let tag = tag_of(hash);
        let n = self.buckets.len();
        let mut b = self.bucket_of(hash);
        for _ in 0..n {
            let bucket = &mut self.buckets[b];
            let mut m = bucket.matches(tag);
            while m != 0 {
                let i = m.trailing_zeros() as usize % SLOTS;
                if bucket.ids[i] == raw {
                    // A bucket that still has an empty slot has never been full since the
                    // last rebuild, so no probe ever continued past it: the slot can become
                    // empty again. Otherwise it must stay a tombstone so later probes go on.
                    if bucket.tags.contains(&TAG_EMPTY) {
                        bucket.tags[i] = TAG_EMPTY;
                        self.used -= 1;
                    } else {
                        bucket.tags[i] = TAG_TOMB;
                    }
                    bucket.ids[i] = NIL;
                    self.filed -= 1;
                    return;
                }
                m &= m - 1;
            }
            if bucket.matches(TAG_EMPTY) != 0 {
                return;
            }
            b += 1;
            if b == n {
                b = 0;
            }
        }
    }

    /// Gives entry `id` a translation: re-files it under `key` (the connection as tracking
    /// sees it from now on) and under the tuples its packets arrive with.
    pub(crate) fn set_nat(&mut self, id: u32, key: &Key, ext: &NatExt, reply_hash: Option<u64>) {
        self.reserve(3);
        let old = self.get(id).key;
        // Source NAT alone leaves the key as it is (only destination NAT changes it, and
        // a restored connection comes with its own): its slot stays.
        let keep = ext.keeps_key_slot() && (ext.flags & NAT_DST == 0 || old == *key);
        if !keep {
            self.unplace(self.hash(&old), id);
        }
        self.grow_nat(split(id).0 + 1);
        if let Some(slot) = self.ext_mut(id) {
            *slot = *ext;
            // Worked out in place: rows written here are read back whole, which a copy of
            // narrower stores just made would stall (README, Benchmark).
            slot.fill_rows(key);
        }
        let e = self.get_mut(id);
        e.key = *key;
        e.status |= STATUS_NAT;
        self.nat_live += 1;
        self.file_nat(id, key, ext, keep, reply_hash);
    }

    /// Files entry `id` under the tuples [`nat_forms`] lists (the key's slot only when it is
    /// not `filed` already), each placed as it is worked out rather than gathered first: the
    /// same three conditions spelled out, because walking `nat_forms` (or a per-form helper
    /// returning an optional key) costs about 110 instructions more per translated
    /// connection. `Table::check` (`Engine::check_table`, run by the NAT tests) finds every
    /// entry under each `nat_forms` tuple, so the two cannot drift apart unnoticed.
    /// `reply_hash`, when given, is the hash of the reply tuple, worked out already when its
    /// port was checked free.
    fn file_nat(&mut self, id: u32, key: &Key, x: &NatExt, filed: bool, reply_hash: Option<u64>) {
        if x.keeps_key_slot() && !filed {
            self.place(self.hash(key), id | FORM_KEY << FORM_SHIFT);
        }
        if x.flags & NAT_DST != 0 {
            let k = x.arrive_original(key);
            self.place(self.hash(&k), id | FORM_ORIGINAL << FORM_SHIFT);
        }
        if x.flags & NAT_SRC != 0 {
            let h = reply_hash.unwrap_or_else(|| self.hash(&x.arrive_reply(key)));
            self.place(h, id | FORM_REPLY << FORM_SHIFT);
        }
    }

    fn place_tag(&mut self, tag: u32, id: u32) {
        let n = self.buckets.len();
        let mut b = self.bucket_of_tag(tag);
        loop {
            let bucket = &mut self.buckets[b];
            let m = bucket.matches(TAG_EMPTY) | bucket.matches(TAG_TOMB);
            if m != 0 {
                let i = m.trailing_zeros() as usize % SLOTS;
                if bucket.tags[i] == TAG_EMPTY {
                    self.used += 1;
                }
                bucket.tags[i] = tag;
                bucket.ids[i] = id;
                return;
            }
            b += 1;
            if b == n {
                b = 0;
            }
        }
    }

    #[inline(always)]
    fn alloc(&mut self, init: impl FnOnce(&mut Entry)) -> u32 {
        if self.free != NIL {
            let id = self.free;
            let e = self.get_mut(id);
            let next = e.expires;
            init(e);
            self.free = next;
            return id;
        }
        if self.high as usize >= self.chunks.len() * CHUNK {
            self.push_chunk();
        }
        let id = self.high;
        self.high += 1;
        init(self.get_mut(id));
        id
    }

    /// Makes room for `entries` entries and `slots` index slots (`nat`: with translation
    /// records) now, so that growing to them later neither rebuilds the index nor allocates.
    /// The memory is written as it is allocated, so the system has backed it before the
    /// first packet needs it. Never shrinks anything.
    pub(crate) fn reserve_room(&mut self, entries: usize, slots: usize, nat: bool) {
        if slots > self.reserved_slots {
            self.reserved_slots = slots;
            if buckets_for(slots) > self.buckets.len() {
                self.rebuild(self.filed);
            }
        }
        while self.chunks.len() * CHUNK < entries {
            self.push_chunk();
        }
        if nat {
            self.grow_nat(self.chunks.len());
        }
    }

    /// Translation records for the first `chunks` chunks of ids.
    fn grow_nat(&mut self, chunks: usize) {
        while self.nat.len() < chunks {
            self.nat.push(chunk(NatExt::NONE));
        }
    }

    fn push_chunk(&mut self) {
        self.chunks.push(chunk(Entry::FREE));
        self.born.push(chunk(0));
        self.floors.push(self.fresh_floor);
    }

    /// Removes an entry and every index slot it is filed under.
    pub(crate) fn remove(&mut self, id: u32) {
        let e = *self.get(id);
        if e.status & STATUS_NAT == 0 {
            self.unplace(self.hash(&e.key), id);
        } else {
            self.remove_nat(id, &e.key);
        }
        if e.status & STATUS_COUNTED != 0 {
            self.depart(&e.key);
        }
        let free = self.free;
        let e = self.get_mut(id);
        *e = Entry::FREE;
        e.expires = free;
        self.free = id;
        self.len -= 1;
    }

    #[inline(never)]
    fn remove_nat(&mut self, id: u32, key: &Key) {
        let x = *self.ext(id);
        for (k, form) in nat_forms(key, &x).into_iter().flatten() {
            self.unplace(self.hash(&k), id | form << FORM_SHIFT);
        }
        if x.flags & NAT_SRC != 0 && x.flags & NAT_REPORT != 0 {
            self.report_release(key, &x);
        }
        if let Some(slot) = self.ext_mut(id) {
            *slot = NatExt::NONE;
        }
        self.nat_live -= 1;
    }

    #[inline(never)]
    fn depart(&mut self, key: &Key) {
        if self.departed.len() >= self.release_cap {
            self.released_lost += 1;
            return;
        }
        let family = if key.family == 6 {
            crate::wire::Family::V6
        } else {
            crate::wire::Family::V4
        };
        self.departed
            .push(crate::wire::addr_to_ip(family, &key.src));
    }

    /// Moves the sources of counted connections that have left into `out`.
    pub(crate) fn take_departed(&mut self, out: &mut Vec<core::net::IpAddr>) {
        out.append(&mut self.departed);
    }

    fn report_release(&mut self, key: &Key, x: &NatExt) {
        if self.released.len() >= self.release_cap {
            self.released_lost += 1;
            return;
        }
        let family = if key.family == 6 {
            crate::wire::Family::V6
        } else {
            crate::wire::Family::V4
        };
        self.released.push(NatReleased {
            proto: key.proto,
            inside: (crate::wire::addr_to_ip(family, &key.src), key.sport),
            outside: (crate::wire::addr_to_ip(family, &x.snat()), x.snat_port),
            endpoint_independent: x.flags & NAT_EIM != 0,
        });
    }

    /// Re-sizes the index for `want` live entries at 2/3 load and drops tombstones. Entries do
    /// not move, so ids stay valid.
    fn rebuild(&mut self, want: usize) {
        let nb = buckets_for(want.max(self.reserved_slots));
        let old = core::mem::replace(&mut self.buckets, vec![EMPTY_BUCKET; nb]);
        self.used = 0;
        for bucket in &old {
            for i in 0..SLOTS {
                if bucket.tags[i] >= 2 {
                    self.place_fresh(bucket.tags[i], bucket.ids[i]);
                }
            }
        }
    }

    /// [`Table::place_tag`] into an index that has had no removals since it was built: no
    /// deleted slots to reuse, so the first empty slot is the one. (One routine for both,
    /// with a flag for deleted slots, measured about 40 instructions more per connection.)
    #[inline(always)]
    fn place_fresh(&mut self, tag: u32, id: u32) {
        let n = self.buckets.len();
        let mut b = self.bucket_of_tag(tag);
        for _ in 0..n {
            if let Some(bucket) = self.buckets.get_mut(b) {
                let m = bucket.matches(TAG_EMPTY);
                if m != 0 {
                    let i = m.trailing_zeros() as usize % SLOTS;
                    bucket.tags[i] = tag;
                    bucket.ids[i] = id;
                    self.used += 1;
                    return;
                }
            }
            b += 1;
            if b == n {
                b = 0;
            }
        }
    }

    /// Checks the index against the entries: every live entry is found under each tuple it
    /// is filed under, and the counts agree. For tests and fuzzing (it visits everything).
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut slots = 0;
        let mut nat = 0;
        let mut live = 0;
        for (id, e) in self.iter() {
            live += 1;
            let floor = self.floors.get(split(id).0).copied();
            if floor.is_some_and(|f| e.expires < f) {
                return Err(format!(
                    "entry {id} expires at {}, before its chunk's floor {floor:?}",
                    e.expires
                ));
            }
            let forms = if e.status & STATUS_NAT == 0 {
                [Some((e.key, FORM_KEY)), None, None]
            } else {
                nat += 1;
                nat_forms(&e.key, self.ext(id))
            };
            let forms: Vec<(Key, u32)> = forms.into_iter().flatten().collect();
            for (k, form) in forms {
                slots += 1;
                let raw = id | form << FORM_SHIFT;
                let tag = tag_of(self.hash(&k));
                let filed = self
                    .buckets
                    .iter()
                    .any(|b| (0..SLOTS).any(|i| b.tags[i] == tag && b.ids[i] == raw));
                if !filed {
                    return Err(format!("entry {id} is not filed under form {form}"));
                }
                if self.find(self.hash(&k), &k, false, false).is_none() {
                    return Err(format!("entry {id} form {form} cannot be found"));
                }
            }
        }
        let occupied: usize = self
            .buckets
            .iter()
            .map(|b| b.tags.iter().filter(|&&t| t >= 2).count())
            .sum();
        if occupied != slots || slots != self.filed {
            return Err(format!(
                "{occupied} slots occupied, {slots} expected, {} counted",
                self.filed
            ));
        }
        if live != self.len || nat != self.nat_live {
            return Err(format!(
                "{live} live ({}), {nat} translated ({})",
                self.len, self.nat_live
            ));
        }
        Ok(())
    }

    /// Advances the sweep cursor by one id; returns it if that id is in use.
    pub(crate) fn sweep_next(&mut self) -> Option<u32> {
        if self.high == 0 {
            return None;
        }
        if self.sweep >= self.high {
            self.sweep = 0;
        }
        let id = self.sweep;
        self.sweep += 1;
        // The ids passed here are not folded into the chunk's floor.
        self.scan = Scan::NONE;
        (!self.get(id).is_free()).then_some(id)
    }

    /// The sweep's cheap first step, every [`SWEEP_RUN`] packets: wraps the cursor, and
    /// passes over the chunk it stands at the start of when that chunk's floor is still
    /// ahead of `now_s` (see [`Table::sweep_run`]). Returns whether it did; if not, the run
    /// is for [`Table::sweep_run`] to read.
    #[inline(always)]
    pub(crate) fn sweep_pass(&mut self, now_s: u32, margin: u32) -> bool {
        self.fresh_floor = now_s.saturating_add(margin);
        if self.sweep >= self.high {
            self.sweep = 0;
        }
        let start = self.sweep;
        if start & (CHUNK_IDS - 1) == 0
            && self
                .floors
                .get((start >> CHUNK_SHIFT) as usize)
                .is_some_and(|&f| f > now_s)
        {
            // The floor holds for ids handed out later too: they get expiries past it.
            self.sweep = start.saturating_add(CHUNK_IDS);
            return true;
        }
        self.high == 0
    }

    /// Reads up to [`SWEEP_RUN`] ids from the cursor on (never past the end of a chunk or of
    /// the ids handed out), after [`Table::sweep_pass`] declined to pass them over, and
    /// writes to `out` those whose entries are live and expired at `now_s`; returns how
    /// many. Reading a run of neighbouring entries at once costs a few instructions each,
    /// where one id per packet paid the cursor and chunk arithmetic every time.
    ///
    /// A chunk read from its first id to its last gets a floor: a second no live entry in it
    /// expires before. `margin` is the least timeout any entry can be given, so every expiry
    /// written after the reading began is at least `margin` past its start; the floor is the
    /// earlier of that and the least expiry read. Until `now_s` reaches it,
    /// [`Table::sweep_pass`] passes the chunk over without touching its entries.
    pub(crate) fn sweep_run(&mut self, now_s: u32, out: &mut [u32; SWEEP_RUN as usize]) -> usize {
        let start = self.sweep;
        let c = start >> CHUNK_SHIFT;
        let chunk_end = (c + 1) << CHUNK_SHIFT;
        if start & (CHUNK_IDS - 1) == 0 {
            self.scan = Scan {
                chunk: c,
                cap: self.fresh_floor,
                least: u32::MAX,
            };
        }
        let end = start
            .saturating_add(SWEEP_RUN)
            .min(self.high)
            .min(chunk_end);
        self.sweep = end;
        let next_read = end & (CHUNK_IDS - 1) != 0
            || self
                .floors
                .get((end >> CHUNK_SHIFT) as usize)
                .is_some_and(|&f| f <= now_s);
        if next_read {
            self.prefetch_run(end);
        }
        let o = start as usize & (CHUNK - 1);
        let Some(run) = self
            .chunks
            .get(c as usize)
            .and_then(|ch| ch.get(o..o + (end - start) as usize))
        else {
            return 0;
        };
        let mut n = 0;
        let mut least = self.scan.least;
        for (id, e) in (start..).zip(run) {
            if e.is_free() {
                continue;
            }
            if e.expired(now_s) {
                if let Some(slot) = out.get_mut(n) {
                    *slot = id;
                    n += 1;
                }
            } else {
                least = least.min(e.expires);
            }
        }
        if self.scan.chunk == c {
            self.scan.least = least;
            if end == chunk_end || end == self.high {
                // Ids from `high` on are handed out later, with expiries past `cap`.
                if let Some(f) = self.floors.get_mut(c as usize) {
                    *f = least.min(self.scan.cap);
                }
                self.scan = Scan::NONE;
            }
        }
        n
    }

    /// Entry `id` was given the expiry `expires` other than as `now` plus a timeout (a
    /// restored connection): lowers its chunk's floor to match.
    pub(crate) fn note_expiry(&mut self, id: u32, expires: u32) {
        let c = id >> CHUNK_SHIFT;
        if let Some(f) = self.floors.get_mut(c as usize) {
            *f = (*f).min(expires);
        }
        if self.scan.chunk == c {
            self.scan.least = self.scan.least.min(expires);
        }
    }

    /// Requests the lines of the run the sweep reads next, [`SWEEP_RUN`] packets from now.
    /// Once the entries outgrow the caches, the sweep's reads are misses of their own, which
    /// the packets' prefetches do not cover: at 1,000,000 connections they cost about 7% of
    /// the throughput, and this won back about half of it before chunks had floors. A chunk
    /// whose floor has passed is still read, so it still pays there.
    #[inline(always)]
    fn prefetch_run(&self, start: u32) {
        let o = start as usize & (CHUNK - 1);
        let Some(run) = self
            .chunks
            .get((start >> CHUNK_SHIFT) as usize)
            .and_then(|c| c.get(o..(o + SWEEP_RUN as usize).min(CHUNK)))
        else {
            return;
        };
        let p = run.as_ptr().cast::<u8>();
        let bytes = core::mem::size_of_val(run);
        let mut off = 0;
        while off < bytes {
            prefetch_read(p.wrapping_add(off));
            off += 64;
        }
        prefetch_read(p.wrapping_add(bytes.saturating_sub(1)));
    }

    /// Every occupied entry with its id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Entry)> + '_ {
        (0..self.high).filter_map(move |id| {
            let e = self.get(id);
            (!e.is_free()).then_some((id, e))
        })
    }

    /// Entry ids that share `hash`'s home bucket and the next few: candidates for early drop.
    pub(crate) fn neighbours(&self, hash: u64, buckets: usize, out: &mut Vec<u32>) {
        let n = self.buckets.len();
        let mut b = self.bucket_of(hash);
        for _ in 0..buckets.min(n) {
            let bucket = &self.buckets[b];
            for i in 0..SLOTS {
                if bucket.tags[i] >= 2 {
                    out.push(bucket.ids[i] & ID_MASK);
                }
            }
            b += 1;
            if b == n {
                b = 0;
            }
        }
    }
}

/// The tuples a translated connection tracked as `key` is filed under, each with its form:
/// its own key unless both ends are translated, the original direction as it arrives when
/// the destination is, the reply direction as it arrives when the source is.
pub(crate) fn nat_forms(key: &Key, x: &NatExt) -> [Option<(Key, u32)>; 3] {
    [
        x.keeps_key_slot().then_some((*key, FORM_KEY)),
        (x.flags & NAT_DST != 0).then(|| (x.arrive_original(key), FORM_ORIGINAL)),
        (x.flags & NAT_SRC != 0).then(|| (x.arrive_reply(key), FORM_REPLY)),
    ]
}

/// The direction of `key` against the tuple an entry with key `e` and translation `x` is
/// filed under in `form`: the original direction as it arrives (addressed to the
/// untranslated destination), or the reply direction as it arrives (addressed to the
/// translated source); with `quoted`, either way round.
#[inline(always)]
fn form_direction(e: &Key, x: &NatExt, form: u32, key: &Key, quoted: bool) -> Option<usize> {
    if e.proto != key.proto || e.family != key.family {
        return None;
    }
    // The filed tuple as the packet it is filed for carries it: the reply form is the
    // peer sending to the translated source, the original form the inside end sending
    // to the untranslated destination.
    let (from, to, dir) = if form == FORM_REPLY {
        ((&e.dst, e.dport), (&x.snat(), x.snat_port), 1)
    } else {
        ((&e.src, e.sport), (&x.dnat(), x.dnat_port), 0)
    };
    let same = |a: &Addr, b: &Addr| u128::from_ne_bytes(*a) == u128::from_ne_bytes(*b);
    if key.sport == from.1 && key.dport == to.1 && same(&key.src, from.0) && same(&key.dst, to.0) {
        Some(dir)
    } else if quoted
        && key.sport == to.1
        && key.dport == from.1
        && same(&key.src, to.0)
        && same(&key.dst, from.0)
    {
        Some(1 - dir)
    } else {
        None
    }
}

/// The tuple of a packet travelling the other way.
#[inline]
pub(crate) fn reverse(k: &Key) -> Key {
    Key {
        src: k.dst,
        dst: k.src,
        sport: k.dport,
        dport: k.sport,
        ..*k
    }
}

#[inline(always)]
fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never faults and reads no memory architecturally, so any
    // address is allowed. SSE is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p.cast::<i8>(), core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_key(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Key {
        let mut k = Key {
            family: 4,
            proto: 6,
            sport,
            dport,
            ..Key::EMPTY
        };
        k.src[..4].copy_from_slice(&src);
        k.dst[..4].copy_from_slice(&dst);
        k
    }

    #[test]
    fn ipv4_hash_is_symmetric_and_depends_on_the_secret_and_every_field() {
        let h = Hashing::new([1, 2, 3, 4]);
        let k = v4_key([10, 0, 0, 2], 40_000, [203, 0, 113, 9], 443);
        assert_eq!(h.hash(&k), h.hash(&reverse(&k)));
        let other = Hashing::new([1, 2, 3, 5]);
        assert_ne!(h.hash(&k), other.hash(&k));
        let variants = [
            v4_key([10, 0, 0, 3], 40_000, [203, 0, 113, 9], 443),
            v4_key([10, 0, 0, 2], 40_001, [203, 0, 113, 9], 443),
            v4_key([10, 0, 0, 2], 40_000, [203, 0, 113, 8], 443),
            v4_key([10, 0, 0, 2], 40_000, [203, 0, 113, 9], 444),
            Key { proto: 17, ..k },
        ];
        for v in variants {
            assert_ne!(h.hash(&k), h.hash(&v), "{v:?}");
        }
    }

    /// `fill_rows` sums `~m + m'` over every word at once (RFC 1624 eqn. 3 applied to whole
    /// fields); the reference adds it only for the words that change. The two must agree in
    /// one's-complement arithmetic (modulo 0xffff, where 0xffff is zero), and a sum must be 0,
    /// leaving the checksum alone, exactly when nothing it covers changes. Few distinct words
    /// are used, so that old and new words often coincide.
    #[test]
    fn nat_sums_match_rfc1624_word_by_word() {
        fn reference(k: &Key, x: &NatExt) -> [[u16; 2]; 2] {
            let word = |old: u16, new: u16| {
                if old == new {
                    0
                } else {
                    u64::from(!old) + u64::from(new)
                }
            };
            let addr = |old: &Addr, new: &Addr| {
                word(
                    u16::from_be_bytes([old[0], old[1]]),
                    u16::from_be_bytes([new[0], new[1]]),
                ) + word(
                    u16::from_be_bytes([old[2], old[3]]),
                    u16::from_be_bytes([new[2], new[3]]),
                )
            };
            let (sa, sp) = if x.flags & NAT_SRC != 0 {
                (&x.snat(), x.snat_port)
            } else {
                (&k.src, k.sport)
            };
            let (da, dp) = if x.flags & NAT_DST != 0 {
                (&x.dnat(), x.dnat_port)
            } else {
                (&k.dst, k.dport)
            };
            let ip = [
                addr(&k.src, sa) + addr(da, &k.dst),
                addr(&k.dst, da) + addr(sa, &k.src),
            ];
            let ports = [
                word(k.sport, sp) + word(dp, k.dport),
                word(k.dport, dp) + word(sp, k.sport),
            ];
            [0, 1].map(|d| {
                [
                    crate::wire::checksum::fold(ip[d]),
                    crate::wire::checksum::fold(ip[d] + ports[d]),
                ]
            })
        }
        let words = [0u16, 1, 0x7fff, 0x8000, 0xfffe, 0xffff, 0x0a00, 0xcb00];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut pick = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            words[usize::from(seed.to_le_bytes()[0] & 7)]
        };
        for _ in 0..20_000 {
            let mut a = || {
                let (h, l) = (pick().to_be_bytes(), pick().to_be_bytes());
                [h[0], h[1], l[0], l[1]]
            };
            let (src, dst, snat, dnat) = (a(), a(), a(), a());
            let k = v4_key(src, pick(), dst, pick());
            let mut x = NatExt::NONE;
            x.flags = [NAT_SRC, NAT_DST, NAT_SRC | NAT_DST][usize::from(pick() % 3)];
            let full = |a: [u8; 4]| {
                let mut f = [0; 16];
                f[..4].copy_from_slice(&a);
                f
            };
            x.set_snat(full(snat), pick());
            x.set_dnat(full(dnat), pick());
            let want = reference(&k, &x);
            let (sa, sp) = if x.flags & NAT_SRC != 0 {
                (snat, x.snat_port)
            } else {
                (src, k.sport)
            };
            let (da, dp) = if x.flags & NAT_DST != 0 {
                (dnat, x.dnat_port)
            } else {
                (dst, k.dport)
            };
            let ip_same = sa == src && da == dst;
            let all_same = ip_same && sp == k.sport && dp == k.dport;
            x.fill_rows(&k);
            for (got, want) in [x.sums(0), x.sums(1)].iter().zip(want) {
                assert_eq!(got[0] % 0xffff, want[0] % 0xffff, "{k:?} {x:?}");
                assert_eq!(got[1] % 0xffff, want[1] % 0xffff, "{k:?} {x:?}");
                assert_eq!(got[0] == 0, ip_same, "{k:?} {x:?}");
                assert_eq!(got[1] == 0, all_same, "{k:?} {x:?}");
            }
            // The rows are each direction's headers as the packet leaves, and still give
            // back the translated addresses.
            let leave = |a: [u8; 4], ap: u16, b: [u8; 4], bp: u16| {
                let mut r = [0; 12];
                r[..4].copy_from_slice(&a);
                r[4..8].copy_from_slice(&b);
                r[8..10].copy_from_slice(&ap.to_be_bytes());
                r[10..12].copy_from_slice(&bp.to_be_bytes());
                r
            };
            let rows = [x.row(0), x.row(1)].map(|r| r.map(|r| r[..12].to_vec()));
            assert_eq!(rows[0], Some(leave(sa, sp, dst, k.dport).to_vec()));
            assert_eq!(rows[1], Some(leave(da, dp, src, k.sport).to_vec()));
            let on = |f: u8, a: [u8; 4]| if x.flags & f != 0 { full(a) } else { [0; 16] };
            assert_eq!((x.snat(), x.dnat()), (on(NAT_SRC, snat), on(NAT_DST, dnat)));
        }
    }

    /// A rebuild to clear deleted slots, with few entries left, must not give back the room
    /// set aside: the index stays at least as large as reserved.
    #[test]
    fn the_index_is_never_rebuilt_smaller_than_reserved() {
        let mut t = Table::new(Hashing::new([1, 2, 3, 4]));
        let small = t.buckets.len();
        t.reserve_room(10_000, 20_000, true);
        let reserved = t.buckets.len();
        assert!(reserved >= 20_000 * 8 / (7 * SLOTS), "{reserved} buckets");
        assert!(reserved > small);
        assert_eq!(t.chunks.len(), 10_000usize.div_ceil(CHUNK));
        assert_eq!(t.nat.len(), t.chunks.len());
        let k = v4_key([10, 0, 0, 2], 40_000, [203, 0, 113, 9], 443);
        let id = t.insert(t.hash(&k), Entry::new(&k));
        t.rebuild(t.filed);
        assert_eq!(t.buckets.len(), reserved);
        assert_eq!(t.find(t.hash(&k), &k, false, false).map(|f| f.id), Some(id));
        t.check().unwrap();
        // Reserving less later changes nothing.
        t.reserve_room(10, 10, false);
        assert_eq!(t.buckets.len(), reserved);
    }

    /// A scan (one source, every port of one host) and a crowd (many sources, one server)
    /// must spread over the buckets about as evenly as random placement would.
    #[test]
    fn ipv4_hash_spreads_structured_tuples_over_buckets() {
        let h = Hashing::new([0x1234, 0x5678, 0x9abc, 0xdef0]);
        let buckets = 1usize << 12;
        let scan = (0..65_535u16).map(|p| v4_key([198, 51, 100, 7], 61_000, [10, 0, 0, 5], p));
        let crowd = (0..65_536u32).map(|i| {
            let [_, _, c, d] = i.to_be_bytes();
            v4_key([100, 64, c, d], 40_000, [10, 0, 0, 5], 443)
        });
        for (name, keys) in [
            ("scan", scan.collect::<Vec<_>>()),
            ("crowd", crowd.collect::<Vec<_>>()),
        ] {
            let mut load = vec![0u32; buckets];
            for k in &keys {
                let t = tag_of(h.hash(k));
                let b = ((u64::from(t) * buckets as u64) >> 32) as usize;
                load[b] += 1;
            }
            // 16 per bucket on average; random placement practically never exceeds 40.
            let max = load.iter().copied().max().unwrap_or(0);
            assert!(max < 40, "{name}: fullest bucket holds {max}");
            let empty = load.iter().filter(|&&n| n == 0).count();
            assert!(empty < 8, "{name}: {empty} empty buckets");
        }
    }
}
