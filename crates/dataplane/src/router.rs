//! The forwarding core: a router around the [`Firewall`], sans-IO.
//!
//! The daemon hands over each Ethernet frame received on a port with the time
//! ([`Router::handle`]) and calls [`Router::tick`] every ~100 ms; what the router sends is
//! appended to an [`Out`]. Nothing here reads a clock, makes a syscall or starts a thread, so
//! tests drive it exactly as the daemon does.
//!
//! # What a frame goes through
//!
//! 1. **Link layer.** Untagged Ethernet only: a frame with an 802.1Q or 802.1ad tag is
//!    refused (`not-for-us`); VLANs are the daemon's to split into ports (one Linux VLAN
//!    device per port). Ports are promiscuous, so a frame is taken only when addressed to
//!    the port's MAC, to broadcast, or to a group the router listens to: IPv6 all-nodes
//!    (`33:33:00:00:00:01`), all-routers (`…:02`) and the solicited-node groups of the port's
//!    addresses. Anything else, frames from a group address, and ethertypes other than IPv4,
//!    IPv6 and ARP are `not-for-us`.
//! 2. **ARP and neighbour discovery** are handled by the router itself, before the firewall,
//!    as the kernel's neighbour code does for ARP: they resolve addresses on one link (ND's
//!    hop limit of 255 proves it was not forwarded), the firewall treats ND as untracked
//!    anyway, and its topology does not know the link-local addresses the router derives
//!    from port MACs. A policy therefore cannot block them on a port, as with ARP on Linux.
//!    Their [`Decision`] has `by: None` (not judged), like the one the firewall gives ARP.
//!    The router answers ARP requests and neighbour solicitations for the port's own
//!    addresses (the policy interface's, plus for IPv6 the EUI-64 link-local address from
//!    the port's MAC) and learns neighbours from them, as Linux does: a request or
//!    solicitation addressed to us creates a `STALE` entry; replies and advertisements
//!    update existing entries only (a reply to us, or a solicited NA, confirms it).
//! 3. **Every other IP packet** goes through [`Firewall::process_in_place`] first, as
//!    arrived on the port (tracking, NAT and the rules, all at once). A drop ends there; a
//!    reject answer, or the SYN proxy's answer, goes back out of the port to the sender's
//!    MAC; a packet the SYN proxy sends itself ([`Decision::inject`]) is routed like any.
//! 4. **Forwarded** (`forward` chain, accepted): TTL, next hop ([`keepstate_policy::topology::Topology::next_hop`] of
//!    the destination *after* translation), MTU, TTL decrement, neighbour. See below.
//! 5. **For the router** (`input` chain, accepted): echo requests are answered, TCP and UDP
//!    are answered as closed ports (no services run here), anything else is consumed.
//!
//! # Forwarding, and the ICMP errors the router sends
//!
//! - TTL or hop limit 1 or less: ICMP time exceeded (IPv4 type 11, IPv6 type 3) from the
//!   router's address on the ingress port, `ttl-exceeded`. Linux checks in `ip_forward`,
//!   before the FORWARD filter; here the firewall has judged the packet first, so a packet
//!   the policy would drop gets no answer (a firewall does not reveal itself to traffic it
//!   refuses). The connection the packet opened stays in the table until it times out.
//! - No route: ICMP destination unreachable (network), `no-route`.
//! - Larger than the egress port's MTU: IPv4 without DF is fragmented (RFC 791; options
//!   without the copy flag only in the first fragment); IPv4 with DF gets "fragmentation
//!   needed" (type 3 code 4, the MTU in the header) and IPv6 "packet too big" (type 2),
//!   `packet-too-big`.
//! - Every error quotes the packet as its sender sent it, before NAT rewrote it (a copy of
//!   its start is kept when the TTL or length means an error may follow), is addressed to
//!   that sender and goes straight back out of the ingress port to the sender's MAC. It is
//!   not passed through the firewall's output chain: it is related to the connection the
//!   packet belongs to, which `accept_established` accepts, and the quote must not be
//!   translated again. As fits in 576 bytes (IPv4) or 1280 (IPv6) is quoted.
//! - No error is sent about an ICMP error, a non-first fragment, a packet from or to a
//!   broadcast or multicast address (link or IP), and all errors the router originates,
//!   its TCP resets included, share one token bucket ([`RouterConfig::icmp_rate`], 100/s,
//!   burst 100 by default, like Linux's `icmp_ratelimit`), except the firewall's own reject
//!   answers, which its `reject_limit` bounds.
//!
//! # GSO super-frames
//!
//! [`Router::handle_offloaded`] takes a frame with its [`Offload`]: a GSO super-frame (up to
//! 64 KiB standing for many segments, its transport checksum complete over the whole frame,
//! as [`crate::gso::prepare_super`] leaves it) goes through the firewall as one packet
//! (the engine counts one packet of the super-frame's bytes, and tracks the TCP sequence
//! space it covers at once), gets its TTL decremented and its MACs set like any, and
//! leaves as one frame with the same [`Offload`] for the egress port to segment
//! ([`Out::iter_mut`]). The MTU check is on the segments, headers plus the segment size,
//! as Linux's `skb_gso_validate_network_len`: when they fit, the super-frame goes whole;
//! when they do not, an IPv4 packet with DF and every IPv6 one gets one "fragmentation
//! needed"/"packet too big" for the whole super-frame (its sender cuts all its segments
//! smaller), and an IPv4 one without DF is cut into its segments here, each then
//! fragmented. An error about a super-frame quotes its start with the IP length of its
//! first segment, which is what the sender put on the wire (or would have).
//!
//! # Packets for the router
//!
//! - An echo request to one of the router's unicast addresses is answered from that address
//!   (echo requests to broadcast or multicast addresses are ignored, like Linux's
//!   `icmp_echo_ignore_broadcasts=1`; unlike Linux this includes IPv6 multicast). The reply
//!   passes the firewall as output (so it is the tracked echo's reply, and NAT applies), is
//!   routed and resolved like any packet. Fragmented echo requests are not reassembled:
//!   consumed without an answer.
//! - Echo requests to the port's link-local address are answered straight back to the
//!   sender (the firewall's topology does not know that address); anything else to it is
//!   dropped as `local-port-closed`.
//! - TCP (not RST) and UDP to a unicast address of the router are answered as a closed port
//!   (a RST by RFC 9293's rules, or ICMP port unreachable), through the firewall's output
//!   chain and rate-limited; the packet is [`Handled::Local`] and counted under
//!   `local-port-closed` in [`RouterStats::dropped`].
//! - Other ICMP and other protocols are consumed silently.
//!
//! What the router originates (answers, echo replies) and the firewall's output chain drops
//! is dropped and counted with the firewall's reason. Frames waiting for a neighbour are
//! [`Handled::Queued`]; if dropped later (no answer, or pushed out of a full queue) they are
//! counted under `neighbour-unresolved`. Every other drop is one [`Handled::Dropped`] with
//! one reason, counted in [`RouterStats::dropped`].
//!
//! # Allocation
//!
//! [`Out`] keeps one buffer for all frames; the router keeps its scratch buffers; queued
//! frames reuse their buffers. Once warm, forwarding a packet allocates nothing (new
//! neighbours and new connections may).

mod packet;

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use keepstate_engine::{DropReason, LinkType, Time};
use keepstate_policy::firewall::{
    Decision, Firewall, Ingress, ReloadError, ReloadOptions, ReloadReport,
};
use keepstate_policy::model::Policy;
use keepstate_policy::model::{IfaceId, RejectCode};
use keepstate_policy::reject;
use keepstate_policy::ruleset::{Chain, Decider, Verdict};

use crate::gso::{self, Gso, Offload, Segmenter};
use crate::neigh::{Learn, Lookup, NeighCache, NeighbourView, Probe};
pub use crate::neigh::{NeighConfig, NeighState};
use packet::*;

/// One port of the router: an Ethernet interface the daemon reads and writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    /// The policy interface this port is (its index in `policy.interfaces`): its addresses
    /// are the router's on this port, its zone is the port's.
    pub iface: IfaceId,
    pub name: String,
    pub mac: [u8; 6],
    /// The largest IP packet the port sends (1500 on plain Ethernet).
    pub mtu: u16,
}

