//! Test harness: etherparse-built packets, a simulated clock, and TCP flows with tracked
//! sequence numbers. Packets are never built with engine code.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

pub use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IcmpEchoHeader, Icmpv4Type, Icmpv6Type,
    IpFragOffset, IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv6Extensions,
    Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, PacketBuilder, TcpOptionElement, VlanId,
};
pub use keepstate_engine::{
    Config, Conn, CtState, Direction, DropReason, Engine, Family, L4Tuple, LinkType, Outcome,
    Packet, TcpState, Time, Tuple, Verdict,
};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

pub const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const MAC_S: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

pub fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::from([a, b, c, d])
}

pub fn v6(last: u16) -> IpAddr {
    IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, last])
}

fn ip4(a: IpAddr) -> [u8; 4] {
    match a {
        IpAddr::V4(x) => x.octets(),
        IpAddr::V6(_) => panic!("expected IPv4"),
    }
}

fn ip6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(x) => x.octets(),
        IpAddr::V4(_) => panic!("expected IPv6"),
    }
}

/// Ethernet II base step for a given address pair (IPv4 or IPv6).
fn eth_ip(src: IpAddr, dst: IpAddr) -> etherparse::PacketBuilderStep<IpHeaders> {
    let b = PacketBuilder::ethernet2(MAC_C, MAC_S);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    }
}

/// Applies TCP flags, ack and options to a TCP builder step and writes the packet.
pub fn finish_tcp(
    mut b: etherparse::PacketBuilderStep<etherparse::TcpHeader>,
    ack: u32,
    flags: u8,
    opts: &[TcpOptionElement],
    payload: &[u8],
) -> Vec<u8> {
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & RST != 0 {
        b = b.rst();
    }
    if flags & PSH != 0 {
        b = b.psh();
    }
    if flags & ACK != 0 {
        b = b.ack(ack);
    }
    if flags & URG != 0 {
        b = b.urg(0);
    }
    if !opts.is_empty() {
        b = b.options(opts).unwrap();
    }
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).unwrap();
    v
}

/// An Ethernet frame carrying one TCP segment.
#[allow(clippy::too_many_arguments)]
pub fn tcp_frame(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    opts: &[TcpOptionElement],
    payload: &[u8],
) -> Vec<u8> {
    finish_tcp(
        eth_ip(src, dst).tcp(sport, dport, seq, win),
        ack,
        flags,
        opts,
        payload,
    )
}

/// An Ethernet frame carrying one UDP datagram.
pub fn udp_frame(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = eth_ip(src, dst).udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// A raw IPv4/IPv6 packet (no link header) carrying one UDP datagram.
pub fn udp_raw(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64)
            .udp(sport, dport)
            .write(&mut v, payload)
            .unwrap(),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64)
            .udp(sport, dport)
            .write(&mut v, payload)
            .unwrap(),
        _ => panic!("mixed families"),
    }
    v
}

/// A raw IP packet carrying one TCP segment (for embedding in ICMP errors).
#[allow(clippy::too_many_arguments)]
pub fn tcp_raw(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    finish_tcp(b.tcp(sport, dport, seq, 65535), ack, flags, &[], payload)
}

/// An Ethernet frame with an ICMPv4 message of the given type and payload.
pub fn icmp4_frame(src: IpAddr, dst: IpAddr, ty: Icmpv4Type, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_S, MAC_C)
        .ipv4(ip4(src), ip4(dst), 64)
        .icmpv4(ty);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// An Ethernet frame with an ICMPv6 message of the given type and payload.
pub fn icmp6_frame(src: IpAddr, dst: IpAddr, hop: u8, ty: Icmpv6Type, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_S, MAC_C)
        .ipv6(ip6(src), ip6(dst), hop)
        .icmpv6(ty);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub fn echo4(src: IpAddr, dst: IpAddr, reply: bool, id: u16, seq: u16) -> Vec<u8> {
    let e = IcmpEchoHeader { id, seq };
    let ty = if reply {
        Icmpv4Type::EchoReply(e)
    } else {
        Icmpv4Type::EchoRequest(e)
    };
    icmp4_frame(src, dst, ty, b"pingdata")
}

/// The simulated world: one engine and a clock.
pub struct Sim {
    pub engine: Engine,
    pub now: Time,
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

impl Sim {
    pub fn new() -> Sim {
        Sim::with(Config::default())
    }

    pub fn with(cfg: Config) -> Sim {
        Sim {
            engine: Engine::new(cfg),
            now: Time::from_secs(1_000),
        }
    }

    pub fn advance(&mut self, secs: u64) {
        self.now = self.now.saturating_add_secs(secs);
    }

    pub fn advance_ms(&mut self, ms: u64) {
        self.now = Time::from_nanos(self.now.as_nanos() + ms * 1_000_000);
    }

    /// Sets the clock to `start + secs` where start is the initial 1000 s epoch.
    pub fn at(&mut self, secs: u64) {
        self.now = Time::from_secs(1_000 + secs);
    }

    pub fn eth(&mut self, frame: &[u8]) -> Outcome {
        self.engine.process(self.now, LinkType::Ethernet, frame)
    }

    pub fn send(&mut self, link: LinkType, data: &[u8]) -> Outcome {
        self.engine.process(self.now, link, data)
    }

    pub fn expire(&mut self) {
        self.engine.expire(self.now);
    }

