//! Saving the state table to a file and restoring it, so established connections survive a
//! restart or an upgrade of the process that runs the engine.
//!
//! The format is binary, little-endian, versioned and checked:
//!
//! ```text
//! header   magic "KSCT\0\r\n\x1a" (8)  version u16  record length u16  flags u32 (0)
//!          saved at u64 (wall clock, Unix seconds; 0 unknown)  records u64
//! records  one per connection, `record length` bytes each (see below)
//! trailer  FNV-1a 64 of every byte before it, u64
//! ```
//!
//! A record (version 1, 152 bytes) holds the connection as tracking sees it (its tuple
//! between the translations) and its translation, which together give the original and
//! reply tuples; the TCP state and both directions' window data (`end`, `maxend`,
//! `maxwin`, window scale, per-side flags); the status bits (seen reply, assured, liberal,
//! counted); both directions' packet and byte counters; and every time as seconds left
//! from the moment of saving, never as a reading of the saving process's clock, so the
//! file restores under any clock:
//!
//! ```text
//!   0 family u8 (4|6)  1 proto u8  2 tcp state u8  3 status u8
//!   4 src [16]  20 dst [16]  36 sport u16  38 dport u16  40 seconds left u32
//!  44 window scale [2]  46 side flags [2]  48 packets [2] u64  64 bytes [2] u64
//!  80 per direction: end u32, maxend u32, maxwin u32 (UDP and others: direction 0's
//!     `end` is the seconds until a replied flow counts as a stream)
//! 104 nat flags u8  105 0  106 snat port u16  108 dnat port u16  110 0 u16
//! 112 sequence offset u32  116 snat [16]  132 dnat [16]
//! 148 seconds since the connection was created u32 (absent from 148-byte records)
//! ```
//!
//! A reader of this version takes records longer than its own (a later version that added
//! fields at the end) and ignores the rest of each.
//!
//! Restoring files every connection through the table's normal insert paths, so the index,
//! the translated tuples (which is what keeps a mapped port taken) and the per-source
//! reports are as they would be had the connection been opened here. What is not saved:
//! the memo of ignored SYNs (a SYN/ACK answering one is then ignored, as after the memo
//! slot is reused), fragments in flight, the eviction order (restored connections queue
//! in file order) and the counters of [`crate::Stats`].

use std::io::{self, BufWriter, Read, Write};

use crate::engine::Engine;
use crate::nat::NatReleased;
use crate::table::{
    nat_forms, reverse, Entry, NatExt, Peer, NAT_DST, NAT_EIM, NAT_REPORT, NAT_ROWS, NAT_SEQ,
    NAT_SRC, STATUS_ASSURED, STATUS_COUNTED, STATUS_LIBERAL, STATUS_NAT, STATUS_SEEN_REPLY,
    STATUS_SYN_IGNORED,
};
use crate::time::Time;
use crate::wire::{addr_to_ip, Addr, Family, Key, PROTO_TCP};

/// The file's first eight bytes. The CR LF and ^Z catch a file mangled by a text-mode copy.
pub const MAGIC: [u8; 8] = *b"KSCT\x00\r\n\x1a";
/// The format version this engine writes.
pub const VERSION: u16 = 1;
const HEADER_LEN: usize = 32;
const RECORD_LEN: usize = 152;
/// Records of the first files written had no age (they ended at byte 148): read them as
/// connections born at the restore.
const MIN_RECORD_LEN: usize = 148;
const TRAILER_LEN: usize = 8;

const STATUS_KNOWN: u8 =
    STATUS_SEEN_REPLY | STATUS_ASSURED | STATUS_LIBERAL | STATUS_NAT | STATUS_COUNTED;
const NAT_KNOWN: u8 = NAT_SRC | NAT_DST | NAT_REPORT | NAT_EIM | NAT_SEQ;
const PEER_KNOWN: u8 = 0x1f;

