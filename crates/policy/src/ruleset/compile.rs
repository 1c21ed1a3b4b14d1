//! Rules compiled for matching: each condition in a flat form, address sets built once.

use super::View;
use super::{new_map, Map};
use crate::model::{
    addr_bits, prefix_mask, Action, AddrItem, AddrMatch, IcmpMatch, IfaceId, IpNet, Match, Policy,
    PortMatch, TcpFlagsMatch, ZoneId, ZoneSel,
};
use crate::prefix::PrefixMap;
use core::net::IpAddr;
use keepstate_engine::{Direction, Family};

/// Inline prefixes a rule checks one by one; more become a compiled set.
const INLINE_NETS: usize = 8;

const FAM_V4: u8 = 1;
const FAM_V6: u8 = 2;
const FAM_ALL: u8 = FAM_V4 | FAM_V6;

pub(super) fn family_bit(f: Family) -> u8 {
    match f {
        Family::V4 => FAM_V4,
        Family::V6 => FAM_V6,
    }
}

fn net_family_bit(n: &IpNet) -> u8 {
    family_bit(n.family())
}

/// A prefix as network bits and mask of its family's width.
#[derive(Clone, Copy, Debug)]
pub(super) struct NetC {
    bits: u128,
    mask: u128,
    v6: bool,
}

/// A range of positions in one of [`Tables`]' vectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span32 {
    start: u32,
    end: u32,
}

impl Span32 {
    fn of<T>(v: &[T], start: usize) -> Span32 {
        Span32 {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(v.len()).unwrap_or(u32::MAX),
        }
    }

    #[inline]
    fn slice<T>(self, v: &[T]) -> &[T] {
        let (Ok(s), Ok(e)) = (usize::try_from(self.start), usize::try_from(self.end)) else {
            return &[];
        };
        v.get(s..e).unwrap_or(&[])
    }
}

/// `start` as a position in one of [`Tables`]' vectors (compact, for [`CRule`]).
fn run_start<T>(v: &[T], start: usize) -> Option<u32> {
    u32::try_from(start).ok().filter(|_| start <= v.len())
}

#[inline]
fn run<T>(v: &[T], start: u32, len: usize) -> &[T] {
    let Ok(s) = usize::try_from(start) else {
        return &[];
    };
    v.get(s..s.saturating_add(len)).unwrap_or(&[])
}

/// Storage the compiled rules point into.
#[derive(Clone, Debug, Default)]
pub(super) struct Tables {
    nets: Vec<NetC>,
    /// Indices into `sets`.
    set_refs: Vec<u32>,
    sets: Vec<PrefixMap<()>>,
    /// Sorted, disjoint, non-adjacent inclusive ranges per rule.
    ports: Vec<(u16, u16)>,
    icmps: Vec<IcmpMatch>,
    /// Conditions few rules use, kept out of the rules' cache line.
    cold: Vec<Cold>,
}

impl Tables {
    /// Sets and the prefixes they hold, for summaries.
    pub fn sets(&self) -> &[PrefixMap<()>] {
        &self.sets
    }
}

/// Inline prefixes and named sets a rule checks one by one; an address match with more
/// becomes one compiled set.
const INLINE_SETS: usize = 4;

#[derive(Clone, Copy, Debug, Default)]
struct AddrM {
    nets_start: u32,
    sets_start: u32,
    nets_len: u8,
    sets_len: u8,
    /// No items: any address.
    any: bool,
    negate: bool,
}

impl AddrM {
    #[inline]
    fn matches(&self, a: IpAddr, t: &Tables) -> bool {
        if self.any {
            return !self.negate;
        }
        let (bits, width) = addr_bits(a);
        let v6 = width == 128;
        let hit = run(&t.nets, self.nets_start, usize::from(self.nets_len))
            .iter()
            .any(|n| n.v6 == v6 && bits & n.mask == n.bits)
            || run(&t.set_refs, self.sets_start, usize::from(self.sets_len))
                .iter()
                .any(|&s| {
                    usize::try_from(s)
                        .ok()
                        .and_then(|s| t.sets.get(s))
                        .is_some_and(|set| set.contains(a))
                });
        hit != self.negate
    }
}

/// A port match: any, or ranges (none of which may be empty: a port is still required).
#[derive(Clone, Copy, Debug, Default)]
struct PortM {
    start: u32,
    len: u16,
    any: bool,
}

impl PortM {
    const ANY: PortM = PortM {
        start: 0,
        len: 0,
        any: true,
    };

