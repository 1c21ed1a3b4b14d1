//! The rule index: which rules a packet needs to be checked against, in file order, without
//! scanning the rest.
//!
//! Two levels:
//!
//! 1. **Chain and zone pair.** Each chain (input, output, forward) has a small table from
//!    (ingress zone class, egress zone class) to a [`Group`]. A zone gets a class of its own
//!    when some rule of the chain names it; every other zone, and an unknown zone, share
//!    class 0, which only holds rules matching any zone (`"*"`). A group holds every rule
//!    that can match its zone pair (rules for `"*"` in every group, file order kept); groups
//!    with the same rules are shared.
//! 2. **Key field.** Within a group each rule is filed under one field that picks it out
//!    ([`KeyChoice`]): its exact destination ports, its source or destination prefixes, or
//!    its protocols, whichever value is shared by the fewest rules; rules with none of these
//!    (or only wide ones) are offered to every packet of the group. A packet looks up its
//!    destination port (an index on the high byte, then a short binary search), its source
//!    and destination addresses (longest-prefix match over the group's prefixes, whose lists
//!    include the rules of every enclosing prefix) and its protocol (a table), and walks the
//!    at most five sorted lists merged in rule order, checking each rule fully. The first
//!    terminal match ends the walk, so the order of the file is kept exactly. A list of one
//!    rule (the common case) is stored inline, saving a memory access.
//!
//! So a packet is checked against the rules that share one of its field values, not against
//! the whole chain: the cost grows with the logarithm of the number of keys, not with the
//! number of rules. What the index cannot narrow is rules that differ only in fields it does
//! not key (state, direction, interface, ICMP type, TCP flags, port ranges wider than 64
//! ports, negated addresses, named sets): those are checked one by one, as are rules that
//! share their key value. A named set is one lookup ([`PrefixMap`]) however large it is.
//!
//! Memory is bounded: a zone partition whose lists would exceed [`PARTITION_BUDGET`] times
//! the chain's rules falls back to one group per chain (the compiled rules check zones
//! themselves, so this changes speed, not results), and prefixes whose enclosing-rule lists
//! would blow up are demoted to the group's unkeyed list.

use super::compile::{net_key, CRule, KeyChoice, NetKey, Tables};
use super::{new_map, Chain, Map, View};
use crate::model::{IpNet, ZoneId};
use crate::prefix::{parents, PrefixMap};
use std::collections::BTreeMap;

/// Most rule references the zone partition of one chain may hold, as a multiple of the
/// chain's rules (plus a constant); past it the chain gets one group.
const PARTITION_BUDGET: usize = 64;

/// Rule references a group's prefix lists may hold, as a multiple of the prefixes filed.
const PREFIX_BUDGET: usize = 8;

/// A list of rules: a single rule inline (most lists), or a run of the group's `ids`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    /// The rule when `len` is 1, else where the run starts.
    data: u32,
    len: u32,
}

impl Entry {
    fn new(list: &[u32], ids: &mut Vec<u32>) -> Entry {
        if let [one] = list {
            return Entry { data: *one, len: 1 };
        }
        let start = ids.len();
        ids.extend_from_slice(list);
        Entry {
            data: u32::try_from(start).unwrap_or(u32::MAX),
            len: u32::try_from(list.len()).unwrap_or(0),
        }
    }

