//! The firewall's own addresses, routing and interface lookup, compiled from a [`Policy`].
//!
//! Routing is a longest-prefix match ([`PrefixMap`]) over every interface's connected
//! prefixes and static routes, falling back to the default route of the address's family.
//! Everything is built once; lookups allocate nothing.

use crate::model::{IfaceId, IpNet, Policy, ZoneId};
use crate::prefix::PrefixMap;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Zone reported by [`Topology::zone_of`] for an interface id the policy does not have. The
/// ruleset treats any zone id it does not know as an unknown zone.
pub const NO_ZONE: ZoneId = ZoneId::MAX;

#[derive(Clone, Debug)]
pub struct Topology {
    /// Each prefix's interface, and whether it is connected (its addresses are on-link)
    /// rather than a static route through the interface's gateway.
    routes: PrefixMap<(IfaceId, bool)>,
    local: PrefixMap<()>,
    default_v4: Option<IfaceId>,
    default_v6: Option<IfaceId>,
    /// Sorted by ifindex; of duplicates the first interface wins.
    by_ifindex: Vec<(u32, IfaceId)>,
    /// Sorted by MAC; of duplicates the first interface wins.
    by_mac: Vec<([u8; 6], IfaceId)>,
    zones: Vec<ZoneId>,
    /// Per interface: its IPv4 and IPv6 gateway.
    gateways: Vec<(Option<IpAddr>, Option<IpAddr>)>,
}