    #[inline]
    fn matches(self, port: Option<u16>, t: &Tables) -> bool {
        if self.any {
            return true;
        }
        let Some(p) = port else {
            return false;
        };
        let r = run(&t.ports, self.start, usize::from(self.len));
        let i = r.partition_point(|&(_, hi)| hi < p);
        r.get(i).is_some_and(|&(lo, _)| lo <= p)
    }
}

/// The conditions of a rule that few rules use.
#[derive(Clone, Debug)]
struct Cold {
    /// More protocols than fit inline: bit `p` set, protocol `p` matches.
    proto_bits: Option<[u64; 4]>,
    sport: PortM,
    icmp: Option<Span32>,
    tcp_flags: Option<TcpFlagsMatch>,
    dir: Option<Direction>,
    in_iface: Option<IfaceId>,
    out_iface: Option<IfaceId>,
}

impl Cold {
    #[inline]
    fn matches(&self, v: &View, t: &Tables) -> bool {
        if let Some(bits) = self.proto_bits {
            let word = bits.get(usize::from(v.proto >> 6)).copied().unwrap_or(0);
            if word & (1u64 << (v.proto & 63)) == 0 {
                return false;
            }
        }
        if self.dir.is_some() && v.dir != self.dir {
            return false;
        }
        if self.in_iface.is_some() && v.in_iface != self.in_iface {
            return false;
        }
        if self.out_iface.is_some() && v.out_iface != self.out_iface {
            return false;
        }
        if !self.sport.matches(v.sport, t) {
            return false;
        }
        if let Some(s) = self.icmp {
            let v6 = match v.proto {
                1 => false,
                58 => true,
                _ => return false,
            };
            let Some(ty) = v.icmp_type else {
                return false;
            };
            let hit = s.slice(&t.icmps).iter().any(|i| {
                i.v6 == v6
                    && i.ty == ty
                    && match i.code {
                        None => true,
                        Some(c) => v.icmp_code == Some(c),
                    }
            });
            if !hit {
                return false;
            }
        }
        if let Some(f) = self.tcp_flags {
            match v.tcp_flags {
                Some(flags) if v.proto == 6 && flags & f.mask == f.value => {}
                _ => return false,
            }
        }
        true
    }
}

/// Protocols a rule lists inline; more go to [`Cold::proto_bits`].
const INLINE_PROTOS: usize = 4;

/// One rule, compiled: what most rules use fits one cache line, the rest is in [`Cold`].
#[derive(Clone, Debug)]
#[repr(align(64))]
pub(super) struct CRule {
    families: u8,
    /// Bit `state as u8` set: the state matches.
    states: u8,
    /// Protocols in `proto`: 0 for any; more than [`INLINE_PROTOS`]: see the cold part.
    nproto: u8,
    proto: [u8; INLINE_PROTOS],
    in_zone: Option<ZoneId>,
    out_zone: Option<ZoneId>,
    dport: PortM,
    src: AddrM,
    dst: AddrM,
    pub action: Action,
    pub log: bool,
    /// Index into the ruleset's limiters, `u32::MAX` for none.
    limiter: u32,
    /// Index into [`Tables::cold`], `u32::MAX` for none.
    cold: u32,
}

impl CRule {
    #[inline]
    pub fn limiter(&self) -> Option<u32> {
        (self.limiter != u32::MAX).then_some(self.limiter)
    }

    /// Every condition but the rule's chain (the index only offers rules of the packet's
    /// chain) and its limit.
    #[inline]
    pub fn matches(&self, v: &View, t: &Tables) -> bool {
        if self.families & family_bit(v.family) == 0 || self.states & (1u8 << (v.state as u8)) == 0
        {
            return false;
        }
        let n = usize::from(self.nproto);
        if n > 0 && n <= INLINE_PROTOS && !self.proto.iter().take(n).any(|&p| p == v.proto) {
            return false;
        }
        if self.in_zone.is_some() && v.in_zone != self.in_zone {
            return false;
        }
        if self.out_zone.is_some() && v.out_zone != self.out_zone {
            return false;
        }
        if !self.dport.matches(v.dport, t) {
            return false;
        }
        if self.cold != u32::MAX {
            let cold = usize::try_from(self.cold).ok().and_then(|i| t.cold.get(i));
            if !cold.is_some_and(|c| c.matches(v, t)) {
                return false;
            }
        }
        self.src.matches(v.src, t) && self.dst.matches(v.dst, t)
    }
}

/// How a rule is found without scanning: the field whose value picks it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum KeyChoice {
    /// Exact destination ports (the packet's one port looks its rules up).
    Dport(Vec<u16>),
    /// Source prefixes, non-negated.
    Src(Vec<IpNet>),
    Dst(Vec<IpNet>),
    /// IP protocols.
    Proto(Vec<u8>),
    /// Offered to every packet of its chain and zones.
    Any,
}