    #[inline]
    fn slice<'a>(&'a self, ids: &'a [u32]) -> &'a [u32] {
        if self.len == 1 {
            return core::slice::from_ref(&self.data);
        }
        let (Ok(s), Ok(n)) = (usize::try_from(self.data), usize::try_from(self.len)) else {
            return &[];
        };
        ids.get(s..s.saturating_add(n)).unwrap_or(&[])
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct PortEntry {
    port: u16,
    list: Entry,
}

/// Rule lists by destination port: entries sorted by port, found through an index on the
/// port's high byte and a short binary search.
#[derive(Clone, Debug, Default)]
struct PortLists {
    /// `index[h]`: the first entry whose port's high byte is `h` or more (257 entries, or
    /// none when there are no entries).
    index: Vec<u32>,
    entries: Vec<PortEntry>,
}

impl PortLists {
    fn build(m: BTreeMap<u16, Vec<u32>>, ids: &mut Vec<u32>) -> PortLists {
        if m.is_empty() {
            return PortLists::default();
        }
        let entries: Vec<PortEntry> = m
            .iter()
            .map(|(&port, list)| PortEntry {
                port,
                list: Entry::new(list, ids),
            })
            .collect();
        let mut index = Vec::with_capacity(257);
        let mut i = 0;
        for h in 0..=256usize {
            while entries.get(i).is_some_and(|e| usize::from(e.port >> 8) < h) {
                i += 1;
            }
            index.push(u32::try_from(i).unwrap_or(u32::MAX));
        }
        PortLists { index, entries }
    }

    #[inline]
    fn get<'a>(&'a self, port: u16, ids: &'a [u32]) -> &'a [u32] {
        let h = usize::from(port >> 8);
        let (Some(&lo), Some(&hi)) = (self.index.get(h), self.index.get(h + 1)) else {
            return &[];
        };
        let (Ok(lo), Ok(hi)) = (usize::try_from(lo), usize::try_from(hi)) else {
            return &[];
        };
        let Some(run) = self.entries.get(lo..hi) else {
            return &[];
        };
        match run.binary_search_by_key(&port, |e| e.port) {
            Ok(i) => run.get(i).map_or(&[], |e| e.list.slice(ids)),
            Err(_) => &[],
        }
    }
}

/// Rules filed under prefixes: the longest prefix containing the address gives the rules of
/// that prefix and of every prefix enclosing it.
#[derive(Clone, Debug, Default)]
struct AddrIndex {
    map: PrefixMap<Entry>,
    refs: usize,
}

impl AddrIndex {
    /// Files `entries` (prefix, rule; rules ascending). Rules of prefixes that would make the
    /// enclosing lists too long are returned instead, for the unkeyed list.
    fn build(entries: Vec<(IpNet, u32)>, ids: &mut Vec<u32>) -> (AddrIndex, Vec<u32>) {
        if entries.is_empty() {
            return (AddrIndex::default(), Vec::new());
        }
        let budget = entries.len().saturating_mul(PREFIX_BUDGET) + 1024;
        let mut by_net: Map<NetKey, usize> = new_map();
        let mut nets: Vec<IpNet> = Vec::new();
        let mut own: Vec<Vec<u32>> = Vec::new();
        for (n, rule) in entries {
            let i = *by_net.entry(net_key(&n)).or_insert_with(|| {
                nets.push(n);
                own.push(Vec::new());
                nets.len() - 1
            });
            if let Some(l) = own.get_mut(i) {
                if l.last() != Some(&rule) {
                    l.push(rule);
                }
            }
        }
        let parent = parents(&nets);
        // Shorter first: a prefix's parent is always strictly shorter.
        let mut order: Vec<usize> = (0..nets.len()).collect();
        order.sort_by_key(|&i| nets.get(i).map_or(0, |n| n.len));

        // Each prefix's rules appear in its own list and its descendants': cost = own rules x
        // (descendants + 1). Demote the costliest prefixes until the total fits.
        let mut desc = vec![0usize; nets.len()];
        for i in 0..nets.len() {
            let mut p = parent.get(i).copied().flatten();
            while let Some(q) = p {
                if let Some(d) = desc.get_mut(q) {
                    *d += 1;
                }
                p = parent.get(q).copied().flatten();
            }
        }
        let cost: Vec<usize> = own
            .iter()
            .zip(&desc)
            .map(|(o, d)| o.len().saturating_mul(d + 1))
            .collect();
        let mut total: usize = cost.iter().sum();
        let mut demoted: Vec<u32> = Vec::new();
        if total > budget {
            let mut by_cost: Vec<usize> = (0..nets.len()).collect();
            by_cost.sort_by_key(|&i| core::cmp::Reverse(cost.get(i).copied().unwrap_or(0)));
            for i in by_cost {
                if total <= budget {
                    break;
                }
                total -= cost.get(i).copied().unwrap_or(0);
                if let Some(l) = own.get_mut(i) {
                    demoted.append(l);
                }
            }
        }

        let mut full: Vec<Vec<u32>> = vec![Vec::new(); nets.len()];
        for &i in &order {
            let up = parent
                .get(i)
                .copied()
                .flatten()
                .and_then(|p| full.get(p))
                .cloned()
                .unwrap_or_default();
            let mine = own.get(i).map_or(&[][..], Vec::as_slice);
            if let Some(f) = full.get_mut(i) {
                *f = merge(&up, mine);
            }
        }
        let map = PrefixMap::new(
            nets.iter()
                .zip(&full)
                .map(|(n, f)| (*n, Entry::new(f, ids))),
        );
        demoted.sort_unstable();
        demoted.dedup();
        let refs = full.iter().map(Vec::len).sum();
        (AddrIndex { map, refs }, demoted)
    }

    #[inline(always)]
    fn get<'a>(&'a self, a: core::net::IpAddr, ids: &'a [u32]) -> &'a [u32] {
        if self.map.is_empty() {
            return &[];
        }
        self.map.get_ref(a).map_or(&[], |e| e.slice(ids))
    }
}

/// Two ascending lists merged, duplicates once.
fn merge(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    loop {
        let x = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x < y => {
                i += 1;
                x
            }
            (Some(&x), Some(&y)) if y < x => {
                j += 1;
                y
            }
            (Some(&x), Some(_)) => {
                i += 1;
                j += 1;
                x
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, Some(&y)) => {
                j += 1;
                y
            }
            (None, None) => break,
        };
        out.push(x);
    }
    out
}

/// The rules one zone pair of one chain can match, indexed by key field.
#[derive(Clone, Debug, Default)]
pub(super) struct Group {
    ids: Vec<u32>,
    dport: PortLists,
    /// By protocol number (256 entries, or none).
    proto: Vec<Entry>,
    src: AddrIndex,
    dst: AddrIndex,
    any: Entry,
    /// Rule references across all lists, for summaries.
    refs: usize,
}

impl Group {
    fn build(rules: &[u32], keys: &[KeyChoice]) -> Group {
        let mut dport: BTreeMap<u16, Vec<u32>> = BTreeMap::new();
        let mut proto: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
        let mut src: Vec<(IpNet, u32)> = Vec::new();
        let mut dst: Vec<(IpNet, u32)> = Vec::new();
        let mut any: Vec<u32> = Vec::new();
        for &r in rules {
            let key = usize::try_from(r).ok().and_then(|i| keys.get(i));
            match key {
                Some(KeyChoice::Dport(ps)) => {
                    for &p in ps {
                        dport.entry(p).or_default().push(r);
                    }
                }
                Some(KeyChoice::Proto(ps)) => {
                    for &p in ps {
                        proto.entry(p).or_default().push(r);
                    }
                }
                Some(KeyChoice::Src(ns)) => src.extend(ns.iter().map(|n| (*n, r))),
                Some(KeyChoice::Dst(ns)) => dst.extend(ns.iter().map(|n| (*n, r))),
                Some(KeyChoice::Any) | None => any.push(r),
            }
        }
        let mut ids = Vec::new();
        let dport = PortLists::build(dport, &mut ids);
        let proto = if proto.is_empty() {
            Vec::new()
        } else {
            (0..=255u8)
                .map(|p| Entry::new(proto.get(&p).map_or(&[][..], Vec::as_slice), &mut ids))
                .collect()
        };
        let (src, d1) = AddrIndex::build(src, &mut ids);
        let (dst, d2) = AddrIndex::build(dst, &mut ids);
        let any = Entry::new(&merge(&merge(&any, &d1), &d2), &mut ids);
        let listed = |e: &Entry| usize::try_from(e.len).unwrap_or(0);
        let refs = dport.entries.iter().map(|e| listed(&e.list)).sum::<usize>()
            + proto.iter().map(listed).sum::<usize>()
            + src.refs
            + dst.refs
            + listed(&any);
        ids.shrink_to_fit();
        Group {
            ids,
            dport,
            proto,
            src,
            dst,
            any,
            refs,
        }
    }