/// A token bucket: `rate` per second, at most `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub rate: u32,
    pub burst: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    pub ports: Vec<Port>,
    pub neigh: NeighConfig,
    /// ICMP errors and TCP resets the router originates.
    pub icmp_rate: RateLimit,
}

impl RouterConfig {
    /// The ports, with Linux's defaults for the rest.
    pub fn new(ports: Vec<Port>) -> RouterConfig {
        RouterConfig {
            ports,
            neigh: NeighConfig::default(),
            icmp_rate: RateLimit {
                rate: 100,
                burst: 100,
            },
        }
    }
}

/// Frames to transmit, in one reusable buffer (no allocation per packet once warm).
///
/// Each is a whole Ethernet frame without FCS, with its [`Offload`]: a GSO super-frame
/// (with a complete transport checksum) is to be sent as one GSO send. IP frames are as
/// long as their packet (not padded to Ethernet's 60-byte minimum: the kernel or NIC pads);
/// ARP frames are padded.
#[derive(Clone, Debug, Default)]
pub struct Out {
    buf: Vec<u8>,
    /// Port, start, end, offload; in buffer order, not overlapping.
    frames: Vec<(IfaceId, usize, usize, Offload)>,
}

impl Out {
    pub fn new() -> Out {
        Out::default()
    }

    /// Forgets the frames, keeping the memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.frames.clear();
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Port and length of each frame from the `from`th on: what one call added.
    fn lengths_since(&self, from: usize) -> impl Iterator<Item = (IfaceId, usize)> + '_ {
        self.frames
            .get(from..)
            .unwrap_or(&[])
            .iter()
            .map(|&(p, a, b, _)| (p, b.saturating_sub(a)))
    }

    /// Each frame with the port to send it from, in the order they were produced.
    pub fn iter(&self) -> impl Iterator<Item = (IfaceId, &[u8])> {
        self.iter_offload().map(|(p, f, _)| (p, f))
    }

    /// Each frame with the port to send it from and its offload, in order.
    pub fn iter_offload(&self) -> impl Iterator<Item = (IfaceId, &[u8], Offload)> {
        self.frames
            .iter()
            .map(|&(p, s, e, o)| (p, self.buf.get(s..e).unwrap_or(&[]), o))
    }

    /// [`Out::iter_offload`] with the frames writable: sending a super-frame rewrites its
    /// checksum field (see [`crate::gso::tx_header`]).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (IfaceId, &mut [u8], Offload)> {
        let mut rest: &mut [u8] = &mut self.buf;
        // Where `rest` starts in `buf`.
        let mut at = 0usize;
        self.frames.iter().map(move |&(p, s, e, o)| {
            let r = core::mem::take(&mut rest);
            match s.checked_sub(at).zip(e.checked_sub(s)) {
                Some((skip, len)) if skip.saturating_add(len) <= r.len() => {
                    let (frame, r) = r.split_at_mut(skip + len);
                    rest = r;
                    at = e;
                    (p, frame.get_mut(skip..).unwrap_or_default(), o)
                }
                // Frames are appended in order, so this is not reached.
                _ => {
                    rest = r;
                    (p, Default::default(), o)
                }
            }
        })
    }

    /// Appends a frame to send from `port`.
    pub fn push(&mut self, port: IfaceId, frame: &[u8]) {
        self.push_offloaded(port, frame, Offload::NONE);
    }

    /// Appends a frame to send from `port` with its offload.
    pub fn push_offloaded(&mut self, port: IfaceId, frame: &[u8], offload: Offload) {
        let start = self.buf.len();
        self.buf.extend_from_slice(frame);
        self.frames.push((port, start, self.buf.len(), offload));
    }
}

/// What happened to the frame handed to [`Router::handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Sent on (one frame, or its fragments) out of port `out`.
    Forwarded { out: IfaceId, decision: Decision },
    /// Waiting for neighbour resolution.
    Queued,
    /// For the router itself and dealt with: an echo answered, ARP or a solicitation
    /// answered, a neighbour learnt, a closed port answered, or consumed.
    Local { decision: Decision },
    /// Dropped, for `reason`; `decision` is the firewall's when it judged the frame.
    Dropped {
        reason: DropReason,
        decision: Option<Decision>,
    },
}

/// The router's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterStats {
    /// Frames forwarded (sent at once or released from a neighbour queue later).
    pub forwarded: u64,
    /// Frames for the router itself.
    pub local: u64,
    /// Frames that had to wait for a neighbour.
    pub queued: u64,
    /// Per [`DropReason::index`]: every drop, once.
    pub dropped: [u64; DropReason::COUNT],
    pub arp_requests_sent: u64,
    /// ARP requests for the router's addresses answered.
    pub arp_answered: u64,
    pub nd_solicits_sent: u64,
    /// Neighbour solicitations for the router's addresses answered.
    pub nd_answered: u64,
    /// Time exceeded, unreachable, fragmentation needed, packet too big, port unreachable.
    pub icmp_errors_sent: u64,
    /// TCP resets for closed ports.
    pub resets_sent: u64,
    /// Errors and resets not sent because the rate limit was reached.
    pub icmp_rate_limited: u64,
    pub echo_replies_sent: u64,
    /// Firewall reject (and SYN proxy) answers sent.
    pub rejects_sent: u64,
    /// IPv4 fragments sent for packets larger than the egress MTU.
    pub fragments_sent: u64,
    /// GSO super-frames sent whole at once (counted in `forwarded` too; not those that
    /// waited for a neighbour).
    pub gso_forwarded: u64,
    /// GSO super-frames cut into segments here because the segments did not fit the
    /// egress MTU.
    pub gso_segmented: u64,
}

impl Default for RouterStats {
    fn default() -> RouterStats {
        RouterStats {
            forwarded: 0,
            local: 0,
            queued: 0,
            dropped: [0; DropReason::COUNT],
            arp_requests_sent: 0,
            arp_answered: 0,
            nd_solicits_sent: 0,
            nd_answered: 0,
            icmp_errors_sent: 0,
            resets_sent: 0,
            icmp_rate_limited: 0,
            echo_replies_sent: 0,
            rejects_sent: 0,
            fragments_sent: 0,
            gso_forwarded: 0,
            gso_segmented: 0,
        }
    }
}

impl RouterStats {
    /// Drops counted for one reason.
    pub fn dropped_for(&self, r: DropReason) -> u64 {
        self.dropped.get(r.index()).copied().unwrap_or(0)
    }

    /// Drops for every reason together.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    fn drop(&mut self, r: DropReason, n: u64) {
        if let Some(c) = self.dropped.get_mut(r.index()) {
            *c += n;
        }
    }
}

/// A port's addresses, worked out once.
#[derive(Clone, Debug)]
struct PortInfo {
    port: Port,
    v4: Vec<(Ipv4Addr, u8)>,
    /// Global (configured) IPv6 addresses with prefix lengths.
    v6: Vec<(Ipv6Addr, u8)>,
    link_local: Ipv6Addr,
}

impl PortInfo {
    fn owns_v4(&self, a: Ipv4Addr) -> bool {
        self.v4.iter().any(|&(x, _)| x == a)
    }

    fn owns_v6(&self, a: Ipv6Addr) -> bool {
        a == self.link_local || self.v6.iter().any(|&(x, _)| x == a)
    }

    /// Listens to this Ethernet address.
    fn accepts_mac(&self, m: &[u8; 6]) -> bool {
        if *m == self.port.mac || *m == BROADCAST {
            return true;
        }
        match *m {
            [0x33, 0x33, 0, 0, 0, 1 | 2] => true,
            [0x33, 0x33, 0xff, a, b, c] => {
                let low = |x: &Ipv6Addr| {
                    let o = x.octets();
                    [o[13], o[14], o[15]] == [a, b, c]
                };
                low(&self.link_local) || self.v6.iter().any(|(x, _)| low(x))
            }
            _ => false,
        }
    }

    fn on_link_v4(&self, a: Ipv4Addr) -> bool {
        self.v4
            .iter()
            .any(|&(x, len)| same_prefix(x.into(), a.into(), len))
    }

    fn directed_broadcast(&self, a: Ipv4Addr) -> bool {
        self.v4.iter().any(|&(x, len)| {
            let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            len <= 30 && u32::from(x) | host == u32::from(a)
        })
    }