    pub fn conns(&self) -> Vec<Conn> {
        self.engine.connections().collect()
    }

    /// The one tracked connection (panics if there is not exactly one).
    pub fn only(&self) -> Conn {
        let c = self.conns();
        assert_eq!(c.len(), 1, "expected exactly one connection, got {c:#?}");
        c[0]
    }

    pub fn tcp_state(&self) -> Option<TcpState> {
        self.only().tcp_state
    }
}

#[track_caller]
pub fn expect(o: &Outcome, state: CtState, dir: Option<Direction>) {
    assert_eq!(
        (o.state, o.dir, o.reason),
        (state, dir, None),
        "unexpected outcome {o:?}"
    );
    assert_eq!(o.verdict, Verdict::Accept, "unexpected verdict {o:?}");
}

#[track_caller]
pub fn expect_new(o: &Outcome) {
    expect(o, CtState::New, Some(Direction::Original));
}

#[track_caller]
pub fn expect_est_orig(o: &Outcome) {
    expect(o, CtState::Established, Some(Direction::Original));
}

#[track_caller]
pub fn expect_est_reply(o: &Outcome) {
    expect(o, CtState::Established, Some(Direction::Reply));
}

#[track_caller]
pub fn expect_invalid(o: &Outcome, reason: DropReason) {
    assert_eq!(
        (o.state, o.dir, o.reason),
        (CtState::Invalid, None, Some(reason)),
        "unexpected outcome {o:?}"
    );
    assert_eq!(
        o.verdict,
        Verdict::Accept,
        "invalid packets are accepted (no policy): {o:?}"
    );
}

/// A TCP connection between a client and a server with tracked sequence numbers.
/// `cseq`/`sseq` are the next sequence numbers each side will send; acks acknowledge
/// everything the peer has sent.
#[derive(Clone, Debug)]
pub struct Flow {
    pub c: IpAddr,
    pub s: IpAddr,
    pub cp: u16,
    pub sp: u16,
    pub cseq: u32,
    pub sseq: u32,
    pub cwin: u16,
    pub swin: u16,
}

impl Flow {
    pub fn v4() -> Flow {
        Flow {
            c: v4(10, 0, 0, 1),
            s: v4(192, 0, 2, 10),
            cp: 40_000,
            sp: 80,
            cseq: 1_000,
            sseq: 500_000,
            cwin: 65_535,
            swin: 65_535,
        }
    }

    pub fn v6() -> Flow {
        Flow {
            c: v6(1),
            s: v6(0x10),
            ..Flow::v4()
        }
    }

    /// A segment from the client (`from_client`) or server with explicit fields.
    #[allow(clippy::too_many_arguments)]
    pub fn seg(
        &self,
        from_client: bool,
        seq: u32,
        ack: u32,
        flags: u8,
        win: u16,
        opts: &[TcpOptionElement],
        payload: &[u8],
    ) -> Vec<u8> {
        if from_client {
            tcp_frame(
                self.c, self.s, self.cp, self.sp, seq, ack, flags, win, opts, payload,
            )
        } else {
            tcp_frame(
                self.s, self.c, self.sp, self.cp, seq, ack, flags, win, opts, payload,
            )
        }
    }

    fn advance_by(flags: u8, payload: &[u8]) -> u32 {
        let mut n = u32::try_from(payload.len()).unwrap();
        if flags & SYN != 0 {
            n += 1;
        }
        if flags & FIN != 0 {
            n += 1;
        }
        n
    }

    /// Client sends `flags` with its tracked seq (and ack of all server data).
    pub fn c(&mut self, sim: &mut Sim, flags: u8, payload: &[u8]) -> Outcome {
        self.c_opts(sim, flags, &[], payload)
    }

    pub fn c_opts(
        &mut self,
        sim: &mut Sim,
        flags: u8,
        opts: &[TcpOptionElement],
        payload: &[u8],
    ) -> Outcome {
        let f = self.seg(true, self.cseq, self.sseq, flags, self.cwin, opts, payload);
        self.cseq = self.cseq.wrapping_add(Self::advance_by(flags, payload));
        sim.eth(&f)
    }

    /// Server sends `flags` with its tracked seq (and ack of all client data).
    pub fn s(&mut self, sim: &mut Sim, flags: u8, payload: &[u8]) -> Outcome {
        self.s_opts(sim, flags, &[], payload)
    }

    pub fn s_opts(
        &mut self,
        sim: &mut Sim,
        flags: u8,
        opts: &[TcpOptionElement],
        payload: &[u8],
    ) -> Outcome {
        let f = self.seg(false, self.sseq, self.cseq, flags, self.swin, opts, payload);
        self.sseq = self.sseq.wrapping_add(Self::advance_by(flags, payload));
        sim.eth(&f)
    }

    /// SYN, SYN/ACK, ACK with the expected outcomes.
    #[track_caller]
    pub fn handshake(&mut self, sim: &mut Sim) {
        expect_new(&self.c(sim, SYN, &[]));
        expect_est_reply(&self.s(sim, SYN | ACK, &[]));
        expect_est_orig(&self.c(sim, ACK, &[]));
        assert_eq!(sim.tcp_state(), Some(TcpState::Established));
    }
}

/// A tiny deterministic PRNG (xorshift64*).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % (n as u64)).unwrap()
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }
}

pub const ALL_LINKS: [LinkType; 7] = LinkType::ALL;