/// How [`Engine::restore_with`] treats what it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreOptions {
    /// The wall clock now, in Unix seconds. With it, and a file stamped when it was saved
    /// ([`Engine::save_stamped`]), every timeout is shortened by the time the file spent on
    /// disk, so a connection that would have expired meanwhile is not brought back.
    pub wall_clock: Option<u64>,
    /// Keep the mark on connections whose source the policy counts (see
    /// [`crate::Hooks::admit`]); a policy that no longer counts clears it, or nobody would
    /// collect their departures.
    pub counted: bool,
    /// Keep the request to report source translations when they are released (see
    /// [`crate::SnatRequest::report`]); cleared for a policy that no longer keeps books.
    pub nat_reports: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            wall_clock: None,
            counted: true,
            nat_reports: true,
        }
    }
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Records in the file.
    pub records: usize,
    /// Connections restored.
    pub restored: usize,
    /// Records skipped: no time left.
    pub expired: usize,
    /// Records skipped: the table was at its limit.
    pub full: usize,
    /// Records skipped: a tuple they would be filed under is taken (a connection already
    /// in the table, or a duplicate record).
    pub conflicts: usize,
    /// When the file was saved (wall clock, Unix seconds), if it says.
    pub saved_at: Option<u64>,
    /// Restored source translations that report their release: the ports and
    /// endpoint-independent mappings a policy's books must count as taken again.
    pub nat_mappings: Vec<NatReleased>,
    /// Original sources of restored connections the policy counts per source.
    pub counted: Vec<core::net::IpAddr>,
}

impl RestoreReport {
    /// Records skipped, for any reason.
    pub fn skipped(&self) -> usize {
        self.expired + self.full + self.conflicts
    }
}

/// Why a file could not be restored. Nothing was restored then: the table is as it was.
#[derive(Debug)]
pub enum RestoreError {
    /// Reading failed.
    Io { offset: u64, error: io::Error },
    /// The file ends early.
    Truncated { offset: u64, expected: &'static str },
    /// Not a keepstate state file.
    Magic { found: [u8; 8] },
    /// A format version this engine does not read.
    Version { found: u16, supported: u16 },
    /// The file is damaged, or holds something no engine writes.
    Corrupt { offset: u64, what: String },
}

impl core::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RestoreError::Io { offset, error } => write!(f, "read error at byte {offset}: {error}"),
            RestoreError::Truncated { offset, expected } => {
                write!(
                    f,
                    "truncated: the file ends at byte {offset}, in {expected}"
                )
            }
            RestoreError::Magic { found } => write!(
                f,
                "not a keepstate state file: it starts {found:02x?} (byte 0), not {MAGIC:02x?}"
            ),
            RestoreError::Version { found, supported } => write!(
                f,
                "format version {found} (byte 8): this keepstate reads version {supported}"
            ),
            RestoreError::Corrupt { offset, what } => write!(f, "corrupt at byte {offset}: {what}"),
        }
    }
}

impl std::error::Error for RestoreError {}

/// FNV-1a, 64 bits: any change confined to one byte changes it, which is what a damaged
/// file mostly is; not a defence against someone forging a file.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    const START: Fnv = Fnv(0xcbf2_9ce4_8422_2325);

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Recomputes the trailer of a state file held in `buf` (for fuzzers and tests that build
/// or alter files and want them read past the check). Does nothing to a buffer shorter
/// than a trailer.
#[doc(hidden)]
pub fn reseal(buf: &mut [u8]) {
    let Some(body) = buf.len().checked_sub(TRAILER_LEN) else {
        return;
    };
    let mut h = Fnv::START;
    if let Some(b) = buf.get(..body) {
        h.update(b);
    }
    if let Some(t) = buf.get_mut(body..) {
        t.copy_from_slice(&h.0.to_le_bytes());
    }
}

/// A writer that hashes what passes through.
struct Hashed<W: Write> {
    w: W,
    h: Fnv,
}

impl<W: Write> Hashed<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.h.update(bytes);
        self.w.write_all(bytes)
    }
}

/// Little-endian field writer over a fixed record.
struct Rec<'a>(&'a mut [u8]);

impl Rec<'_> {
    fn put(&mut self, at: usize, bytes: &[u8]) {
        if let Some(d) = at
            .checked_add(bytes.len())
            .and_then(|end| self.0.get_mut(at..end))
        {
            d.copy_from_slice(bytes);
        }
    }
}

/// Little-endian field reader over a record.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn bytes<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0; N];
        if let Some(s) = at.checked_add(N).and_then(|end| self.0.get(at..end)) {
            out.copy_from_slice(s);
        }
        out
    }

    fn u8(&self, at: usize) -> u8 {
        self.0.get(at).copied().unwrap_or(0)
    }

    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.bytes(at))
    }

    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes(at))
    }

    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.bytes(at))
    }
}

