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
//! - The hash is keyed ([`ahash`] with the caller's secret), so nobody who lacks the key can
//!   aim connections at one bucket.

pub(crate) use crate::wire::Key;
use core::hash::Hasher;

/// Entries per slab chunk.
pub(crate) const CHUNK: usize = 4096;
const CHUNK_SHIFT: u32 = 12;
const NIL: u32 = u32::MAX;

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
}

impl Hashing {
    pub(crate) fn new(key: [u64; 4]) -> Hashing {
        Hashing {
            state: ahash::RandomState::with_seeds(key[0], key[1], key[2], key[3]),
        }
    }

    /// The same value for a tuple and its reverse.
    #[inline(always)]
    pub(crate) fn hash(&self, k: &Key) -> u64 {
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

#[inline(always)]
fn tag_of(hash: u64) -> u32 {
    // The high half; values 0 and 1 are reserved for empty and deleted slots.
    #[allow(clippy::cast_possible_truncation)]
    let t = (hash >> 32) as u32;
    if t < 2 {
        t + 2
    } else {
        t
    }
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

/// Where an id sits in the index, for removal without a second probe.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    bucket: usize,
    slot: usize,
}

pub(crate) struct Table {
    chunks: Vec<Box<[Entry]>>,
    free: u32,
    /// Ids below this have been handed out at least once.
    high: u32,
    len: usize,
    buckets: Vec<Bucket>,
    /// Occupied plus deleted slots; the index is rebuilt when this passes 7/8 of capacity.
    used: usize,
    sweep: u32,
    hashing: Hashing,
}

impl Table {
    pub(crate) fn new(hashing: Hashing) -> Table {
        Table {
            hashing,
            chunks: Vec::new(),
            free: NIL,
            high: 0,
            len: 0,
            buckets: vec![EMPTY_BUCKET; 16],
            used: 0,
            sweep: 0,
        }
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
            + self.chunks.capacity() * core::mem::size_of::<Box<[Entry]>>()
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

    /// Prefetches the entry the first tag match in `hash`'s bucket points to.
    #[inline(always)]
    pub(crate) fn prefetch_entry(&self, hash: u64) {
        let tag = tag_of(hash);
        if let Some(bucket) = self.buckets.get(self.bucket_of(hash)) {
            let m = bucket.matches(tag);
            if m != 0 {
                if let Some(e) = self.get_opt(bucket.id(m.trailing_zeros())) {
                    // Entries are not line-aligned: one can straddle three lines.
                    let p = e as *const Entry as *const u8;
                    prefetch_read(p);
                    prefetch_read(p.wrapping_add(64));
                    prefetch_read(p.wrapping_add(core::mem::size_of::<Entry>() - 1));
                }
            }
        }
    }

    #[inline(always)]
    pub(crate) fn get(&self, id: u32) -> &Entry {
        let c = (id >> CHUNK_SHIFT) as usize;
        let o = id as usize & (CHUNK - 1);
        &self.chunks[c][o]
    }

    #[inline(always)]
    pub(crate) fn get_mut(&mut self, id: u32) -> &mut Entry {
        let c = (id >> CHUNK_SHIFT) as usize;
        let o = id as usize & (CHUNK - 1);
        &mut self.chunks[c][o]
    }

    fn get_opt(&self, id: u32) -> Option<&Entry> {
        self.chunks
            .get((id >> CHUNK_SHIFT) as usize)?
            .get(id as usize & (CHUNK - 1))
    }

    /// Finds the entry for a packet tuple. Returns its id, slot and the packet's direction.
    #[inline(always)]
    pub(crate) fn find(&self, hash: u64, key: &Key) -> Option<(u32, Slot, usize)> {
        let tag = tag_of(hash);
        let n = self.buckets.len();
        let mut b = self.bucket_of(hash);
        for _ in 0..n {
            let bucket = &self.buckets[b];
            let mut m = bucket.matches(tag);
            while m != 0 {
                let i = m.trailing_zeros();
                let id = bucket.id(i);
                if let Some(dir) = self.get(id).direction_of(key) {
                    return Some((
                        id,
                        Slot {
                            bucket: b,
                            slot: i as usize,
                        },
                        dir,
                    ));
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

    /// Inserts a new entry; the caller has checked the key is absent and the limit.
    pub(crate) fn insert(&mut self, hash: u64, entry: Entry) -> u32 {
        if (self.used + 1) * 8 > self.buckets.len() * SLOTS * 7 {
            self.rebuild(self.len + 1);
        }
        let id = self.alloc(entry);
        self.place(hash, id);
        self.len += 1;
        id
    }

    fn place(&mut self, hash: u64, id: u32) {
        self.place_tag(tag_of(hash), id);
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

    fn alloc(&mut self, entry: Entry) -> u32 {
        if self.free != NIL {
            let id = self.free;
            let e = self.get_mut(id);
            let next = e.expires;
            *e = entry;
            self.free = next;
            return id;
        }
        if self.high as usize >= self.chunks.len() * CHUNK {
            self.chunks
                .push(vec![Entry::FREE; CHUNK].into_boxed_slice());
        }
        let id = self.high;
        self.high += 1;
        *self.get_mut(id) = entry;
        id
    }

    /// Removes the entry at `slot` (as returned by `find`).
    pub(crate) fn remove_at(&mut self, id: u32, slot: Slot) {
        let bucket = &mut self.buckets[slot.bucket];
        debug_assert_eq!(bucket.ids[slot.slot], id);
        // A bucket that still has an empty slot has never been full since the last rebuild,
        // so no probe ever continued past it: the slot can become empty again. Otherwise it
        // must stay a tombstone so later probes keep going.
        if bucket.tags.contains(&TAG_EMPTY) {
            bucket.tags[slot.slot] = TAG_EMPTY;
            self.used -= 1;
        } else {
            bucket.tags[slot.slot] = TAG_TOMB;
        }
        bucket.ids[slot.slot] = NIL;
        let free = self.free;
        let e = self.get_mut(id);
        *e = Entry::FREE;
        e.expires = free;
        self.free = id;
        self.len -= 1;
    }

    /// Removes an entry by id, finding its slot from its own key.
    pub(crate) fn remove(&mut self, id: u32) {
        let key = self.get(id).key;
        let hash = self.hash(&key);
        if let Some((found, slot, _)) = self.find(hash, &key) {
            if found == id {
                self.remove_at(id, slot);
            }
        }
    }

    /// Re-sizes the index for `want` live entries at 2/3 load and drops tombstones. Entries do
    /// not move, so ids stay valid.
    fn rebuild(&mut self, want: usize) {
        let slots = (want * 3 / 2).max(SLOTS * 16);
        let nb = slots.div_ceil(SLOTS);
        let old = core::mem::replace(&mut self.buckets, vec![EMPTY_BUCKET; nb]);
        self.used = 0;
        for bucket in &old {
            for i in 0..SLOTS {
                if bucket.tags[i] >= 2 {
                    self.place_tag(bucket.tags[i], bucket.ids[i]);
                }
            }
        }
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
        (!self.get(id).is_free()).then_some(id)
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
                    out.push(bucket.ids[i]);
                }
            }
            b += 1;
            if b == n {
                b = 0;
            }
        }
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