/// Most ports a rule is indexed under; wider port matches are keyed by another field.
const KEY_MAX_PORTS: usize = 64;
/// Most prefixes a rule is indexed under.
const KEY_MAX_NETS: usize = 16;
const KEY_MAX_PROTOS: usize = 8;

/// A prefix as a hashable key: width, network bits, length.
pub(super) type NetKey = (u8, u128, u8);

pub(super) fn net_key(n: &IpNet) -> NetKey {
    let (_, width) = addr_bits(n.addr);
    (width, n.network_bits(), n.len.min(width))
}

/// The prefix with host bits cleared.
pub(super) fn normalized(n: &IpNet) -> IpNet {
    let (bits, width) = addr_bits(n.addr);
    let b = bits & prefix_mask(width, n.len);
    let addr = match n.addr {
        IpAddr::V4(_) => IpAddr::V4(u32::try_from(b).unwrap_or(0).into()),
        IpAddr::V6(_) => IpAddr::V6(b.into()),
    };
    IpNet {
        addr,
        len: n.len.min(width),
    }
}

fn normalize_ports(p: &PortMatch) -> Vec<(u16, u16)> {
    let mut r: Vec<(u16, u16)> = p.ranges.iter().copied().filter(|(a, b)| a <= b).collect();
    r.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        match out.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Ports of a port match, if there are few enough to index.
fn exact_ports(p: &PortMatch) -> Option<Vec<u16>> {
    if p.is_any() {
        return None;
    }
    let ranges = normalize_ports(p);
    let total: usize = ranges
        .iter()
        .map(|&(lo, hi)| usize::from(hi - lo) + 1)
        .sum();
    (total <= KEY_MAX_PORTS).then(|| ranges.iter().flat_map(|&(lo, hi)| lo..=hi).collect())
}

fn plain_nets(m: &AddrMatch) -> Option<Vec<IpNet>> {
    if m.negate || m.items.is_empty() || m.items.len() > KEY_MAX_NETS {
        return None;
    }
    m.items
        .iter()
        .map(|i| match i {
            // A /0 picks nothing out.
            AddrItem::Net(n) if n.len > 0 => Some(normalized(n)),
            _ => None,
        })
        .collect()
}

/// The protocols a match can match, if it names them (directly, or through ICMP types or
/// TCP flags).
fn key_protos(m: &Match) -> Option<Vec<u8>> {
    let mut p: Vec<u8> = if !m.proto.is_empty() {
        m.proto.clone()
    } else if !m.icmp.is_empty() {
        m.icmp.iter().map(|i| if i.v6 { 58 } else { 1 }).collect()
    } else if m.tcp_flags.is_some() {
        vec![6]
    } else {
        return None;
    };
    p.sort_unstable();
    p.dedup();
    (p.len() <= KEY_MAX_PROTOS).then_some(p)
}

/// Picks each rule's key: of the fields that can key it, the one whose most shared value is
/// shared by the fewest rules, so that a packet is offered few rules that then fail.
pub(super) fn choose_keys<'a>(matches: impl Iterator<Item = &'a Match> + Clone) -> Vec<KeyChoice> {
    let mut dports: Map<u16, u32> = new_map();
    let mut srcs: Map<NetKey, u32> = new_map();
    let mut dsts: Map<NetKey, u32> = new_map();
    let mut protos = [0u32; 256];
    for m in matches.clone() {
        for p in exact_ports(&m.dport).unwrap_or_default() {
            *dports.entry(p).or_default() += 1;
        }
        for n in plain_nets(&m.src_addr).unwrap_or_default() {
            *srcs.entry(net_key(&n)).or_default() += 1;
        }
        for n in plain_nets(&m.dst_addr).unwrap_or_default() {
            *dsts.entry(net_key(&n)).or_default() += 1;
        }
        for p in key_protos(m).unwrap_or_default() {
            if let Some(c) = protos.get_mut(usize::from(p)) {
                *c += 1;
            }
        }
    }
    let worst_net = |nets: &[IpNet], counts: &Map<NetKey, u32>| {
        nets.iter()
            .map(|n| counts.get(&net_key(n)).copied().unwrap_or(0))
            .max()
            .unwrap_or(u32::MAX)
    };
    matches
        .map(|m| {
            let mut best: (u32, KeyChoice) = (u32::MAX, KeyChoice::Any);
            let mut consider = |w: u32, k: KeyChoice| {
                if w < best.0 {
                    best = (w, k);
                }
            };
            if let Some(ps) = exact_ports(&m.dport) {
                let w = ps.iter().map(|p| dports.get(p).copied().unwrap_or(0)).max();
                consider(w.unwrap_or(u32::MAX), KeyChoice::Dport(ps));
            }
            if let Some(ns) = plain_nets(&m.src_addr) {
                consider(worst_net(&ns, &srcs), KeyChoice::Src(ns));
            }
            if let Some(ns) = plain_nets(&m.dst_addr) {
                consider(worst_net(&ns, &dsts), KeyChoice::Dst(ns));
            }
            if let Some(ps) = key_protos(m) {
                let w = ps
                    .iter()
                    .map(|&p| protos.get(usize::from(p)).copied().unwrap_or(0))
                    .max();
                consider(w.unwrap_or(u32::MAX), KeyChoice::Proto(ps));
            }
            best.1
        })
        .collect()
}