/// A record read and checked, times still relative.
struct Parsed {
    entry: Entry,
    nat: Option<NatExt>,
    left: u32,
    /// Non-TCP: seconds until a replied flow counts as a stream.
    stream_in: u32,
    /// Seconds since the connection was created, at saving.
    age: u32,
}

fn encode(e: &Entry, x: Option<&NatExt>, born: u32, now_s: u32, out: &mut [u8; RECORD_LEN]) {
    out.fill(0);
    let mut r = Rec(out);
    let k = &e.key;
    r.put(
        0,
        &[k.family, k.proto, e.state, e.status & !STATUS_SYN_IGNORED],
    );
    r.put(4, &k.src);
    r.put(20, &k.dst);
    r.put(36, &k.sport.to_le_bytes());
    r.put(38, &k.dport.to_le_bytes());
    r.put(40, &e.expires.saturating_sub(now_s).to_le_bytes());
    r.put(44, &e.scale);
    r.put(46, &e.pflags);
    for d in 0..2 {
        r.put(48 + 8 * d, &e.packets[d].to_le_bytes());
        r.put(64 + 8 * d, &e.bytes[d].to_le_bytes());
        let p = e.peer[d];
        let end = if k.proto != PROTO_TCP && d == 0 {
            // A second of this process's clock: saved as time left, like the expiry.
            p.end.saturating_sub(now_s)
        } else {
            p.end
        };
        r.put(80 + 12 * d, &end.to_le_bytes());
        r.put(84 + 12 * d, &p.maxend.to_le_bytes());
        r.put(88 + 12 * d, &p.maxwin.to_le_bytes());
    }
    if let Some(x) = x {
        // `NAT_ROWS` is how the record is laid out in memory, not part of the translation.
        r.put(104, &[x.flags & !NAT_ROWS]);
        r.put(106, &x.snat_port.to_le_bytes());
        r.put(108, &x.dnat_port.to_le_bytes());
        r.put(112, &x.seq_delta.to_le_bytes());
        r.put(116, &x.snat());
        r.put(132, &x.dnat());
    }
    r.put(148, &now_s.saturating_sub(born).to_le_bytes());
}

/// An address valid for the family: IPv4 addresses use the first four bytes only.
fn addr_ok(family: u8, a: &Addr) -> bool {
    family == 6 || a.iter().skip(4).all(|&b| b == 0)
}

fn decode(rec: &[u8]) -> Result<Parsed, String> {
    let f = Fields(rec);
    let family = f.u8(0);
    let proto = f.u8(1);
    let state = f.u8(2);
    let status = f.u8(3) & !STATUS_SYN_IGNORED;
    if family != 4 && family != 6 {
        return Err(format!("address family {family}"));
    }
    let key = Key {
        src: f.bytes(4),
        dst: f.bytes(20),
        sport: f.u16(36),
        dport: f.u16(38),
        proto,
        family,
    };
    if !addr_ok(family, &key.src) || !addr_ok(family, &key.dst) {
        return Err("an IPv4 address with IPv6 bytes".into());
    }
    let tcp_states = u8::try_from(crate::tcp::TcpState::ALL.len()).unwrap_or(u8::MAX);
    if (proto == PROTO_TCP && state >= tcp_states) || (proto != PROTO_TCP && state != 0) {
        return Err(format!("state {state} for protocol {proto}"));
    }
    if status & !STATUS_KNOWN != 0 {
        return Err(format!("status bits {status:#04x}"));
    }
    let scale: [u8; 2] = f.bytes(44);
    let pflags: [u8; 2] = f.bytes(46);
    if scale.iter().any(|&s| s > 14) || pflags.iter().any(|&p| p & !PEER_KNOWN != 0) {
        return Err(format!("window scale {scale:?} or side flags {pflags:?}"));
    }
    let mut e = Entry::new(&key);
    e.state = state;
    e.status = status;
    e.scale = scale;
    e.pflags = pflags;
    for d in 0..2 {
        e.packets[d] = f.u64(48 + 8 * d);
        e.bytes[d] = f.u64(64 + 8 * d);
        e.peer[d] = Peer {
            end: f.u32(80 + 12 * d),
            maxend: f.u32(84 + 12 * d),
            maxwin: f.u32(88 + 12 * d),
        };
    }
    let flags = f.u8(104);
    let nat = if status & STATUS_NAT != 0 {
        let (snat, dnat) = ((f.bytes(116), f.u16(106)), (f.bytes(132), f.u16(108)));
        check_nat(&key, flags, snat, dnat)?;
        let mut x = NatExt::NONE;
        x.flags = flags;
        x.seq_delta = f.u32(112);
        x.set_snat(snat.0, snat.1);
        x.set_dnat(dnat.0, dnat.1);
        // `Table::set_nat` works out the rows when the connection is restored.
        Some(x)
    } else if flags != 0 {
        return Err("a translation on a connection marked untranslated".into());
    } else {
        None
    };
    let stream_in = if proto == PROTO_TCP { 0 } else { e.peer[0].end };
    Ok(Parsed {
        entry: e,
        nat,
        left: f.u32(40),
        stream_in,
        age: f.u32(148),
    })
}