    /// The address to send from to `to` on this port, of `to`'s family.
    fn source_for(&self, to: IpAddr) -> Option<IpAddr> {
        match to {
            IpAddr::V4(t) => self
                .v4
                .iter()
                .find(|&&(x, len)| same_prefix(x.into(), t.into(), len))
                .or_else(|| self.v4.first())
                .map(|&(x, _)| IpAddr::V4(x)),
            IpAddr::V6(t) => {
                if is_link_local_v6(&t) {
                    return Some(IpAddr::V6(self.link_local));
                }
                let global = self
                    .v6
                    .iter()
                    .find(|&&(x, len)| same_prefix(x.into(), t.into(), len))
                    .or_else(|| self.v6.first())
                    .map(|&(x, _)| x);
                Some(IpAddr::V6(global.unwrap_or(self.link_local)))
            }
        }
    }
}

fn same_prefix(a: IpAddr, b: IpAddr, len: u8) -> bool {
    use keepstate_policy::model::{addr_bits, prefix_mask};
    let (x, w) = addr_bits(a);
    let (y, w2) = addr_bits(b);
    w == w2 && (x & prefix_mask(w, len)) == (y & prefix_mask(w, len))
}

/// The token bucket, in thousandths of a token.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    limit: RateLimit,
    milli: u64,
    last: Time,
}

impl Bucket {
    fn new(limit: RateLimit) -> Bucket {
        Bucket {
            limit,
            milli: u64::from(limit.burst) * 1000,
            last: Time::ZERO,
        }
    }

    fn take(&mut self, now: Time) -> bool {
        let elapsed = u128::from(now.saturating_sub(self.last));
        let add = elapsed * u128::from(self.limit.rate) / 1_000_000;
        let cap = u64::from(self.limit.burst) * 1000;
        self.milli = u64::try_from(u128::from(self.milli) + add)
            .unwrap_or(u64::MAX)
            .min(cap);
        if now > self.last {
            self.last = now;
        }
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// What sending a frame towards a next hop did.
enum Tx {
    Sent,
    Queued,
}

pub struct Router {
    fw: Firewall,
    ports: Vec<PortInfo>,
    /// Per port index, what went in and out of it.
    port_stats: Vec<PortStats>,
    /// Per worker of the daemon driving the router (it adds to its own under the lock).
    worker_stats: Vec<WorkerStats>,
    /// Port index by interface id.
    by_iface: Vec<Option<usize>>,
    neigh: NeighCache,
    stats: RouterStats,
    bucket: Bucket,
    /// IPv4 identification for the packets the router originates.
    ip_id: u16,
    /// The smallest port MTU: a longer packet may need an error quoting it.
    min_mtu: usize,
    /// The start of the packet being forwarded, as it arrived, when an error may quote it.
    orig: Vec<u8>,
    /// A packet the router builds.
    tx: Vec<u8>,
    /// Fragments and other scratch.
    scratch: Vec<u8>,
    /// Cuts super-frames whose segments do not fit the egress MTU.
    segmenter: Segmenter,
    probes: Vec<Probe>,
    /// The latest drops, oldest first, at most [`DROP_LOG`].
    drops: std::collections::VecDeque<DropRecord>,
    /// Log lines for drops a rule asked to log, waiting to be written.
    log_lines: Vec<String>,
}

/// Frames through one port, as `ip -s link` counts them on the router's side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames received there and dropped (any reason).
    pub dropped: u64,
}

/// What one worker of the daemon did: batches it handled, frames in them, and how long it
/// waited for the router's lock (the cost of sharing one state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub batches: u64,
    pub frames: u64,
    pub lock_wait_ns: u64,
}

/// Workers whose counters the router keeps at most.
const MAX_WORKERS: usize = 256;

/// Drops the router remembers ([`Router::drops`]).
pub const DROP_LOG: usize = 1000;
/// Log lines kept while nobody takes them ([`Router::take_log_lines`]); the log limit keeps
/// them few, this only bounds a caller that never takes them.
const LOG_BACKLOG: usize = 1000;

/// One dropped packet, as the drop log keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropRecord {
    /// When (the clock packets are stamped with).
    pub time: Time,
    pub reason: DropReason,
    /// What decided, when the firewall did: [`Router::drop_rule`] names it.
    pub by: Option<Decider>,
    /// `by` named under the policy in force when the packet was dropped, kept here once
    /// another policy is loaded (its indices mean something else).
    pub rule: Option<String>,
    /// The port it arrived on.
    pub iface: IfaceId,
    /// Where it would have gone, when the firewall knew.
    pub out_iface: Option<IfaceId>,
    pub proto: Option<u8>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// IP length.
    pub len: u32,
}

impl Router {
    pub fn new(fw: Firewall, cfg: RouterConfig) -> Router {
        let policy = fw.policy();
        let mut ports = Vec::with_capacity(cfg.ports.len());
        let mut by_iface: Vec<Option<usize>> = Vec::new();
        for p in cfg.ports {
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            if let Some(f) = policy.interfaces.get(usize::from(p.iface)) {
                for n in &f.addrs {
                    match n.addr {
                        IpAddr::V4(a) => v4.push((a, n.len)),
                        IpAddr::V6(a) => v6.push((a, n.len)),
                    }
                }
            }
            let at = usize::from(p.iface);
            if by_iface.len() <= at {
                by_iface.resize(at + 1, None);
            }
            if let Some(slot) = by_iface.get_mut(at) {
                if slot.is_none() {
                    *slot = Some(ports.len());
                }
            }
            ports.push(PortInfo {
                link_local: link_local(p.mac),
                port: p,
                v4,
                v6,
            });
        }
        let min_mtu = ports
            .iter()
            .map(|p| usize::from(p.port.mtu))
            .min()
            .unwrap_or(1500);
        Router {
            fw,
            port_stats: vec![PortStats::default(); ports.len()],
            worker_stats: Vec::new(),
            ports,
            by_iface,
            neigh: NeighCache::new(cfg.neigh),
            stats: RouterStats::default(),
            bucket: Bucket::new(cfg.icmp_rate),
            ip_id: 0,
            min_mtu,
            orig: Vec::new(),
            tx: Vec::new(),
            scratch: Vec::new(),
            segmenter: Segmenter::default(),
            probes: Vec::new(),
            drops: std::collections::VecDeque::new(),
            log_lines: Vec::new(),
        }
    }

    /// Puts a new policy in force ([`Firewall::reload`]): the connection table stays, and
    /// the ports' addresses follow the new policy's interfaces. Called between two frames,
    /// it is atomic for the traffic: every frame is judged wholly by one policy or the
    /// other.
    pub fn reload(
        &mut self,
        now: Time,
        policy: Policy,
        opts: ReloadOptions,
    ) -> Result<ReloadReport, ReloadError> {
        // The drop log's deciders are indices into the policy in force: name them while
        // they still mean what they meant.
        let fw = &self.fw;
        let named: Vec<Option<String>> = self
            .drops
            .iter()
            .map(|d| d.rule.clone().or_else(|| d.by.map(|b| fw.describe(b))))
            .collect();
        let report = self.fw.reload(now, policy, opts)?;
        for (d, name) in self.drops.iter_mut().zip(named) {
            d.rule = name;
        }
        let policy = self.fw.policy();
        for p in &mut self.ports {
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            if let Some(f) = policy.interfaces.get(usize::from(p.port.iface)) {
                for n in &f.addrs {
                    match n.addr {
                        IpAddr::V4(a) => v4.push((a, n.len)),
                        IpAddr::V6(a) => v6.push((a, n.len)),
                    }
                }
            }
            p.v4 = v4;
            p.v6 = v6;
        }
        Ok(report)
    }

