//! Rules that can never match because an earlier rule decides every packet they would.
//!
//! A rule is shadowed when an earlier terminal rule without a rate limit matches a superset
//! of it on every field. Each field is compared on its own, which is sound: when every
//! field's condition of the earlier rule contains the later one's, so does their
//! conjunction. Where containment is not certain (sets against prefixes, mixed negation)
//! the answer is "not contained", so a warning always means a dead rule.

use crate::model::{
    AddrItem, AddrMatch, IcmpMatch, IpNet, Match, Policy, PortMatch, PrefixSet, TcpFlagsMatch,
    ZoneSel,
};

use super::Cx;

/// Pairs of rules compared at most: the check is quadratic, and a generated policy with
/// hundreds of thousands of rules should still load in seconds. Past this, later rules are
/// not checked (a missing warning, never a wrong one).
const MAX_COMPARISONS: usize = 50_000_000;

pub(super) fn warn_shadowed(cx: &mut Cx, policy: &Policy) {
    let deciding: Vec<usize> = (0..policy.rules.len())
        .filter(|&i| {
            policy
                .rules
                .get(i)
                .is_some_and(|r| r.action.is_terminal() && r.limit.is_none())
        })
        .collect();
    let mut budget = MAX_COMPARISONS;
    for (j, later) in policy.rules.iter().enumerate() {
        let candidates = deciding.partition_point(|&i| i < j);
        let Some(left) = budget.checked_sub(candidates) else {
            return;
        };
        budget = left;
        let earlier = deciding
            .iter()
            .take(candidates)
            .filter_map(|&i| policy.rules.get(i).map(|r| (i, r)))
            .find(|(_, r)| covers(&r.m, &later.m, &policy.sets));
        if let Some((i, r)) = earlier {
            let verdict = match r.action {
                crate::model::Action::Accept => "accepts",
                crate::model::Action::Drop => "drops",
                _ => "rejects",
            };
            cx.warn_at(
                later.span,
                format!(
                    "{} can never match: {} (line {}) {verdict} every packet it would match",
                    quoted_label(policy, j),
                    quoted_label(policy, i),
                    r.span.line
                ),
            );
        }
    }
}

fn quoted_label(policy: &Policy, index: usize) -> String {
    match policy.rules.get(index).and_then(|r| r.name.as_deref()) {
        Some(n) => format!("rule `{n}`"),
        None => policy.rule_label(index),
    }
}

/// Whether every packet `b` matches is matched by `a`.
pub(crate) fn covers(a: &Match, b: &Match, sets: &[PrefixSet]) -> bool {
    zone_covers(a.src, b.src)
        && zone_covers(a.dest, b.dest)
        && opt_covers(a.in_iface, b.in_iface)
        && opt_covers(a.out_iface, b.out_iface)
        && opt_covers(a.family, b.family)
        && addr_covers(&a.src_addr, &b.src_addr, sets)
        && addr_covers(&a.dst_addr, &b.dst_addr, sets)
        && list_covers(&a.proto, &b.proto)
        && port_covers(&a.sport, &b.sport)
        && port_covers(&a.dport, &b.dport)
        && icmp_covers(&a.icmp, &b.icmp)
        && flags_cover(a.tcp_flags, b.tcp_flags)
        && (a.ct_state.0 == 0 || (b.ct_state.0 != 0 && b.ct_state.0 & !a.ct_state.0 == 0))
        && opt_covers(a.ct_dir, b.ct_dir)
}

/// `None` is the firewall itself, which `*` does not include.
fn zone_covers(a: Option<ZoneSel>, b: Option<ZoneSel>) -> bool {
    match (a, b) {
        (Some(ZoneSel::Any), Some(_)) => true,
        _ => a == b,
    }
}

/// `None` matches anything.
fn opt_covers<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
    a.is_none() || a == b
}

/// Empty matches anything.
fn list_covers<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    a.is_empty() || (!b.is_empty() && b.iter().all(|x| a.contains(x)))
}

fn port_covers(a: &PortMatch, b: &PortMatch) -> bool {
    if a.is_any() {
        return true;
    }
    if b.is_any() {
        return false;
    }
    let mut merged = a.ranges.clone();
    merged.sort_unstable();
    let mut joined: Vec<(u16, u16)> = Vec::with_capacity(merged.len());
    for (lo, hi) in merged {
        match joined.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => joined.push((lo, hi)),
        }
    }
    b.ranges
        .iter()
        .all(|&(lo, hi)| joined.iter().any(|&(l, h)| l <= lo && hi <= h))
}