/// A translation (`flags`, translated source and untranslated destination, as saved) as the
/// engine makes them: it changes something, and what it names as changed differs from the
/// tuple it changes.
fn check_nat(key: &Key, fl: u8, snat: (Addr, u16), dnat: (Addr, u16)) -> Result<(), String> {
    if fl & !NAT_KNOWN != 0 || fl & (NAT_SRC | NAT_DST) == 0 {
        return Err(format!("translation flags {fl:#04x}"));
    }
    if fl & NAT_SEQ != 0 && key.proto != PROTO_TCP {
        return Err("a sequence offset on a connection that is not TCP".into());
    }
    if !addr_ok(key.family, &snat.0) || !addr_ok(key.family, &dnat.0) {
        return Err("an IPv4 translation with IPv6 bytes".into());
    }
    let src_ok = if fl & NAT_SRC != 0 {
        snat != (key.src, key.sport)
    } else {
        snat == ([0; 16], 0) && fl & (NAT_REPORT | NAT_EIM) == 0
    };
    let dst_ok = if fl & NAT_DST != 0 {
        dnat != (key.dst, key.dport)
    } else {
        dnat == ([0; 16], 0)
    };
    if !src_ok || !dst_ok {
        return Err("a translation that changes nothing, or names what it does not change".into());
    }
    Ok(())
}