    /// The sorted candidate lists for a packet.
    #[inline]
    fn candidates(&self, v: &View) -> [&[u32]; 5] {
        let ids = &self.ids[..];
        [
            match v.dport {
                Some(p) => self.dport.get(p, ids),
                None => &[],
            },
            self.src.get(v.src, ids),
            self.dst.get(v.dst, ids),
            self.proto
                .get(usize::from(v.proto))
                .map_or(&[], |e| e.slice(ids)),
            self.any.slice(ids),
        ]
    }

    /// Rule references held, for summaries.
    fn size(&self) -> usize {
        self.refs
    }
}

/// One chain's zone partition.
#[derive(Clone, Debug, Default)]
struct ChainTable {
    /// Class of each zone id on the ingress side (0: no rule names it).
    in_class: Vec<u16>,
    out_class: Vec<u16>,
    n_out: usize,
    /// Group of each (ingress class, egress class).
    cells: Vec<u32>,
}

impl ChainTable {
    #[inline]
    fn group(&self, in_zone: Option<ZoneId>, out_zone: Option<ZoneId>) -> usize {
        let class = |t: &[u16], z: Option<ZoneId>| {
            z.and_then(|z| t.get(usize::from(z)))
                .map_or(0, |&c| usize::from(c))
        };
        let i = class(&self.in_class, in_zone) * self.n_out + class(&self.out_class, out_zone);
        self.cells
            .get(i)
            .and_then(|&g| usize::try_from(g).ok())
            .unwrap_or(usize::MAX)
    }
}

/// What a rule asks of the zones, for partitioning: `None` is any zone.
#[derive(Clone, Copy, Debug)]
pub(super) struct Placement {
    pub chain: Chain,
    pub in_zone: Option<ZoneId>,
    pub out_zone: Option<ZoneId>,
}

/// Compiled rules with their index.
#[derive(Clone, Debug, Default)]
pub(super) struct Classifier {
    pub rules: Vec<CRule>,
    pub tables: Tables,
    groups: Vec<Group>,
    /// Input, output, forward.
    chains: [ChainTable; 3],
}

fn chain_slot(c: Chain) -> usize {
    match c {
        Chain::Input => 0,
        Chain::Output => 1,
        Chain::Forward => 2,
    }
}

impl Classifier {
    /// `place[i]` says where rule `i` goes (`None`: nowhere, it can never match).
    pub fn build(
        rules: Vec<CRule>,
        tables: Tables,
        place: &[Option<Placement>],
        keys: &[KeyChoice],
        zones: usize,
    ) -> Classifier {
        let mut groups: Vec<Group> = Vec::new();
        let mut by_content: Map<Vec<u32>, u32> = new_map();
        let mut chains: [ChainTable; 3] = Default::default();
        for chain in [Chain::Input, Chain::Output, Chain::Forward] {
            let members: Vec<(u32, Placement)> = place
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    let p = (*p)?;
                    let i = u32::try_from(i).ok()?;
                    // A rule naming a zone the policy lacks can never match.
                    (p.chain == chain && known(p.in_zone, zones) && known(p.out_zone, zones))
                        .then_some((i, p))
                })
                .collect();
            let table = partition(&members, zones, |list| {
                if let Some(&g) = by_content.get(list) {
                    return g;
                }
                groups.push(Group::build(list, keys));
                let g = u32::try_from(groups.len() - 1).unwrap_or(u32::MAX);
                by_content.insert(list.to_vec(), g);
                g
            });
            if let Some(slot) = chains.get_mut(chain_slot(chain)) {
                *slot = table;
            }
        }
        Classifier {
            rules,
            tables,
            groups,
            chains,
        }
    }

    /// Calls `f` with each rule of the packet's chain and zones that matches it, in rule
    /// order, until `f` returns a result. Limits are `f`'s to check.
    #[inline]
    pub fn scan<R>(
        &self,
        chain: Chain,
        v: &View,
        mut f: impl FnMut(u32, &CRule) -> Option<R>,
    ) -> Option<R> {
        let table = self.chains.get(chain_slot(chain))?;
        let group = self.groups.get(table.group(v.in_zone, v.out_zone))?;
        let mut check = |id: u32| {
            let rule = usize::try_from(id).ok().and_then(|i| self.rules.get(i))?;
            if rule.matches(v, &self.tables) {
                f(id, rule)
            } else {
                None
            }
        };

        // The non-empty candidate lists; usually none or one.
        let mut heads: [&[u32]; 5] = [&[]; 5];
        let mut n = 0;
        for list in group.candidates(v) {
            if !list.is_empty() {
                if let Some(h) = heads.get_mut(n) {
                    *h = list;
                    n += 1;
                }
            }
        }
        if n <= 1 {
            return heads[0].iter().find_map(|&id| check(id));
        }
        let heads = heads.get_mut(..n)?;
        let mut prev: Option<u32> = None;
        loop {
            let mut best = u32::MAX;
            let mut which = usize::MAX;
            for (i, h) in heads.iter().enumerate() {
                if let Some(&x) = h.first() {
                    if x < best {
                        best = x;
                        which = i;
                    }
                }
            }
            let head = heads.get_mut(which)?;
            *head = head.get(1..).unwrap_or(&[]);
            // A rule filed under two enclosing prefixes can come from two lists.
            if prev == Some(best) {
                continue;
            }
            prev = Some(best);
            if let Some(r) = check(best) {
                return Some(r);
            }
        }
    }

    /// (distinct groups, rule references across them).
    pub fn size(&self) -> (usize, usize) {
        (self.groups.len(), self.groups.iter().map(Group::size).sum())
    }
}

