//! Reads pcap and pcapng capture files into timestamped link-layer records.
//!
//! The whole file is read into memory ([`Capture::open`]); records borrow their bytes from it.
//! Iterate with [`Capture::records`]. A corrupt file gives an error naming the file and the byte
//! offset; a last record cut short (a capture that was still being written, or copied while it
//! was) ends the iteration cleanly and is reported by [`Records::truncated_tail`].

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use keepstate_engine::{LinkType, Time};

/// Largest captured length accepted for one record; anything bigger means a corrupt header.
pub const MAX_RECORD_LEN: usize = 256 * 1024;

/// One captured frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Capture timestamp.
    pub ts: Time,
    /// How the frame's bytes begin.
    pub link: LinkType,
    /// pcapng interface name (`if_name`), if the file has one for this interface.
    pub iface: Option<&'a str>,
    /// The captured bytes (possibly fewer than were on the wire).
    pub data: &'a [u8],
    /// Length of the frame on the wire.
    pub wire_len: usize,
    /// Byte offset of the record (pcap record header or pcapng block) in the file.
    pub offset: u64,
    /// Whether the interface received or sent the frame (pcapng `epb_flags`), if recorded.
    pub direction: PacketDirection,
}

/// The direction bits of pcapng's `epb_flags`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PacketDirection {
    #[default]
    Unknown,
    Inbound,
    Outbound,
}

/// A last record that ends before the file does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncatedTail {
    /// Byte offset of the incomplete record.
    pub offset: u64,
    /// What is missing.
    pub what: String,
}

impl fmt::Display for TruncatedTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "truncated last record at byte offset {}: {}",
            self.offset, self.what
        )
    }
}

/// Which container format the file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Classic libpcap; `nanos` when the timestamps are in nanoseconds.
    Pcap { nanos: bool, big_endian: bool },
    /// pcapng.
    PcapNg,
}

/// A capture file read into memory.
pub struct Capture {
    path: PathBuf,
    bytes: Vec<u8>,
    format: Format,
}

impl Capture {
    /// Reads the whole file and checks its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Capture> {
        let path = path.as_ref().to_path_buf();
        let bytes =
            std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        Capture::from_bytes(path, bytes)
    }

    /// Wraps bytes already in memory; `path` is only used in messages.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Capture> {
        let path = path.into();
        let format = detect(&bytes)
            .with_context(|| format!("{}: bad capture header at byte offset 0", path.display()))?;
        Ok(Capture {
            path,
            bytes,
            format,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Size of the file in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Iterates over the records in file order.
    pub fn records(&self) -> Records<'_> {
        Records {
            path: &self.path,
            bytes: &self.bytes,
            pos: 0,
            format: self.format,
            pcap_link: None,
            big_endian: false,
            interfaces: Vec::new(),
            truncated: None,
            done: false,
        }
    }
}

fn detect(bytes: &[u8]) -> Result<Format> {
    let magic: [u8; 4] = match bytes.get(..4) {
        Some(m) => [m[0], m[1], m[2], m[3]],
        None => bail!(
            "file is {} bytes, too short for a capture header",
            bytes.len()
        ),
    };
    Ok(match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => Format::Pcap {
            nanos: false,
            big_endian: false,
        },
        [0xa1, 0xb2, 0xc3, 0xd4] => Format::Pcap {
            nanos: false,
            big_endian: true,
        },
        [0x4d, 0x3c, 0xb2, 0xa1] => Format::Pcap {
            nanos: true,
            big_endian: false,
        },
        [0xa1, 0xb2, 0x3c, 0x4d] => Format::Pcap {
            nanos: true,
            big_endian: true,
        },
        [0x0a, 0x0d, 0x0d, 0x0a] => Format::PcapNg,
        _ => bail!(
            "unknown magic number {:02x}{:02x}{:02x}{:02x} (not pcap or pcapng)",
            magic[0],
            magic[1],
            magic[2],
            magic[3]
        ),
    })
}