fn read_exact_at<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    offset: &mut u64,
    expected: &'static str,
) -> Result<(), RestoreError> {
    let mut got = 0;
    while got < buf.len() {
        let Some(rest) = buf.get_mut(got..) else {
            break;
        };
        match r.read(rest) {
            Ok(0) => {
                return Err(RestoreError::Truncated {
                    offset: *offset + u64::try_from(got).unwrap_or(u64::MAX),
                    expected,
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                return Err(RestoreError::Io {
                    offset: *offset + u64::try_from(got).unwrap_or(u64::MAX),
                    error,
                })
            }
        }
    }
    *offset += u64::try_from(buf.len()).unwrap_or(u64::MAX);
    Ok(())
}

fn family_of(code: u8) -> Family {
    if code == 6 {
        Family::V6
    } else {
        Family::V4
    }
}

/// Two tuples that one index lookup could confuse: the same, or one the other reversed.
fn same_either_way(a: &Key, b: &Key) -> bool {
    a == b || *a == reverse(b)
}

impl Engine {
    /// Writes every live connection to `w` (see [`crate::persist`] for the format), with
    /// its timeouts as time left at `now`. Returns how many connections were written. One
    /// pass over the table; `w` is buffered here.
    pub fn save(&self, now: Time, w: &mut impl Write) -> io::Result<usize> {
        self.save_stamped(now, None, w)
    }

    /// [`Engine::save`], stamping the file with the wall clock (`wall_clock`, Unix
    /// seconds), so a restore can take off the time it spent on disk
    /// ([`RestoreOptions::wall_clock`]).
    pub fn save_stamped(
        &self,
        now: Time,
        wall_clock: Option<u64>,
        w: &mut impl Write,
    ) -> io::Result<usize> {
        let now_s = now.secs_u32();
        let live = || self.table.iter().filter(move |(_, e)| !e.expired(now_s));
        let count = live().count();
        let mut out = Hashed {
            w: BufWriter::with_capacity(1 << 16, w),
            h: Fnv::START,
        };
        let mut head = [0u8; HEADER_LEN];
        let mut r = Rec(&mut head);
        r.put(0, &MAGIC);
        r.put(8, &VERSION.to_le_bytes());
        r.put(10, &u16::try_from(RECORD_LEN).unwrap_or(0).to_le_bytes());
        r.put(16, &wall_clock.unwrap_or(0).to_le_bytes());
        r.put(24, &u64::try_from(count).unwrap_or(u64::MAX).to_le_bytes());
        out.put(&head)?;
        let mut rec = [0u8; RECORD_LEN];
        let mut written = 0;
        for (id, e) in live() {
            let x = (e.status & STATUS_NAT != 0).then(|| self.table.ext(id));
            encode(e, x, self.table.born(id), now_s, &mut rec);
            out.put(&rec)?;
            written += 1;
        }
        let sum = out.h.0.to_le_bytes();
        out.w.write_all(&sum)?;
        out.w.flush()?;
        Ok(written)
    }

    /// Restores the connections a file written by [`Engine::save`] holds, as they were,
    /// with their timeouts counted from `now`. See [`Engine::restore_with`].
    pub fn restore(&mut self, now: Time, r: &mut impl Read) -> Result<RestoreReport, RestoreError> {
        self.restore_with(now, r, &RestoreOptions::default())
    }

    /// Reads and checks the whole file first: on any error (a truncated, damaged or
    /// foreign file, a version this engine does not read) the table is left as it was.
    /// Then files each connection as the table's own insert paths do, so its index slots,
    /// translated tuples (its mapped port is taken again) and per-source mark are as if
    /// it had been opened here. Connections with no time left, connections beyond the
    /// table's limit and connections a tuple of which is already taken are skipped and
    /// counted. Meant for an empty engine, before traffic; into a live one it adds what
    /// does not collide.
    pub fn restore_with(
        &mut self,
        now: Time,
        r: &mut impl Read,
        opts: &RestoreOptions,
    ) -> Result<RestoreReport, RestoreError> {
        let (parsed, saved_at) = read_file(r)?;
        let mut report = RestoreReport {
            records: parsed.len(),
            saved_at,
            ..RestoreReport::default()
        };
        let aged = match (opts.wall_clock, saved_at) {
            (Some(wall), Some(saved)) => {
                u32::try_from(wall.saturating_sub(saved)).unwrap_or(u32::MAX)
            }
            _ => 0,
        };
        self.advance(now);
        for p in parsed {
            self.restore_one(p, aged, opts, &mut report);
        }
        // Nothing per packet refers to what was there before.
        self.created = None;
        self.last = None;
        let len = self.table.len();
        if self.cfg.adaptive.is_some() {
            self.adapt(len);
        }
        if len > self.stats.peak {
            self.stats.peak = len;
            self.stats.peak_memory = self.memory_bytes();
        }
        Ok(report)
    }

    fn restore_one(
        &mut self,
        p: Parsed,
        aged: u32,
        opts: &RestoreOptions,
        report: &mut RestoreReport,
    ) {
        let Parsed {
            mut entry,
            nat,
            left,
            stream_in,
            age,
        } = p;
        let Some(left) = left.checked_sub(aged).filter(|&l| l > 0) else {
            report.expired += 1;
            return;
        };
        if self.table.len() >= self.cfg.max_connections as usize {
            report.full += 1;
            return;
        }
        let key = entry.key;
        let forms: Vec<Key> = match &nat {
            Some(x) => nat_forms(&key, x)
                .into_iter()
                .flatten()
                .map(|f| f.0)
                .collect(),
            None => vec![key],
        };
        let clash = forms.iter().enumerate().any(|(i, a)| {
            self.table.in_use(a)
                || self.table.in_use(&reverse(a))
                || forms.iter().skip(i + 1).any(|b| same_either_way(a, b))
        });
        if clash {
            report.conflicts += 1;
            return;
        }
        entry.expires = self.deadline(left);
        if key.proto != PROTO_TCP {
            entry.peer[0].end = self.deadline(stream_in.saturating_sub(aged));
        }
        if !opts.counted {
            entry.status &= !STATUS_COUNTED;
        }
        // `set_nat` marks it translated once its record is in place.
        entry.status &= !STATUS_NAT;
        let family = family_of(key.family);
        if entry.status & STATUS_COUNTED != 0 {
            report.counted.push(addr_to_ip(family, &key.src));
        }
        let hash = self.table.hash(&key);
        let id = self.table.insert(hash, entry);
        // A restored connection keeps what it had left, which may be less than any timeout.
        self.table.note_expiry(id, entry.expires);
        let born = self.now_s().saturating_sub(age.saturating_add(aged));
        self.table.set_born(id, born);
        if let Some(mut x) = nat {
            if !opts.nat_reports {
                x.flags &= !NAT_REPORT;
            }
            self.table.set_nat(id, &key, &x, None);
            if x.flags & NAT_SRC != 0 && x.flags & NAT_REPORT != 0 {
                report.nat_mappings.push(NatReleased {
                    proto: key.proto,
                    inside: (addr_to_ip(family, &key.src), key.sport),
                    outside: (addr_to_ip(family, &x.snat()), x.snat_port),
                    endpoint_independent: x.flags & NAT_EIM != 0,
                });
            }
        }
        self.remember_young(id);
        report.restored += 1;
    }
}

/// Reads the whole file and checks it: header, every record, the trailer.
fn read_file<R: Read>(r: &mut R) -> Result<(Vec<Parsed>, Option<u64>), RestoreError> {
    let mut offset = 0u64;
    let mut h = Fnv::START;
    let mut head = [0u8; HEADER_LEN];
    if let Err(e) = read_exact_at(r, &mut head, &mut offset, "the header") {
        // A short file that does not even start right is better called foreign.
        if let RestoreError::Truncated { offset: got, .. } = &e {
            let n = usize::try_from(*got).unwrap_or(0).min(MAGIC.len());
            if head.get(..n) != MAGIC.get(..n) {
                return Err(RestoreError::Magic {
                    found: Fields(&head).bytes(0),
                });
            }
        }
        return Err(e);
    }
    h.update(&head);
    let f = Fields(&head);
    let magic: [u8; 8] = f.bytes(0);
    if magic != MAGIC {
        return Err(RestoreError::Magic { found: magic });
    }
    let version = f.u16(8);
    if version != VERSION {
        return Err(RestoreError::Version {
            found: version,
            supported: VERSION,
        });
    }
    let rec_len = usize::from(f.u16(10));
    if rec_len < MIN_RECORD_LEN {
        return Err(RestoreError::Corrupt {
            offset: 10,
            what: format!("records of {rec_len} bytes, at least {MIN_RECORD_LEN} expected"),
        });
    }
    let flags = f.u32(12);
    if flags != 0 {
        return Err(RestoreError::Corrupt {
            offset: 12,
            what: format!("header flags {flags:#x}"),
        });
    }
    let saved_at = Some(f.u64(16)).filter(|&s| s != 0);
    let count = f.u64(24);
    // The count is not trusted for an allocation: a damaged one fails at the end of data.
    let mut parsed = Vec::with_capacity(usize::try_from(count.min(1 << 16)).unwrap_or(0));
    let mut rec = vec![0u8; rec_len];
    let mut bad: Option<RestoreError> = None;
    for _ in 0..count {
        let at = offset;
        read_exact_at(r, &mut rec, &mut offset, "a connection record")?;
        h.update(&rec);
        // A bad field is reported only once the checksum is known good: on a damaged file
        // the checksum is the better message.
        if bad.is_none() {
            match decode(&rec) {
                Ok(p) => parsed.push(p),
                Err(what) => bad = Some(RestoreError::Corrupt { offset: at, what }),
            }
        }
    }
    let at = offset;
    let mut trailer = [0u8; TRAILER_LEN];
    read_exact_at(r, &mut trailer, &mut offset, "the checksum")?;
    if u64::from_le_bytes(trailer) != h.0 {
        return Err(RestoreError::Corrupt {
            offset: at,
            what: "checksum mismatch: the file is damaged".into(),
        });
    }
    if let Some(e) = bad {
        return Err(e);
    }
    let mut extra = [0u8; 1];
    loop {
        match r.read(&mut extra) {
            Ok(0) => break,
            Ok(_) => {
                return Err(RestoreError::Corrupt {
                    offset,
                    what: "data after the checksum".into(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(RestoreError::Io { offset, error }),
        }
    }
    Ok((parsed, saved_at))
}