    /// The latest drops (at most [`DROP_LOG`]), newest first. Frames not addressed to the
    /// router (`not-for-us`) are not kept.
    pub fn drops(&self) -> impl Iterator<Item = &DropRecord> + '_ {
        self.drops.iter().rev()
    }

    /// What decided a drop, as traces name it (`rule Block-Echo`'s name, `zone wan input
    /// policy`...); `None` when the firewall did not judge the frame.
    pub fn drop_rule(&self, d: &DropRecord) -> Option<String> {
        d.rule.clone().or_else(|| d.by.map(|b| self.fw.describe(b)))
    }

    /// The log lines of drops that rules with `log` asked for (the policy's log limit
    /// applied), oldest first; they are handed out once.
    pub fn take_log_lines(&mut self) -> Vec<String> {
        core::mem::take(&mut self.log_lines)
    }

    /// Remembers a drop, and writes its log line when a rule asked for one.
    fn record_drop(
        &mut self,
        now: Time,
        port: IfaceId,
        frame: &[u8],
        reason: DropReason,
        decision: Option<&Decision>,
    ) {
        if reason == DropReason::NotForUs {
            return;
        }
        let mut r = DropRecord {
            time: now,
            reason,
            by: decision.and_then(|d| d.by),
            rule: None,
            iface: port,
            out_iface: decision.and_then(|d| d.out_iface),
            proto: None,
            src: None,
            dst: None,
            sport: None,
            dport: None,
            len: 0,
        };
        match decision.map(|d| &d.outcome.meta) {
            Some(m) if m.src.is_some() => {
                (r.proto, r.src, r.dst, r.sport, r.dport, r.len) =
                    (m.proto, m.src, m.dst, m.sport, m.dport, m.len);
            }
            _ => {
                let ip = match u16_at(frame, 12) {
                    Some(ETHERTYPE_IPV4 | ETHERTYPE_IPV6) => frame.get(ETH_LEN..),
                    _ => None,
                };
                if let Some(i) = ip.and_then(|ip| ip_info_prefix(ip).ok().map(|i| (ip, i))) {
                    let (ip, i) = i;
                    r.src = Some(i.src);
                    r.dst = Some(i.dst);
                    r.proto = i.proto;
                    r.len = u32::try_from(i.len).unwrap_or(u32::MAX);
                    let ports = matches!(i.proto, Some(6 | 17 | 132)) && !i.later_fragment;
                    if ports {
                        r.sport = u16_at(ip, i.l4);
                        r.dport = i.l4.checked_add(2).and_then(|at| u16_at(ip, at));
                    }
                }
            }
        }
        if decision.is_some_and(|d| d.log.is_some()) && self.log_lines.len() < LOG_BACKLOG {
            let line = self.log_line(&r);
            self.log_lines.push(line);
        }
        if self.drops.len() >= DROP_LOG {
            self.drops.pop_front();
        }
        self.drops.push_back(r);
    }

    /// A drop as one log line, in the spirit of netfilter's log target.
    fn log_line(&self, r: &DropRecord) -> String {
        use core::fmt::Write as _;
        let name = |i: IfaceId| {
            self.port(i)
                .map_or_else(|| format!("#{i}"), |p| p.name.clone())
        };
        let mut s = format!("drop IN={}", name(r.iface));
        if let Some(o) = r.out_iface {
            let _ = write!(s, " OUT={}", name(o));
        }
        if let (Some(src), Some(dst)) = (r.src, r.dst) {
            let _ = write!(s, " SRC={src} DST={dst}");
        }
        if let Some(p) = r.proto {
            let _ = write!(
                s,
                " PROTO={}",
                keepstate_engine::proto_name(p).to_uppercase()
            );
        }
        if let (Some(sp), Some(dp)) = (r.sport, r.dport) {
            let _ = write!(s, " SPT={sp} DPT={dp}");
        }
        let _ = write!(s, " LEN={}", r.len);
        if let Some(rule) = self.drop_rule(r) {
            let _ = write!(s, " RULE=\"{rule}\"");
        }
        let _ = write!(s, " REASON={}", r.reason.name());
        s
    }

    pub fn firewall(&self) -> &Firewall {
        &self.fw
    }

    pub fn firewall_mut(&mut self) -> &mut Firewall {
        &mut self.fw
    }

    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    /// The neighbour cache, as `ip neigh` lists it (in no particular order).
    pub fn neighbours(&self) -> impl Iterator<Item = NeighbourView> + '_ {
        self.neigh.iter()
    }

    /// The port with this interface id.
    pub fn port(&self, iface: IfaceId) -> Option<&Port> {
        self.port_index(iface)
            .and_then(|i| self.ports.get(i))
            .map(|p| &p.port)
    }

    /// The link-local address the router uses on a port (EUI-64 from its MAC).
    pub fn link_local(&self, iface: IfaceId) -> Option<Ipv6Addr> {
        self.port_index(iface)
            .and_then(|i| self.ports.get(i))
            .map(|p| p.link_local)
    }

    fn port_index(&self, iface: IfaceId) -> Option<usize> {
        self.by_iface.get(usize::from(iface)).copied().flatten()
    }

    fn iface_of(&self, pi: usize) -> IfaceId {
        self.ports.get(pi).map_or(IfaceId::MAX, |p| p.port.iface)
    }

    /// One frame received on `port` at `now`. May rewrite `frame` in place (NAT, TTL).
    /// Frames to send are appended to `out`.
    pub fn handle(&mut self, now: Time, port: IfaceId, frame: &mut [u8], out: &mut Out) -> Handled {
        self.handle_offloaded(now, port, frame, Offload::NONE, out)
    }

    /// [`Router::handle`] for a frame with its [`Offload`]: a GSO super-frame is judged,
    /// translated and forwarded as one packet (see the module documentation). An offload
    /// that does not match the frame's headers is ignored (the frame is then an ordinary,
    /// oversized one).
    pub fn handle_offloaded(
        &mut self,
        now: Time,
        port: IfaceId,
        frame: &mut [u8],
        offload: Offload,
        out: &mut Out,
    ) -> Handled {
        let gso = offload
            .gso
            .filter(|g| gso::segment_ip_len(frame, *g).is_some());
        let sent_before = out.len();
        let len = u64::try_from(frame.len()).unwrap_or(u64::MAX);
        let h = self.receive(now, port, frame, gso, out);
        let dropped = matches!(h, Handled::Dropped { .. });
        if let Some(ps) = self
            .port_index(port)
            .and_then(|i| self.port_stats.get_mut(i))
        {
            ps.rx_packets += 1;
            ps.rx_bytes += len;
            ps.dropped += u64::from(dropped);
        }
        self.count_sent(out, sent_before);
        match h {
            Handled::Forwarded { .. } => self.stats.forwarded += 1,
            Handled::Queued => self.stats.queued += 1,
            Handled::Local { .. } => self.stats.local += 1,
            Handled::Dropped { reason, decision } => {
                self.stats.drop(reason, 1);
                self.record_drop(now, port, frame, reason, decision.as_ref());
            }
        }
        h
    }

    /// Adds what went into `out` since its `from`th frame to the ports' transmit counters.
    fn count_sent(&mut self, out: &Out, from: usize) {
        for (port, len) in out.lengths_since(from) {
            let at = self.port_index(port);
            if let Some(ps) = at.and_then(|i| self.port_stats.get_mut(i)) {
                ps.tx_packets += 1;
                ps.tx_bytes += u64::try_from(len).unwrap_or(u64::MAX);
            }
        }
    }

    /// Each port's name with its counters, in port order.
    pub fn port_stats(&self) -> impl Iterator<Item = (&str, PortStats)> + '_ {
        self.ports
            .iter()
            .zip(&self.port_stats)
            .map(|(p, s)| (p.port.name.as_str(), *s))
    }

    /// The counters of worker `n` (the daemon adds to them while it holds the router).
    /// Workers beyond the 256th share the last one's.
    pub fn worker_stats_mut(&mut self, n: usize) -> &mut WorkerStats {
        let n = n.min(MAX_WORKERS - 1);
        if self.worker_stats.len() <= n {
            self.worker_stats.resize(n + 1, WorkerStats::default());
        }
        let last = self.worker_stats.len() - 1;
        &mut self.worker_stats[n.min(last)]
    }

    /// Every worker's counters, by worker number.
    pub fn worker_stats(&self) -> &[WorkerStats] {
        &self.worker_stats
    }

    /// Timers: solicitations sent again, neighbours given up on (their waiting frames are
    /// dropped as `neighbour-unresolved`), entries aged.
    pub fn tick(&mut self, now: Time, out: &mut Out) {
        let sent_before = out.len();
        self.tick_inner(now, out);
        self.count_sent(out, sent_before);
    }

    fn tick_inner(&mut self, now: Time, out: &mut Out) {
        let mut probes = core::mem::take(&mut self.probes);
        probes.clear();
        let dropped = self.neigh.tick(now, &mut probes);
        self.stats.drop(
            DropReason::NeighbourUnresolved,
            u64::try_from(dropped).unwrap_or(0),
        );
        for p in &probes {
            self.solicit(*p, out);
        }
        self.probes = probes;
    }

    fn receive(
        &mut self,
        now: Time,
        port: IfaceId,
        frame: &mut [u8],
        gso: Option<Gso>,
        out: &mut Out,
    ) -> Handled {
        let dropped = |reason| Handled::Dropped {
            reason,
            decision: None,
        };
        let Some(pi) = self.port_index(port) else {
            return dropped(DropReason::NotForUs);
        };
        let (Some(dst), Some(src), Some(ethertype)) = (
            array_at::<6>(frame, 0),
            array_at::<6>(frame, 6),
            u16_at(frame, 12),
        ) else {
            return dropped(DropReason::Truncated);
        };
        let Some(info) = self.ports.get(pi) else {
            return dropped(DropReason::NotForUs);
        };
        if !info.accepts_mac(&dst) || is_multicast_mac(&src) {
            return dropped(DropReason::NotForUs);
        }
        let unicast = dst == info.port.mac;
        match ethertype {
            ETHERTYPE_ARP => self.arp(now, pi, frame, out),
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => {
                let ip = frame.get(ETH_LEN..).unwrap_or(&[]);
                let ip_ok = match (ip.first().map(|b| b >> 4), ethertype) {
                    (Some(4), ETHERTYPE_IPV4) | (Some(6), ETHERTYPE_IPV6) => true,
                    (None, _) => return dropped(DropReason::Truncated),
                    _ => false,
                };
                if !ip_ok {
                    return dropped(DropReason::BadIpVersion);
                }
                if ethertype == ETHERTYPE_IPV6 && nd_type(ip).is_some() {
                    return self.nd(now, pi, src, frame, out);
                }
                self.ip(now, pi, src, unicast, frame, gso, out)
            }
            // Tagged frames are for the daemon to split into ports (see the module doc).
            ETHERTYPE_VLAN | ETHERTYPE_QINQ => dropped(DropReason::NotForUs),
            _ => dropped(DropReason::NotForUs),
        }
    }

    // --- ARP ------------------------------------------------------------------------------

    fn arp(&mut self, now: Time, pi: usize, frame: &[u8], out: &mut Out) -> Handled {
        let iface = self.iface_of(pi);
        let dropped = |reason| Handled::Dropped {
            reason,
            decision: None,
        };
        let Some(a) = frame.get(ETH_LEN..ETH_LEN + 28) else {
            return dropped(DropReason::Truncated);
        };
        // Ethernet and IPv4 only.
        if a.get(..6) != Some(&[0, 1, 0x08, 0, 6, 4][..]) {
            return dropped(DropReason::NotForUs);
        }
        let op = u16_at(a, 6).unwrap_or(0);
        let (Some(sha), Some(spa), Some(tpa)) = (
            array_at::<6>(a, 8),
            array_at::<4>(a, 14),
            array_at::<4>(a, 24),
        ) else {
            return dropped(DropReason::Truncated);
        };
        let (spa, tpa) = (Ipv4Addr::from(spa), Ipv4Addr::from(tpa));
        let Some(info) = self.ports.get(pi) else {
            return dropped(DropReason::NotForUs);
        };
        if is_multicast_mac(&sha) || sha == [0; 6] || !matches!(op, 1 | 2) {
            return dropped(DropReason::BadSourceAddress);
        }
        let probe = spa.is_unspecified();
        if !probe && !is_unicast(IpAddr::V4(spa)) {
            return dropped(DropReason::BadSourceAddress);
        }
        if info.owns_v4(spa) {
            // Someone else claims our address: believe nothing from it.
            return dropped(DropReason::SpoofedSource);
        }
        let for_us = info.owns_v4(tpa);
        let on_link = info.on_link_v4(spa);
        let decision = link_decision(iface, ETHERTYPE_ARP);
        if !probe {
            // As Linux: any ARP updates an entry we have; a request for us creates one; a
            // reply to us confirms it.
            let how = Learn {
                confirmed: op == 2 && for_us && frame.get(..6) == Some(&info.port.mac[..]),
                create: op == 1 && for_us && on_link,
                override_mac: true,
            };
            if let Some(mac) = self.neigh.learn(now, iface, IpAddr::V4(spa), sha, how) {
                self.release(iface, IpAddr::V4(spa), mac, out);
            }
        }
        if op == 1 && for_us {
            let Some(info) = self.ports.get(pi) else {
                return dropped(DropReason::NotForUs);
            };
            // A probe (RFC 5227) is answered too, to defend the address, as Linux does.
            push_arp(&mut self.tx, sha, 2, info.port.mac, tpa, sha, spa);
            out.push(iface, &self.tx);
            self.stats.arp_answered += 1;
            return Handled::Local { decision };
        }
        // A reply to us, or a gratuitous announcement (which updated any entry we had).
        if (op == 2 && for_us) || (!probe && spa == tpa) {
            return Handled::Local { decision };
        }
        dropped(DropReason::NotForUs)
    }

    // --- Neighbour discovery --------------------------------------------------------------

    fn nd(
        &mut self,
        now: Time,
        pi: usize,
        eth_src: [u8; 6],
        frame: &[u8],
        out: &mut Out,
    ) -> Handled {
        let iface = self.iface_of(pi);
        let ip = frame.get(ETH_LEN..).unwrap_or(&[]);
        let nd = match parse_nd(ip) {
            Ok(nd) => nd,
            Err(reason) => {
                return Handled::Dropped {
                    reason,
                    decision: None,
                }
            }
        };
        let mut decision = link_decision(iface, ETHERTYPE_IPV6);
        decision.outcome.meta.family = Some(keepstate_engine::Family::V6);
        decision.outcome.meta.proto = Some(keepstate_engine::wire::PROTO_ICMPV6);
        decision.outcome.meta.src = Some(IpAddr::V6(nd.src));
        decision.outcome.meta.dst = Some(IpAddr::V6(nd.dst));
        decision.outcome.meta.icmp_type = ip.get(40).copied();
        decision.outcome.meta.icmp_code = Some(0);
        decision.outcome.meta.len = u32::try_from(ip.len()).unwrap_or(0);
        let Some(info) = self.ports.get(pi) else {
            return Handled::Dropped {
                reason: DropReason::NotForUs,
                decision: None,
            };
        };
        let mac = info.port.mac;
        if nd.advert {
            if info.owns_v6(nd.target) {
                // Another node claims our address.
                return Handled::Dropped {
                    reason: DropReason::SpoofedSource,
                    decision: Some(decision),
                };
            }
            let Some(ll) = nd.lladdr else {
                return Handled::Local { decision };
            };
            let how = Learn {
                confirmed: nd.flags & NA_SOLICITED != 0,
                create: false,
                override_mac: nd.flags & NA_OVERRIDE != 0,
            };
            let target = IpAddr::V6(nd.target);
            if let Some(m) = self.neigh.learn(now, iface, target, ll, how) {
                self.release(iface, target, m, out);
            }
            return Handled::Local { decision };
        }
        let for_us = info.owns_v6(nd.target);
        if let (false, Some(ll)) = (nd.src.is_unspecified(), nd.lladdr) {
            let how = Learn {
                confirmed: false,
                create: for_us,
                override_mac: true,
            };
            let src = IpAddr::V6(nd.src);
            if let Some(m) = self.neigh.learn(now, iface, src, ll, how) {
                self.release(iface, src, m, out);
            }
        }
        if !for_us {
            return Handled::Dropped {
                reason: DropReason::NotForUs,
                decision: Some(decision),
            };
        }
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let (dst, eth_dst, flags) = if nd.src.is_unspecified() {
            // Defending an address against duplicate address detection: to all nodes.
            (
                all_nodes,
                ipv6_multicast_mac(&all_nodes),
                NA_ROUTER | NA_OVERRIDE,
            )
        } else {
            (
                nd.src,
                nd.lladdr.unwrap_or(eth_src),
                NA_ROUTER | NA_SOLICITED | NA_OVERRIDE,
            )
        };
        push_nd(
            &mut self.tx,
            eth_dst,
            mac,
            nd.target,
            dst,
            nd.target,
            Some(flags),
        );
        out.push(iface, &self.tx);
        self.stats.nd_answered += 1;
        Handled::Local { decision }
    }

    /// Sends an ARP request or neighbour solicitation.
    fn solicit(&mut self, p: Probe, out: &mut Out) {
        let Some(info) = self.port_index(p.port).and_then(|i| self.ports.get(i)) else {
            return;
        };
        match p.addr {
            IpAddr::V4(t) => {
                let spa = match info.source_for(p.addr) {
                    Some(IpAddr::V4(s)) => s,
                    _ => Ipv4Addr::UNSPECIFIED,
                };
                push_arp(
                    &mut self.tx,
                    p.unicast.unwrap_or(BROADCAST),
                    1,
                    info.port.mac,
                    spa,
                    [0; 6],
                    t,
                );
                self.stats.arp_requests_sent += 1;
            }
            IpAddr::V6(t) => {
                let src = match info.source_for(p.addr) {
                    Some(IpAddr::V6(s)) => s,
                    _ => info.link_local,
                };
                let (dst, eth_dst) = match p.unicast {
                    Some(m) => (t, m),
                    None => {
                        let g = solicited_node(&t);
                        (g, ipv6_multicast_mac(&g))
                    }
                };
                push_nd(&mut self.tx, eth_dst, info.port.mac, src, dst, t, None);
                self.stats.nd_solicits_sent += 1;
            }
        }
        out.push(p.port, &self.tx);
    }

    fn release(&mut self, iface: IfaceId, addr: IpAddr, mac: [u8; 6], out: &mut Out) {
        let n = self.neigh.release(iface, addr, mac, out);
        self.stats.forwarded += u64::try_from(n).unwrap_or(0);
    }

    /// Keeps the start of the packet in `frame` (as it arrived) for an error to quote. A
    /// super-frame is quoted as its first segment: the IP length is that segment's.
    fn keep_quote(&mut self, frame: &[u8], before: &IpInfo, gso: Option<Gso>) {
        let max = if before.v4 {
            ICMP_MAX_LEN - 28
        } else {
            ICMPV6_MAX_LEN - 48
        };
        let ip = frame.get(ETH_LEN..ETH_LEN + before.len).unwrap_or(&[]);
        self.orig
            .extend_from_slice(ip.get(..max.min(ip.len())).unwrap_or(&[]));
        let Some(first) = gso.and_then(|g| gso::segment_ip_len(frame, g)) else {
            return;
        };
        let Ok(first) = u16::try_from(first) else {
            return;
        };
        if before.v4 {
            if let Some(l) = self.orig.get_mut(2..4) {
                l.copy_from_slice(&first.to_be_bytes());
            }
            ipv4_checksum(&mut self.orig);
        } else if let Some(l) = self.orig.get_mut(4..6) {
            l.copy_from_slice(&first.saturating_sub(40).to_be_bytes());
        }
    }

    // --- IP -------------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn ip(
        &mut self,
        now: Time,
        pi: usize,
        eth_src: [u8; 6],
        eth_unicast: bool,
        frame: &mut [u8],
        gso: Option<Gso>,
        out: &mut Out,
    ) -> Handled {
        let iface = self.iface_of(pi);
        let before = match ip_info(frame.get(ETH_LEN..).unwrap_or(&[])) {
            Ok(i) => i,
            Err(reason) => {
                return Handled::Dropped {
                    reason,
                    decision: None,
                }
            }
        };
        if let IpAddr::V6(d) = before.dst {
            if is_link_local_v6(&d) {
                return self.for_link_local(pi, eth_src, d, frame, out);
            }
        }
        // Keep the packet as sent while an error may have to quote it.
        self.orig.clear();
        let wire_len = gso
            .and_then(|g| gso::segment_ip_len(frame, g))
            .unwrap_or(before.len);
        if before.ttl <= 1 || wire_len > self.min_mtu {
            self.keep_quote(frame, &before, gso);
        }
        let len = frame.len();
        let d =
            self.fw
                .process_in_place(now, LinkType::Ethernet, frame, len, Ingress::Arrived(iface));
        if d.inject {
            self.inject(now, out);
        }
        if d.verdict != Verdict::Accept {
            if d.reply && eth_unicast && !self.is_directed_broadcast(before.dst) {
                self.tx.clear();
                self.tx.extend_from_slice(&[0; ETH_LEN]);
                let ethertype = if before.v4 {
                    ETHERTYPE_IPV4
                } else {
                    ETHERTYPE_IPV6
                };
                write_eth(&mut self.tx, [0; 6], [0; 6], ethertype);
                self.tx.extend_from_slice(self.fw.reply());
                if self.direct(pi, eth_src, out) {
                    self.stats.rejects_sent += 1;
                }
            }
            return Handled::Dropped {
                reason: d.outcome.reason.unwrap_or(DropReason::RuleDrop),
                decision: Some(d),
            };
        }
        // Packets of known connections are accepted before the firewall works out their
        // chain: route them as the kernel does after PREROUTING, by the (translated)
        // destination.
        let chain = match (d.chain, d.by) {
            (Some(c), _) => Some(c),
            (None, Some(_)) => ip_info(frame.get(ETH_LEN..).unwrap_or(&[])).ok().map(|i| {
                if self.fw.topology().is_local(i.dst) {
                    Chain::Input
                } else {
                    Chain::Forward
                }
            }),
            // Not judged: IP the firewall could not read.
            (None, None) => None,
        };
        match chain {
            Some(Chain::Forward) => {
                self.forward(now, pi, eth_src, eth_unicast, &before, frame, gso, d, out)
            }
            Some(Chain::Input) => self.local(now, eth_unicast, frame, d, out),
            _ => Handled::Dropped {
                reason: d.outcome.reason.unwrap_or(DropReason::Truncated),
                decision: Some(d),
            },
        }
    }

    fn is_directed_broadcast(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(v) => self.ports.iter().any(|p| p.directed_broadcast(v)),
            IpAddr::V6(_) => false,
        }
    }

    fn owns(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(v) => self.ports.iter().any(|p| p.owns_v4(v)),
            IpAddr::V6(v) => self.ports.iter().any(|p| p.owns_v6(v)),
        }
    }

    /// The SYN proxy's own packet: already judged and translated; route it.
    fn inject(&mut self, now: Time, out: &mut Out) {
        self.tx.clear();
        self.tx.extend_from_slice(self.fw.injected());
        let mut tx = core::mem::take(&mut self.tx);
        if let Err(r) = self.route_out(now, &mut tx, out) {
            self.stats.drop(r, 1);
        }
        self.tx = tx;
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        now: Time,
        pi: usize,
        eth_src: [u8; 6],
        eth_unicast: bool,
        before: &IpInfo,
        frame: &mut [u8],
        gso: Option<Gso>,
        d: Decision,
        out: &mut Out,
    ) -> Handled {
        let dropped = |reason| Handled::Dropped {
            reason,
            decision: Some(d),
        };
        let ip = frame.get(ETH_LEN..).unwrap_or(&[]);
        let now_info = match ip_info(ip) {
            Ok(i) => i,
            Err(r) => return dropped(r),
        };
        if now_info.ttl <= 1 {
            let (ty, code) = if before.v4 {
                (ICMP_TIME_EXCEEDED, 0)
            } else {
                (ICMPV6_TIME_EXCEEDED, 0)
            };
            self.icmp_error(
                now,
                pi,
                eth_src,
                eth_unicast,
                [ty, code, 0, 0, 0, 0, 0, 0],
                out,
            );
            return dropped(DropReason::TtlExceeded);
        }
        // Link-local sources never leave their link (RFC 4291 2.5.6).
        let scoped = matches!(now_info.src, IpAddr::V6(s) if is_link_local_v6(&s));
        let hop = self
            .fw
            .topology()
            .next_hop(now_info.dst)
            .and_then(|(i, h)| self.port_index(i).map(|p| (p, h)));
        let (Some((egress, hop)), false) = (hop, scoped) else {
            let head = if before.v4 {
                [ICMP_DEST_UNREACH, 0, 0, 0, 0, 0, 0, 0]
            } else {
                [
                    ICMPV6_DEST_UNREACH,
                    if scoped { 2 } else { 0 },
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ]
            };
            self.keep_orig(frame, before, gso, d.translated);
            self.icmp_error(now, pi, eth_src, eth_unicast, head, out);
            return dropped(DropReason::NoRoute);
        };
        let mtu = self
            .ports
            .get(egress)
            .map_or(1500, |p| usize::from(p.port.mtu));
        let whole = frame.get(..ETH_LEN + now_info.len).unwrap_or(&[]);
        let seg_len = gso.and_then(|g| gso::segment_ip_len(whole, g));
        let gso = gso.filter(|_| seg_len.is_some());
        // A super-frame leaves as its segments: those are what must fit.
        let wire_len = seg_len.unwrap_or(now_info.len);
        if wire_len > mtu && (now_info.df || !now_info.v4) {
            let head = if now_info.v4 {
                let [m0, m1] = u16::try_from(mtu).unwrap_or(u16::MAX).to_be_bytes();
                [ICMP_DEST_UNREACH, 4, 0, 0, 0, 0, m0, m1]
            } else {
                let [m0, m1, m2, m3] = u32::try_from(mtu).unwrap_or(u32::MAX).to_be_bytes();
                [ICMPV6_PACKET_TOO_BIG, 0, 0, 0, m0, m1, m2, m3]
            };
            self.icmp_error(now, pi, eth_src, eth_unicast, head, out);
            return dropped(DropReason::PacketTooBig);
        }
        let Some(ip) = frame.get_mut(ETH_LEN..ETH_LEN + now_info.len) else {
            return dropped(DropReason::Truncated);
        };
        decrement_ttl(ip);
        let Some(frame) = frame.get_mut(..ETH_LEN + now_info.len) else {
            return dropped(DropReason::Truncated);
        };
        match self.transmit(now, egress, hop, frame, gso, out) {
            Ok(Tx::Sent) => Handled::Forwarded {
                out: self.iface_of(egress),
                decision: d,
            },
            Ok(Tx::Queued) => Handled::Queued,
            Err(r) => dropped(r),
        }
    }

    /// Keeps the start of the packet as it arrived, when not kept already and still as it
    /// arrived (a translated packet gets no error rather than one leaking the translation).
    fn keep_orig(&mut self, frame: &[u8], before: &IpInfo, gso: Option<Gso>, translated: bool) {
        if !self.orig.is_empty() || translated {
            return;
        }
        self.keep_quote(frame, before, gso);
    }

    /// Sends an ICMP error about the kept packet back to its sender, when one may be sent.
    fn icmp_error(
        &mut self,
        now: Time,
        pi: usize,
        eth_src: [u8; 6],
        eth_unicast: bool,
        head: [u8; 8],
        out: &mut Out,
    ) -> bool {
        let Ok(q) = ip_info_prefix(&self.orig) else {
            return false;
        };
        if !eth_unicast
            || !is_unicast(q.src)
            || !is_unicast(q.dst)
            || self.is_directed_broadcast(q.dst)
            || self.is_directed_broadcast(q.src)
            || q.later_fragment
            || is_icmp_error(&self.orig, &q)
        {
            return false;
        }
        let Some(from) = self.ports.get(pi).and_then(|p| p.source_for(q.src)) else {
            return false;
        };
        if !self.bucket.take(now) {
            self.stats.icmp_rate_limited += 1;
            return false;
        }
        let id = self.next_id();
        let tos = if q.v4 { 0xc0 } else { 0 };
        let orig = core::mem::take(&mut self.orig);
        let ok = push_icmp(&mut self.tx, from, q.src, id, tos, head, &orig);
        self.orig = orig;
        if ok && self.direct(pi, eth_src, out) {
            self.stats.icmp_errors_sent += 1;
            return true;
        }
        false
    }

    fn next_id(&mut self) -> u16 {
        self.ip_id = self.ip_id.wrapping_add(1);
        self.ip_id
    }

    /// Sends `self.tx` (a whole frame) out of port `pi` to `mac`.
    fn direct(&mut self, pi: usize, mac: [u8; 6], out: &mut Out) -> bool {
        let Some(p) = self.ports.get(pi) else {
            return false;
        };
        let ethertype = u16_at(&self.tx, 12).unwrap_or(ETHERTYPE_IPV4);
        write_eth(&mut self.tx, mac, p.port.mac, ethertype);
        out.push(p.port.iface, &self.tx);
        true
    }

    /// Sends a frame whose IP packet is ready (TTL done) towards `hop` out of port `egress`:
    /// fragmented when longer than the port's MTU (the caller has checked it may be), with
    /// the MACs filled in, or queued until the neighbour is resolved. A super-frame (`gso`)
    /// goes whole when its segments fit the MTU, else is cut into them, each sent (and
    /// fragmented) like any frame.
    fn transmit(
        &mut self,
        now: Time,
        egress: usize,
        hop: IpAddr,
        frame: &mut [u8],
        gso: Option<Gso>,
        out: &mut Out,
    ) -> Result<Tx, DropReason> {
        let Some(p) = self.ports.get(egress) else {
            return Err(DropReason::NoRoute);
        };
        let (mac, iface, mtu) = (p.port.mac, p.port.iface, usize::from(p.port.mtu));
        let gso = match (gso, gso.and_then(|g| gso::segment_ip_len(frame, g))) {
            // Checked by the caller: the segments may be fragmented.
            (Some(g), Some(len)) if len > mtu => {
                return self.transmit_segments(now, egress, hop, frame, g, out)
            }
            (Some(g), Some(_)) => Some(g),
            _ => None,
        };
        let ethertype = u16_at(frame, 12).unwrap_or(0);
        write_eth(frame, [0; 6], mac, ethertype);
        let ip_len = frame.len().saturating_sub(ETH_LEN);
        let lookup = self.neigh.lookup(now, iface, hop);
        let probe = match lookup {
            Lookup::Known(_, p) | Lookup::Resolving(p) => p,
            Lookup::Failed => None,
        };
        if let Some(p) = probe {
            self.solicit(p, out);
        }
        if ip_len <= mtu || gso.is_some() {
            return self.deliver(lookup, iface, hop, frame, Offload { gso }, out);
        }
        let (Some(eth), Some(ip)) = (frame.get(..ETH_LEN), frame.get(ETH_LEN..)) else {
            return Err(DropReason::Truncated);
        };
        if ethertype != ETHERTYPE_IPV4 {
            return Err(DropReason::PacketTooBig);
        }
        let mut scratch = core::mem::take(&mut self.scratch);
        let mut result: Result<Tx, DropReason> = Err(DropReason::PacketTooBig);
        let mut count = 0u64;
        let done = fragment_v4(eth, ip, mtu, &mut scratch, |f| {
            count += 1;
            let r = match lookup {
                Lookup::Known(m, _) => {
                    out.push(iface, f);
                    if let Some((_, s, _, _)) = out.frames.last() {
                        let s = *s;
                        if let Some(d) = out.buf.get_mut(s..s + 6) {
                            d.copy_from_slice(&m);
                        }
                    }
                    Ok(Tx::Sent)
                }
                Lookup::Resolving(_) => {
                    let pushed = self.neigh.enqueue(iface, hop, f, Offload::NONE);
                    self.stats.drop(
                        DropReason::NeighbourUnresolved,
                        u64::try_from(pushed).unwrap_or(0),
                    );
                    Ok(Tx::Queued)
                }
                Lookup::Failed => Err(DropReason::NeighbourUnresolved),
            };
            result = match (&result, r) {
                (Ok(Tx::Sent), _) | (_, Ok(Tx::Sent)) => Ok(Tx::Sent),
                (_, r) => r,
            };
        });
        self.scratch = scratch;
        if !done {
            return Err(DropReason::PacketTooBig);
        }
        self.stats.fragments_sent += count;
        result
    }

    /// Cuts a super-frame whose segments are too long for the egress port into them and
    /// sends each (fragmented) like any frame.
    fn transmit_segments(
        &mut self,
        now: Time,
        egress: usize,
        hop: IpAddr,
        frame: &[u8],
        gso: Gso,
        out: &mut Out,
    ) -> Result<Tx, DropReason> {
        let mut segmenter = core::mem::take(&mut self.segmenter);
        let mut result: Result<Tx, DropReason> = Err(DropReason::PacketTooBig);
        let done = segmenter.segment_gso(frame, gso, |seg| {
            let r = self.transmit(now, egress, hop, seg, None, out);
            result = match (&result, r) {
                (Ok(Tx::Sent), _) | (_, Ok(Tx::Sent)) => Ok(Tx::Sent),
                (_, r) => r,
            };
        });
        self.segmenter = segmenter;
        match done {
            Ok(_) => {
                self.stats.gso_segmented += 1;
                result
            }
            Err(_) => Err(DropReason::Truncated),
        }
    }

    fn deliver(
        &mut self,
        lookup: Lookup,
        iface: IfaceId,
        hop: IpAddr,
        frame: &mut [u8],
        offload: Offload,
        out: &mut Out,
    ) -> Result<Tx, DropReason> {
        match lookup {
            Lookup::Known(m, _) => {
                if let Some(d) = frame.get_mut(..6) {
                    d.copy_from_slice(&m);
                }
                self.stats.gso_forwarded += u64::from(offload.gso.is_some());
                out.push_offloaded(iface, frame, offload);
                Ok(Tx::Sent)
            }
            Lookup::Resolving(_) => {
                let pushed = self.neigh.enqueue(iface, hop, frame, offload);
                self.stats.drop(
                    DropReason::NeighbourUnresolved,
                    u64::try_from(pushed).unwrap_or(0),
                );
                Ok(Tx::Queued)
            }
            Lookup::Failed => Err(DropReason::NeighbourUnresolved),
        }
    }

    /// Routes a packet the router sends (in `tx`, a whole frame) by its destination.
    fn route_out(&mut self, now: Time, tx: &mut [u8], out: &mut Out) -> Result<Tx, DropReason> {
        let info = ip_info(tx.get(ETH_LEN..).unwrap_or(&[]))?;
        let (egress, hop) = self
            .fw
            .topology()
            .next_hop(info.dst)
            .and_then(|(i, h)| self.port_index(i).map(|p| (p, h)))
            .ok_or(DropReason::NoRoute)?;
        let mtu = self
            .ports
            .get(egress)
            .map_or(1500, |p| usize::from(p.port.mtu));
        if info.len > mtu && (info.df || !info.v4) {
            return Err(DropReason::PacketTooBig);
        }
        let frame = tx
            .get_mut(..ETH_LEN + info.len)
            .ok_or(DropReason::Truncated)?;
        self.transmit(now, egress, hop, frame, None, out)
    }

    /// Sends a packet the router originates (in `self.tx`, a whole frame) through the
    /// firewall's output chain, then routes it; a drop is counted.
    fn originate(&mut self, now: Time, out: &mut Out) -> bool {
        let mut tx = core::mem::take(&mut self.tx);
        let len = tx.len();
        let d = self
            .fw
            .process_in_place(now, LinkType::Ethernet, &mut tx, len, Ingress::Local);
        let r = if d.verdict == Verdict::Accept {
            self.route_out(now, &mut tx, out)
        } else {
            Err(d.outcome.reason.unwrap_or(DropReason::RuleDrop))
        };
        self.tx = tx;
        match r {
            Ok(_) => true,
            Err(reason) => {
                self.stats.drop(reason, 1);
                false
            }
        }
    }

    // --- For the router -------------------------------------------------------------------

    fn local(
        &mut self,
        now: Time,
        eth_unicast: bool,
        frame: &mut [u8],
        d: Decision,
        out: &mut Out,
    ) -> Handled {
        let ip = frame.get(ETH_LEN..).unwrap_or(&[]);
        let Ok(info) = ip_info(ip) else {
            return Handled::Local { decision: d };
        };
        let to_us = eth_unicast && self.owns(info.dst);
        let Some(packet) = ip.get(..info.len) else {
            return Handled::Local { decision: d };
        };
        use keepstate_engine::wire::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
        let ty = packet.get(info.l4).copied();
        match (info.proto, ty) {
            (Some(PROTO_ICMP), Some(ICMP_ECHO_REQUEST))
            | (Some(PROTO_ICMPV6), Some(ICMPV6_ECHO_REQUEST))
                if to_us && !info.fragment =>
            {
                let sent = self.echo_reply(packet, &info) && self.originate(now, out);
                self.stats.echo_replies_sent += u64::from(sent);
            }
            (Some(PROTO_TCP | PROTO_UDP), _) => {
                self.stats.drop(DropReason::LocalPortClosed, 1);
                if !to_us || self.is_directed_broadcast(info.dst) {
                    return Handled::Local { decision: d };
                }
                // `build` stays silent about RSTs, fragments and non-unicast addresses.
                let mut tx = core::mem::take(&mut self.tx);
                tx.clear();
                tx.extend_from_slice(&[0; ETH_LEN]);
                let ethertype = if info.v4 {
                    ETHERTYPE_IPV4
                } else {
                    ETHERTYPE_IPV6
                };
                write_eth(&mut tx, [0; 6], [0; 6], ethertype);
                self.scratch.clear();
                let built =
                    reject::build(packet, RejectCode::PortUnreachable, &mut self.scratch).is_ok();
                tx.extend_from_slice(&self.scratch);
                self.tx = tx;
                if !built {
                    return Handled::Local { decision: d };
                }
                if !self.bucket.take(now) {
                    self.stats.icmp_rate_limited += 1;
                    return Handled::Local { decision: d };
                }
                if self.originate(now, out) {
                    if info.proto == Some(PROTO_TCP) {
                        self.stats.resets_sent += 1;
                    } else {
                        self.stats.icmp_errors_sent += 1;
                    }
                }
            }
            _ => {}
        }
        Handled::Local { decision: d }
    }

    /// Builds the echo reply to `req` (an IP packet) into `self.tx`.
    fn echo_reply(&mut self, req: &[u8], info: &IpInfo) -> bool {
        let Some(icmp) = req.get(info.l4..) else {
            return false;
        };
        let (Some(rest), Some(body)) = (array_at::<4>(icmp, 4), icmp.get(8..)) else {
            return false;
        };
        let [r0, r1, r2, r3] = rest;
        let ty = if info.v4 {
            ICMP_ECHO_REPLY
        } else {
            ICMPV6_ECHO_REPLY
        };
        let tos = if info.v4 {
            req.get(1).copied().unwrap_or(0)
        } else {
            0
        };
        let id = self.next_id();
        push_icmp(
            &mut self.tx,
            info.dst,
            info.src,
            id,
            tos,
            [ty, 0, 0, 0, r0, r1, r2, r3],
            body,
        )
    }

    /// A packet to a link-local destination (routers never forward those): echo requests to
    /// the port's own link-local address are answered straight back.
    fn for_link_local(
        &mut self,
        pi: usize,
        eth_src: [u8; 6],
        dst: Ipv6Addr,
        frame: &[u8],
        out: &mut Out,
    ) -> Handled {
        let iface = self.iface_of(pi);
        let ours = self.ports.get(pi).is_some_and(|p| p.link_local == dst);
        if !ours {
            return Handled::Dropped {
                reason: DropReason::NotForUs,
                decision: None,
            };
        }
        let ip = frame.get(ETH_LEN..).unwrap_or(&[]);
        let Ok(info) = ip_info(ip) else {
            return Handled::Dropped {
                reason: DropReason::Truncated,
                decision: None,
            };
        };
        let packet = ip.get(..info.len).unwrap_or(&[]);
        let echo = info.proto == Some(keepstate_engine::wire::PROTO_ICMPV6)
            && packet.get(info.l4) == Some(&ICMPV6_ECHO_REQUEST)
            && !info.fragment
            && is_unicast(info.src);
        if !echo {
            return Handled::Dropped {
                reason: DropReason::LocalPortClosed,
                decision: None,
            };
        }
        let mut decision = link_decision(iface, ETHERTYPE_IPV6);
        decision.outcome.meta.family = Some(keepstate_engine::Family::V6);
        decision.outcome.meta.proto = info.proto;
        decision.outcome.meta.src = Some(info.src);
        decision.outcome.meta.dst = Some(info.dst);
        decision.outcome.meta.icmp_type = Some(ICMPV6_ECHO_REQUEST);
        if self.echo_reply(packet, &info) && self.direct(pi, eth_src, out) {
            self.stats.echo_replies_sent += 1;
        }
        Handled::Local { decision }
    }
}

/// The decision for a frame the IP firewall does not judge (ARP, neighbour discovery):
/// accepted, `by: None`, as the firewall reports ARP.
fn link_decision(iface: IfaceId, ethertype: u16) -> Decision {
    let mut d = Decision {
        in_iface: Some(iface),
        ..Decision::BLANK
    };
    d.outcome.meta.link.ethertype = ethertype;
    d.outcome.meta.link.ip_offset = 14;
    d
}