/// A pcapng interface.
struct Interface<'a> {
    link: u32,
    name: Option<&'a str>,
    /// Timestamp units per second are 10^exp or 2^exp.
    tsresol: u8,
    tsoffset: u64,
}

impl Interface<'_> {
    fn nanos(&self, units: u64) -> u64 {
        let v = u32::from(self.tsresol & 0x7f);
        let n: u128 = if self.tsresol & 0x80 != 0 {
            if v >= 127 {
                0
            } else {
                (u128::from(units) * 1_000_000_000) >> v
            }
        } else if v <= 9 {
            u128::from(units) * 10u128.pow(9 - v)
        } else {
            10u128
                .checked_pow(v - 9)
                .map_or(0, |d| u128::from(units) / d)
        };
        u64::try_from(n)
            .unwrap_or(u64::MAX)
            .saturating_add(self.tsoffset.saturating_mul(1_000_000_000))
    }
}

/// Iterator over a capture's records. Yields `Err` once for a corrupt file, then ends.
pub struct Records<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
    format: Format,
    pcap_link: Option<LinkType>,
    big_endian: bool,
    interfaces: Vec<Interface<'a>>,
    truncated: Option<TruncatedTail>,
    done: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = match self.format {
            Format::Pcap { nanos, big_endian } => self.next_pcap(nanos, big_endian),
            Format::PcapNg => self.next_pcapng(),
        };
        match r {
            Ok(Some(rec)) => Some(Ok(rec)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl<'a> Records<'a> {
    /// After the iteration ended: the incomplete last record, if there was one.
    pub fn truncated_tail(&self) -> Option<&TruncatedTail> {
        self.truncated.as_ref()
    }

    fn err(&self, offset: usize, msg: impl fmt::Display) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: corrupt capture at byte offset {}: {}",
            self.path.display(),
            offset,
            msg
        )
    }

    fn truncate(&mut self, offset: usize, what: String) -> Result<Option<Record<'a>>> {
        self.truncated = Some(TruncatedTail {
            offset: offset as u64,
            what,
        });
        Ok(None)
    }

    fn u16_at(&self, off: usize) -> Option<u16> {
        let b = self.bytes.get(off..off.checked_add(2)?)?;
        let a = [b[0], b[1]];
        Some(if self.big_endian {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        })
    }

    fn u32_at(&self, off: usize) -> Option<u32> {
        let b = self.bytes.get(off..off.checked_add(4)?)?;
        let a = [b[0], b[1], b[2], b[3]];
        Some(if self.big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    }

    fn next_pcap(&mut self, nanos: bool, big_endian: bool) -> Result<Option<Record<'a>>> {
        if self.pcap_link.is_none() {
            self.big_endian = big_endian;
            if self.bytes.len() < 24 {
                return Err(self.err(
                    0,
                    format!(
                        "pcap file header needs 24 bytes, file has {}",
                        self.bytes.len()
                    ),
                ));
            }
            let network = self.u32_at(20).unwrap_or(0) & 0xffff;
            let link = LinkType::from_linktype(network).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: unsupported link type {} in pcap header (byte offset 20)",
                    self.path.display(),
                    network
                )
            })?;
            self.pcap_link = Some(link);
            self.pos = 24;
        }
        let link = self.pcap_link.unwrap_or(LinkType::Ethernet);
        let off = self.pos;
        let left = self.bytes.len() - off;
        if left == 0 {
            return Ok(None);
        }
        if left < 16 {
            return self.truncate(
                off,
                format!("record header needs 16 bytes, {left} left in the file"),
            );
        }
        let (Some(sec), Some(frac), Some(incl), Some(orig)) = (
            self.u32_at(off),
            self.u32_at(off + 4),
            self.u32_at(off + 8),
            self.u32_at(off + 12),
        ) else {
            return Err(self.err(off, "unreadable record header"));
        };
        let incl = incl as usize;
        if incl > MAX_RECORD_LEN {
            return Err(self.err(
                off,
                format!("record claims {incl} captured bytes (limit {MAX_RECORD_LEN})"),
            ));
        }
        let start = off + 16;
        let Some(data) = self.bytes.get(start..start + incl) else {
            return self.truncate(
                off,
                format!(
                    "record claims {incl} captured bytes, {} left in the file",
                    left - 16
                ),
            );
        };
        self.pos = start + incl;
        let ns = if nanos {
            frac
        } else {
            frac.saturating_mul(1000)
        };
        Ok(Some(Record {
            ts: Time::from_secs_nanos(u64::from(sec), ns),
            link,
            iface: None,
            data,
            wire_len: (orig as usize).max(incl),
            offset: off as u64,
            direction: PacketDirection::Unknown,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Record<'a>>> {
        loop {
            let off = self.pos;
            let left = self.bytes.len() - off;
            if left == 0 {
                return Ok(None);
            }
            if left < 12 {
                return self.truncate(
                    off,
                    format!("block header needs 12 bytes, {left} left in the file"),
                );
            }
            let btype_raw = self.bytes.get(off..off + 4).unwrap_or(&[0; 4]);
            if btype_raw == [0x0a, 0x0d, 0x0d, 0x0a] {
                // Section header: learn the byte order from its magic.
                match self.bytes.get(off + 8..off + 12) {
                    Some([0x1a, 0x2b, 0x3c, 0x4d]) => self.big_endian = true,
                    Some([0x4d, 0x3c, 0x2b, 0x1a]) => self.big_endian = false,
                    _ => return Err(self.err(off, "section header with bad byte-order magic")),
                }
                self.interfaces.clear();
            }
            let btype = self.u32_at(off).unwrap_or(0);
            let blen = self.u32_at(off + 4).unwrap_or(0) as usize;
            if blen < 12 || blen & 3 != 0 {
                return Err(self.err(off, format!("block type {btype:#x} has bad length {blen}")));
            }
            if blen > MAX_RECORD_LEN + 64 * 1024 {
                return Err(self.err(
                    off,
                    format!("block type {btype:#x} claims {blen} bytes, too large"),
                ));
            }
            if blen > left {
                return self.truncate(
                    off,
                    format!("block type {btype:#x} claims {blen} bytes, {left} left in the file"),
                );
            }
            let trailer = self.u32_at(off + blen - 4).unwrap_or(0) as usize;
            if trailer != blen {
                return Err(self.err(
                    off,
                    format!(
                        "block type {btype:#x}: leading length {blen} != trailing length {trailer}"
                    ),
                ));
            }
            self.pos = off + blen;
            let body = off + 8;
            let body_end = off + blen - 4;
            match btype {
                0x0a0d_0d0a => {}
                1 => self.read_idb(off, body, body_end)?,
                6 | 2 => {
                    // Enhanced packet block (6) or obsolete packet block (2).
                    if body_end - body < 20 {
                        return Err(self.err(off, "packet block too short"));
                    }
                    let iface_id = if btype == 6 {
                        self.u32_at(body).unwrap_or(0) as usize
                    } else {
                        usize::from(self.u16_at(body).unwrap_or(0))
                    };
                    let hi = u64::from(self.u32_at(body + 4).unwrap_or(0));
                    let lo = u64::from(self.u32_at(body + 8).unwrap_or(0));
                    let cap = self.u32_at(body + 12).unwrap_or(0) as usize;
                    let orig = self.u32_at(body + 16).unwrap_or(0) as usize;
                    let dstart = body + 20;
                    if cap > body_end - dstart {
                        return Err(self.err(
                            off,
                            format!(
                                "packet claims {cap} captured bytes, block holds {}",
                                body_end - dstart
                            ),
                        ));
                    }
                    let data = self.bytes.get(dstart..dstart + cap).unwrap_or(&[]);
                    let (link, name, ns) = self.iface_info(off, iface_id, (hi << 32) | lo)?;
                    let direction = if btype == 6 {
                        self.epb_direction(dstart + cap.div_ceil(4) * 4, body_end)
                    } else {
                        PacketDirection::Unknown
                    };
                    return Ok(Some(Record {
                        ts: Time::from_nanos(ns),
                        link,
                        iface: name,
                        data,
                        wire_len: orig.max(cap),
                        offset: off as u64,
                        direction,
                    }));
                }
                3 => {
                    // Simple packet block: interface 0, no timestamp.
                    let orig = self.u32_at(body).unwrap_or(0) as usize;
                    let dstart = body + 4;
                    let cap = orig.min(body_end.saturating_sub(dstart));
                    let data = self.bytes.get(dstart..dstart + cap).unwrap_or(&[]);
                    let (link, name, _) = self.iface_info(off, 0, 0)?;
                    return Ok(Some(Record {
                        ts: Time::ZERO,
                        link,
                        iface: name,
                        data,
                        wire_len: orig,
                        offset: off as u64,
                        direction: PacketDirection::Unknown,
                    }));
                }
                _ => {} // statistics, name resolution, custom, ...: skipped
            }
        }
    }

    fn iface_info(
        &self,
        off: usize,
        id: usize,
        units: u64,
    ) -> Result<(LinkType, Option<&'a str>, u64)> {
        let Some(i) = self.interfaces.get(id) else {
            return Err(self.err(
                off,
                format!(
                    "packet on interface {id}, but only {} interfaces are described",
                    self.interfaces.len()
                ),
            ));
        };
        let link = LinkType::from_linktype(i.link).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: unsupported link type {} on interface {} (packet at byte offset {})",
                self.path.display(),
                i.link,
                i.name.unwrap_or("?"),
                off
            )
        })?;
        Ok((link, i.name, i.nanos(units)))
    }

    /// Reads the direction from an enhanced packet block's options. Options are advisory, so
    /// a malformed list only means the direction is unknown.
    fn epb_direction(&self, mut p: usize, end: usize) -> PacketDirection {
        while p + 4 <= end {
            let code = self.u16_at(p).unwrap_or(0);
            let len = usize::from(self.u16_at(p + 2).unwrap_or(0));
            let v = p + 4;
            if code == 0 || v + len > end {
                break;
            }
            if code == 2 && len == 4 {
                return match self.u32_at(v).unwrap_or(0) & 3 {
                    1 => PacketDirection::Inbound,
                    2 => PacketDirection::Outbound,
                    _ => PacketDirection::Unknown,
                };
            }
            p = v + len.div_ceil(4) * 4;
        }
        PacketDirection::Unknown
    }

    fn read_idb(&mut self, off: usize, body: usize, end: usize) -> Result<()> {
        if end - body < 8 {
            return Err(self.err(off, "interface description block too short"));
        }
        let mut iface = Interface {
            link: u32::from(self.u16_at(body).unwrap_or(0)),
            name: None,
            tsresol: 6,
            tsoffset: 0,
        };
        let mut p = body + 8;
        while p + 4 <= end {
            let code = self.u16_at(p).unwrap_or(0);
            let len = usize::from(self.u16_at(p + 2).unwrap_or(0));
            let v = p + 4;
            if v + len > end {
                return Err(self.err(p, format!("option {code} overruns its block")));
            }
            let val = self.bytes.get(v..v + len).unwrap_or(&[]);
            match code {
                0 => break,
                2 => {
                    let s = std::str::from_utf8(val)
                        .map_err(|_| self.err(p, "if_name is not UTF-8"))?;
                    iface.name = Some(s.trim_end_matches('\0'));
                }
                9 => iface.tsresol = val.first().copied().unwrap_or(6),
                14 if len == 8 => {
                    let a = [
                        val[0], val[1], val[2], val[3], val[4], val[5], val[6], val[7],
                    ];
                    iface.tsoffset = if self.big_endian {
                        u64::from_be_bytes(a)
                    } else {
                        u64::from_le_bytes(a)
                    };
                }
                _ => {}
            }
            p = v + len.div_ceil(4) * 4;
        }
        self.interfaces.push(iface);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