fn icmp_covers(a: &[IcmpMatch], b: &[IcmpMatch]) -> bool {
    if a.is_empty() {
        return true;
    }
    !b.is_empty()
        && b.iter().all(|x| {
            a.iter()
                .any(|y| y.v6 == x.v6 && y.ty == x.ty && (y.code.is_none() || y.code == x.code))
        })
}

fn flags_cover(a: Option<TcpFlagsMatch>, b: Option<TcpFlagsMatch>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a.mask & !b.mask == 0 && b.value & a.mask == a.value,
    }
}

fn addr_covers(a: &AddrMatch, b: &AddrMatch, sets: &[PrefixSet]) -> bool {
    if a.is_any() {
        return true;
    }
    if b.is_any() || a.negate != b.negate {
        return false;
    }
    if a.negate {
        // Outside A contains outside B exactly when A is inside B.
        items_cover(&b.items, &a.items, sets)
    } else {
        items_cover(&a.items, &b.items, sets)
    }
}

/// Whether the union of `outer` surely contains every item of `inner`.
fn items_cover(outer: &[AddrItem], inner: &[AddrItem], sets: &[PrefixSet]) -> bool {
    inner.iter().all(|item| match item {
        // A set is only surely inside itself: its contents may be meant to change.
        AddrItem::Set(id) => outer.contains(&AddrItem::Set(*id)),
        AddrItem::Net(n) => outer.iter().any(|o| match o {
            AddrItem::Net(o) => net_covers(o, n),
            AddrItem::Set(id) => usize::try_from(*id)
                .ok()
                .and_then(|i| sets.get(i))
                .is_some_and(|s| s.prefixes.iter().any(|p| net_covers(p, n))),
        }),
    })
}

fn net_covers(a: &IpNet, b: &IpNet) -> bool {
    a.family() == b.family() && a.len <= b.len && a.contains(b.addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepstate_engine::CtState;

    fn net(s: &str) -> IpNet {
        let (a, l) = s.split_once('/').unwrap();
        IpNet::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
    }

    #[test]
    fn fields() {
        let any = Match {
            src: Some(ZoneSel::Any),
            ..Match::default()
        };
        let mut ssh = Match {
            src: Some(ZoneSel::Zone(0)),
            proto: vec![6],
            ..Match::default()
        };
        ssh.dport.ranges.push((22, 22));
        assert!(covers(&any, &ssh, &[]));
        assert!(!covers(&ssh, &any, &[]));
        let mut wide = ssh.clone();
        wide.dport.ranges = vec![(1, 21), (22, 1000)];
        wide.src = Some(ZoneSel::Any);
        assert!(covers(&wide, &ssh, &[]));
        let mut new_only = ssh.clone();
        new_only.ct_state = crate::model::StateSet::of(&[CtState::New]);
        assert!(covers(&ssh, &new_only, &[]));
        assert!(!covers(&new_only, &ssh, &[]));
    }

    #[test]
    fn addresses() {
        let wide = AddrMatch {
            items: vec![AddrItem::Net(net("10.0.0.0/8"))],
            negate: false,
        };
        let narrow = AddrMatch {
            items: vec![AddrItem::Net(net("10.1.0.0/16"))],
            negate: false,
        };
        assert!(addr_covers(&wide, &narrow, &[]));
        assert!(!addr_covers(&narrow, &wide, &[]));
        let not_narrow = AddrMatch {
            negate: true,
            ..narrow.clone()
        };
        let not_wide = AddrMatch {
            negate: true,
            ..wide.clone()
        };
        assert!(addr_covers(&not_narrow, &not_wide, &[]));
        assert!(!addr_covers(&not_wide, &not_narrow, &[]));
        let set = PrefixSet {
            name: "s".into(),
            prefixes: vec![net("10.0.0.0/8")],
            span: Default::default(),
        };
        let in_set = AddrMatch {
            items: vec![AddrItem::Set(0)],
            negate: false,
        };
        assert!(addr_covers(&in_set, &narrow, std::slice::from_ref(&set)));
        assert!(!addr_covers(&wide, &in_set, std::slice::from_ref(&set)));
    }

    #[test]
    fn flags() {
        let syn = TcpFlagsMatch {
            mask: 0x02,
            value: 0x02,
        };
        let syn_not_ack = TcpFlagsMatch {
            mask: 0x12,
            value: 0x02,
        };
        assert!(flags_cover(Some(syn), Some(syn_not_ack)));
        assert!(!flags_cover(Some(syn_not_ack), Some(syn)));
    }
}