impl Topology {
    pub fn new(p: &Policy) -> Topology {
        let ifaces: Vec<(IfaceId, &crate::model::Interface)> = p
            .interfaces
            .iter()
            .enumerate()
            .filter_map(|(i, f)| IfaceId::try_from(i).ok().map(|id| (id, f)))
            .collect();

        // Connected prefixes first, so that a static route naming the same prefix as another
        // interface's connected network does not take it over.
        let connected = ifaces
            .iter()
            .flat_map(|&(id, f)| f.addrs.iter().map(move |n| (*n, (id, true))));
        let statics = ifaces
            .iter()
            .flat_map(|&(id, f)| f.routes.iter().map(move |n| (*n, (id, false))));
        let routes = PrefixMap::new(connected.chain(statics));

        let mut local: Vec<IpNet> = Vec::new();
        for (_, f) in &ifaces {
            for n in &f.addrs {
                local.push(IpNet::host(n.addr));
                if let IpAddr::V4(a) = n.addr {
                    // The directed broadcast of the connected network; /31 and /32 have none.
                    if n.len <= 30 {
                        let host_mask = u32::MAX.checked_shr(u32::from(n.len)).unwrap_or(0);
                        let b = Ipv4Addr::from(u32::from(a) | host_mask);
                        local.push(IpNet::host(IpAddr::V4(b)));
                    }
                }
            }
        }
        let fixed: [(IpAddr, u8); 5] = [
            (IpAddr::V4(Ipv4Addr::BROADCAST), 32),
            (IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0)), 4),
            (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
            (IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)), 8),
            (IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        ];
        local.extend(fixed.iter().filter_map(|&(a, l)| IpNet::new(a, l)));
        let local = PrefixMap::new(local.into_iter().map(|n| (n, ())));

        let default_for = |v6: bool| {
            let defaults = || ifaces.iter().filter(|(_, f)| f.default_route);
            defaults()
                .find(|(_, f)| {
                    f.addrs
                        .iter()
                        .any(|n| matches!(n.addr, IpAddr::V6(_)) == v6)
                })
                .or_else(|| defaults().next())
                .map(|&(id, _)| id)
        };

        let mut by_ifindex: Vec<(u32, IfaceId)> = ifaces
            .iter()
            .filter_map(|&(id, f)| f.ifindex.map(|x| (x, id)))
            .collect();
        by_ifindex.sort_by_key(|&(x, _)| x);
        by_ifindex.dedup_by_key(|&mut (x, _)| x);
        let mut by_mac: Vec<([u8; 6], IfaceId)> = ifaces
            .iter()
            .filter_map(|&(id, f)| f.mac.map(|m| (m, id)))
            .collect();
        by_mac.sort_by_key(|&(m, _)| m);
        by_mac.dedup_by_key(|&mut (m, _)| m);

        Topology {
            routes,
            local,
            default_v4: default_for(false),
            default_v6: default_for(true),
            by_ifindex,
            by_mac,
            zones: ifaces.iter().map(|(_, f)| f.zone).collect(),
            gateways: ifaces
                .iter()
                .map(|(_, f)| {
                    let of = |v4: bool| f.gateway.iter().copied().find(|g| g.is_ipv4() == v4);
                    (of(true), of(false))
                })
                .collect(),
        }
    }

    /// Whether a packet to `a` is for the firewall itself (the input chain): one of its
    /// interface addresses, the directed broadcast of a connected IPv4 network, the limited
    /// broadcast 255.255.255.255, multicast (224.0.0.0/4, ff00::/8) or loopback (127.0.0.0/8,
    /// ::1), as a router treats them.
    #[inline]
    pub fn is_local(&self, a: IpAddr) -> bool {
        self.local.contains(a)
    }

    /// The interface a packet to `dst` leaves through: the longest connected prefix or static
    /// route containing it, else the default route of its family (an interface marked
    /// `default_route` with an address of that family, else any `default_route` interface).
    #[inline]
    pub fn route(&self, dst: IpAddr) -> Option<IfaceId> {
        match self.routes.get(dst) {
            Some((i, _)) => Some(i),
            None => self.default_of(dst),
        }
    }

    fn default_of(&self, dst: IpAddr) -> Option<IfaceId> {
        match dst {
            IpAddr::V4(_) => self.default_v4,
            IpAddr::V6(_) => self.default_v6,
        }
    }

    /// Where a packet to `dst` goes next, as a router forwards it: the egress interface (as
    /// [`Topology::route`] picks it) and the address whose link-layer address the frame is
    /// sent to. On a connected network that is `dst` itself; through a static route or the
    /// default route it is the interface's gateway of `dst`'s family, or `dst` itself when
    /// the interface has none (the route is on-link, as a point-to-point uplink's is).
    #[inline]
    pub fn next_hop(&self, dst: IpAddr) -> Option<(IfaceId, IpAddr)> {
        let (iface, connected) = match self.routes.get(dst) {
            Some(r) => r,
            None => (self.default_of(dst)?, false),
        };
        if connected {
            return Some((iface, dst));
        }
        let gw = self.gateway(iface, dst.is_ipv4());
        Some((iface, gw.unwrap_or(dst)))
    }

    /// The interface's gateway of one family.
    pub fn gateway(&self, iface: IfaceId, v4: bool) -> Option<IpAddr> {
        let &(g4, g6) = self.gateways.get(usize::from(iface))?;
        if v4 {
            g4
        } else {
            g6
        }
    }

    pub fn iface_by_ifindex(&self, ifindex: u32) -> Option<IfaceId> {
        let i = self
            .by_ifindex
            .binary_search_by_key(&ifindex, |&(x, _)| x)
            .ok()?;
        self.by_ifindex.get(i).map(|&(_, id)| id)
    }

    pub fn iface_by_mac(&self, mac: [u8; 6]) -> Option<IfaceId> {
        let i = self.by_mac.binary_search_by_key(&mac, |&(m, _)| m).ok()?;
        self.by_mac.get(i).map(|&(_, id)| id)
    }

    /// The interface's zone; [`NO_ZONE`] for an id the policy does not have.
    #[inline]
    pub fn zone_of(&self, iface: IfaceId) -> ZoneId {
        self.zones
            .get(usize::from(iface))
            .copied()
            .unwrap_or(NO_ZONE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Interface, Span};

    fn net(s: &str) -> IpNet {
        let (a, l) = s.split_once('/').unwrap();
        IpNet::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
    }

    fn iface(
        name: &str,
        zone: ZoneId,
        addrs: &[&str],
        routes: &[&str],
        default: bool,
    ) -> Interface {
        Interface {
            name: name.into(),
            zone,
            addrs: addrs.iter().map(|s| net(s)).collect(),
            routes: routes.iter().map(|s| net(s)).collect(),
            default_route: default,
            gateway: Vec::new(),
            ifindex: None,
            mac: None,
            span: Span::default(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn zone_of_unknown_iface() {
        let p = Policy {
            interfaces: vec![iface("lan", 3, &[], &[], false)],
            ..Policy::default()
        };
        let t = Topology::new(&p);
        assert_eq!(t.zone_of(0), 3);
        assert_eq!(t.zone_of(1), NO_ZONE);
        assert_eq!(t.route(ip("1.2.3.4")), None);
        assert!(!t.is_local(ip("1.2.3.4")));
        assert_eq!(t.next_hop(ip("1.2.3.4")), None);
    }

    #[test]
    fn next_hop_connected_static_default_and_on_link() {
        let mut wan = iface(
            "wan",
            1,
            &["203.0.113.2/24", "2001:db8:fffe::2/64"],
            &["198.18.0.0/15"],
            true,
        );
        wan.gateway = vec![ip("203.0.113.1"), ip("fe80::1")];
        let lan = iface(
            "lan",
            0,
            &["192.168.1.1/24"],
            &["10.0.0.0/8", "2001:db8:2::/48"],
            false,
        );
        let p = Policy {
            interfaces: vec![lan, wan],
            ..Policy::default()
        };
        let t = Topology::new(&p);
        // Connected: the destination itself.
        assert_eq!(t.next_hop(ip("192.168.1.7")), Some((0, ip("192.168.1.7"))));
        assert_eq!(t.next_hop(ip("203.0.113.9")), Some((1, ip("203.0.113.9"))));
        assert_eq!(
            t.next_hop(ip("2001:db8:fffe::9")),
            Some((1, ip("2001:db8:fffe::9")))
        );
        // Default route: the gateway of the family.
        assert_eq!(t.next_hop(ip("8.8.8.8")), Some((1, ip("203.0.113.1"))));
        assert_eq!(t.next_hop(ip("2001:db8:9::1")), Some((1, ip("fe80::1"))));
        // A static route through the uplink uses its gateway too.
        assert_eq!(t.next_hop(ip("198.19.0.1")), Some((1, ip("203.0.113.1"))));
        // A static route through an interface without a gateway is on-link.
        assert_eq!(t.next_hop(ip("10.1.2.3")), Some((0, ip("10.1.2.3"))));
        assert_eq!(
            t.next_hop(ip("2001:db8:2::5")),
            Some((0, ip("2001:db8:2::5")))
        );
        assert_eq!(t.route(ip("8.8.8.8")), Some(1));
    }
}