/// Builds [`CRule`]s into shared [`Tables`].
pub(super) struct Compiler<'p> {
    p: &'p Policy,
    pub tables: Tables,
    /// Compiled position of each named set, once a rule uses it.
    named: Vec<Option<u32>>,
    /// Anonymous sets (rules with many inline prefixes) by content.
    anon: Map<Vec<NetKey>, u32>,
}

/// What part of a [`Match`] applies (notrack rules see neither destination nor state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    Filter,
    Notrack,
}

impl<'p> Compiler<'p> {
    pub fn new(p: &'p Policy) -> Compiler<'p> {
        Compiler {
            p,
            tables: Tables::default(),
            named: vec![None; p.sets.len()],
            anon: new_map(),
        }
    }

    fn push_set(&mut self, set: PrefixMap<()>) -> u32 {
        self.tables.sets.push(set);
        u32::try_from(self.tables.sets.len() - 1).unwrap_or(u32::MAX)
    }

    fn named_set(&mut self, id: crate::model::SetId) -> Option<(u32, u8)> {
        let i = usize::try_from(id).ok()?;
        let set = self.p.sets.get(i)?;
        let fams = set.prefixes.iter().fold(0, |f, n| f | net_family_bit(n));
        if let Some(c) = self.named.get(i).copied().flatten() {
            return Some((c, fams));
        }
        let c = self.push_set(PrefixMap::new(set.prefixes.iter().map(|n| (*n, ()))));
        if let Some(slot) = self.named.get_mut(i) {
            *slot = Some(c);
        }
        Some((c, fams))
    }

    /// The address match and the families it allows.
    fn addr(&mut self, m: &AddrMatch) -> (AddrM, u8) {
        let mut a = AddrM {
            any: m.items.is_empty(),
            negate: m.negate,
            ..AddrM::default()
        };
        if a.any {
            return (a, FAM_ALL);
        }
        let inline: Vec<IpNet> = m
            .items
            .iter()
            .filter_map(|i| match i {
                AddrItem::Net(n) => Some(*n),
                AddrItem::Set(_) => None,
            })
            .collect();
        let mut set_ids: Vec<crate::model::SetId> = m
            .items
            .iter()
            .filter_map(|i| match i {
                AddrItem::Set(s) => Some(*s),
                AddrItem::Net(_) => None,
            })
            .collect();
        set_ids.sort_unstable();
        set_ids.dedup();
        let mut fams = inline.iter().fold(0, |f, n| f | net_family_bit(n));

        let mut refs: Vec<u32> = Vec::new();
        if inline.len() > INLINE_NETS || set_ids.len() > INLINE_SETS {
            // One set holding every prefix of the match, shared by identical matches.
            let mut key: Vec<NetKey> = inline.iter().map(net_key).collect();
            key.sort_unstable();
            key.dedup();
            // Named sets by id, tagged with a width no prefix has.
            key.extend(set_ids.iter().map(|&s| (0, u128::from(s), 0)));
            let p = self.p;
            let members = |s: &crate::model::SetId| {
                usize::try_from(*s)
                    .ok()
                    .and_then(|i| p.sets.get(i))
                    .map_or(&[][..], |set| &set.prefixes[..])
            };
            fams |= set_ids
                .iter()
                .flat_map(members)
                .fold(0, |f, n| f | net_family_bit(n));
            let id = match self.anon.get(&key) {
                Some(&id) => id,
                None => {
                    let all = inline.iter().chain(set_ids.iter().flat_map(members));
                    let id = self.push_set(PrefixMap::new(all.map(|n| (*n, ()))));
                    self.anon.insert(key, id);
                    id
                }
            };
            refs.push(id);
        } else {
            let start = self.tables.nets.len();
            self.tables.nets.extend(inline.iter().map(|n| {
                let (_, width) = addr_bits(n.addr);
                NetC {
                    bits: n.network_bits(),
                    mask: prefix_mask(width, n.len),
                    v6: width == 128,
                }
            }));
            a.nets_start = run_start(&self.tables.nets, start).unwrap_or(u32::MAX);
            a.nets_len = u8::try_from(inline.len()).unwrap_or(0);
            for id in &set_ids {
                // An unknown set is an empty one.
                if let Some((c, f)) = self.named_set(*id) {
                    refs.push(c);
                    fams |= f;
                }
            }
        }
        let start = self.tables.set_refs.len();
        a.sets_start = run_start(&self.tables.set_refs, start).unwrap_or(u32::MAX);
        a.sets_len = u8::try_from(refs.len()).unwrap_or(0);
        self.tables.set_refs.extend(refs);
        // Addresses of one family imply it (nftables' `ip saddr != ...` matches IPv4 only);
        // only empty sets leave the family open.
        (a, if fams == 0 { FAM_ALL } else { fams })
    }

    fn ports(&mut self, p: &PortMatch) -> PortM {
        if p.is_any() {
            return PortM::ANY;
        }
        let start = self.tables.ports.len();
        let ranges = normalize_ports(p);
        // Disjoint, non-adjacent ranges of 16-bit ports: at most 32,768.
        let len = u16::try_from(ranges.len()).unwrap_or(u16::MAX);
        self.tables.ports.extend(ranges);
        PortM {
            start: run_start(&self.tables.ports, start).unwrap_or(u32::MAX),
            len,
            any: false,
        }
    }

    pub fn rule(
        &mut self,
        m: &Match,
        scope: Scope,
        action: Action,
        log: bool,
        limiter: Option<u32>,
    ) -> CRule {
        let zone = |s: Option<ZoneSel>| match s {
            Some(ZoneSel::Zone(z)) => Some(z),
            Some(ZoneSel::Any) | None => None,
        };
        let filter = scope == Scope::Filter;

        let mut protos = m.proto.clone();
        protos.sort_unstable();
        protos.dedup();
        let mut proto = [0u8; INLINE_PROTOS];
        let mut proto_bits = None;
        let nproto = if protos.len() <= INLINE_PROTOS {
            for (slot, p) in proto.iter_mut().zip(&protos) {
                *slot = *p;
            }
            u8::try_from(protos.len()).unwrap_or(0)
        } else {
            let mut bits = [0u64; 4];
            for &p in &protos {
                if let Some(w) = bits.get_mut(usize::from(p >> 6)) {
                    *w |= 1u64 << (p & 63);
                }
            }
            proto_bits = Some(bits);
            u8::MAX
        };

        let (src, src_fams) = self.addr(&m.src_addr);
        let (dst, dst_fams) = self.addr(&m.dst_addr);
        let mut families = src_fams & dst_fams;
        if let Some(f) = m.family {
            families &= family_bit(f);
        }
        let icmp = if m.icmp.is_empty() {
            None
        } else {
            let start = self.tables.icmps.len();
            self.tables.icmps.extend(m.icmp.iter().copied());
            Some(Span32::of(&self.tables.icmps, start))
        };
        let cold = Cold {
            proto_bits,
            sport: self.ports(&m.sport),
            icmp,
            tcp_flags: m.tcp_flags,
            dir: m.ct_dir.filter(|_| filter),
            in_iface: m.in_iface,
            out_iface: m.out_iface.filter(|_| filter),
        };
        let needs_cold = cold.proto_bits.is_some()
            || !cold.sport.any
            || cold.icmp.is_some()
            || cold.tcp_flags.is_some()
            || cold.dir.is_some()
            || cold.in_iface.is_some()
            || cold.out_iface.is_some();
        let cold = if needs_cold {
            self.tables.cold.push(cold);
            u32::try_from(self.tables.cold.len() - 1).unwrap_or(u32::MAX)
        } else {
            u32::MAX
        };
        CRule {
            families,
            states: match m.ct_state.0 {
                s if s == 0 || !filter => u8::MAX,
                s => s,
            },
            nproto,
            proto,
            in_zone: zone(m.src),
            out_zone: zone(m.dest).filter(|_| filter),
            dport: self.ports(&m.dport),
            src,
            dst,
            action,
            log,
            limiter: limiter.unwrap_or(u32::MAX),
            cold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compiled_rule_is_one_cache_line() {
        assert_eq!(core::mem::size_of::<CRule>(), 64);
    }
}