/// Whether a rule's zone (`None`: any) is one the policy has.
fn known(z: Option<ZoneId>, zones: usize) -> bool {
    match z {
        None => true,
        Some(z) => usize::from(z) < zones,
    }
}

/// Builds one chain's zone table; `group` turns a rule list into a group id.
fn partition(
    members: &[(u32, Placement)],
    zones: usize,
    mut group: impl FnMut(&[u32]) -> u32,
) -> ChainTable {
    let classes = |side: fn(&Placement) -> Option<ZoneId>| {
        let mut named: Vec<ZoneId> = members.iter().filter_map(|(_, p)| side(p)).collect();
        named.sort_unstable();
        named.dedup();
        let mut class = vec![0u16; zones];
        for (k, z) in named.iter().enumerate() {
            if let (Some(c), Ok(k)) = (class.get_mut(usize::from(*z)), u16::try_from(k + 1)) {
                *c = k;
            }
        }
        (class, named)
    };
    let (in_class, in_named) = classes(|p| p.in_zone);
    let (out_class, out_named) = classes(|p| p.out_zone);
    let n_in = in_named.len() + 1;
    let n_out = out_named.len() + 1;

    // Rule references the full partition would hold: each rule sits in every class of a
    // side it leaves open.
    let span = |z: Option<ZoneId>, n: usize| if z.is_some() { 1 } else { n };
    let total: usize = members
        .iter()
        .map(|(_, p)| span(p.in_zone, n_in).saturating_mul(span(p.out_zone, n_out)))
        .fold(0usize, usize::saturating_add);
    let budget = members
        .len()
        .saturating_mul(PARTITION_BUDGET)
        .saturating_add(1 << 16);
    let cells_ok = n_in.saturating_mul(n_out) <= 1 << 16;

    if total > budget || !cells_ok {
        // One group for the chain; the rules check their zones themselves.
        let all: Vec<u32> = members.iter().map(|&(i, _)| i).collect();
        return ChainTable {
            in_class: vec![0; zones],
            out_class: vec![0; zones],
            n_out: 1,
            cells: vec![group(&all)],
        };
    }

    // Each cell merges four lists: rules for any zone on both sides, for its ingress class
    // only, for its egress class only, and for both.
    let class_of = |t: &[u16], z: ZoneId| t.get(usize::from(z)).map_or(0, |&c| usize::from(c));
    let mut both_any: Vec<u32> = Vec::new();
    let mut in_only: Vec<Vec<u32>> = vec![Vec::new(); n_in];
    let mut out_only: Vec<Vec<u32>> = vec![Vec::new(); n_out];
    let mut pair: BTreeMap<(usize, usize), Vec<u32>> = BTreeMap::new();
    for &(i, p) in members {
        let list = match (p.in_zone, p.out_zone) {
            (None, None) => Some(&mut both_any),
            (Some(z), None) => in_only.get_mut(class_of(&in_class, z)),
            (None, Some(z)) => out_only.get_mut(class_of(&out_class, z)),
            (Some(a), Some(b)) => Some(
                pair.entry((class_of(&in_class, a), class_of(&out_class, b)))
                    .or_default(),
            ),
        };
        if let Some(l) = list {
            l.push(i);
        }
    }
    let none: Vec<u32> = Vec::new();
    let mut cells = Vec::with_capacity(n_in * n_out);
    for ci in 0..n_in {
        for co in 0..n_out {
            let a = merge(&both_any, in_only.get(ci).unwrap_or(&none));
            let b = merge(
                out_only.get(co).unwrap_or(&none),
                pair.get(&(ci, co)).unwrap_or(&none),
            );
            cells.push(group(&merge(&a, &b)));
        }
    }
    ChainTable {
        in_class,
        out_class,
        n_out,
        cells,
    }
}
