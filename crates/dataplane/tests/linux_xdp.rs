//! AF_XDP, as root: XDP sockets on veth pairs in network namespaces this test creates and
//! removes. The other end of the pair is read and written with an AF_PACKET ring.
#![cfg(target_os = "linux")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod netns;
use netns::*;

use std::process::Command;
use std::time::{Duration, Instant};

use etherparse::{
    EtherType, Ethernet2Header, NetHeaders, PacketBuilder, PacketHeaders, PayloadSlice,
    TransportHeader,
};
use keepstate_dataplane::gso::{GsoKind, Offload};
use keepstate_dataplane::linux::{
    if_info, set_up, IfInfo, IoErrorKind, Ring, RingConfig, XdpConfig, XdpMode, XdpProgram,
    XdpSocket,
};

/// A namespace holding a veth pair `a`/`b`, both up.
struct Pair {
    ns: String,
    a: IfInfo,
    b: IfInfo,
    _guard: Netns,
}

impl Pair {
    fn new(test: &str, tag: char) -> Option<Pair> {
        let pid = std::process::id();
        let ns = format!("ksxdp-{pid}-{tag}");
        let guard = Netns::new(test, std::slice::from_ref(&ns))?;
        let (a, b) = (format!("ksx{pid}{tag}a"), format!("ksx{pid}{tag}b"));
        ip(&[
            "-n", &ns, "link", "add", &a, "type", "veth", "peer", "name", &b,
        ]);
        let (a, b) = in_netns(&ns, || {
            set_up(&a).unwrap();
            set_up(&b).unwrap();
            (if_info(&a).unwrap(), if_info(&b).unwrap())
        });
        Some(Pair {
            ns,
            a,
            b,
            _guard: guard,
        })
    }

    /// `ip link show` of `dev` (which names an attached XDP program).
    fn link_show(&self, dev: &str) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.ns, "-d", "link", "show", "dev", dev])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn payload_pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// A test frame: an experimental ethertype and a sequence number, `len` bytes in all.
fn test_frame(src: [u8; 6], dst: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    Ethernet2Header {
        source: src,
        destination: dst,
        ether_type: EtherType(0x88b5),
    }
    .write(&mut f)
    .unwrap();
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend(payload_pattern(len - f.len(), seq as u8));
    f
}

fn is_ours(f: &[u8]) -> bool {
    matches!(f.get(12..14), Some([0x88, 0xb5]) | Some([0x08, 0x00]))
}

fn collect_ring(ring: &mut Ring, dur: Duration, want: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + dur;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        ring.recv(20, |f, _| {
            if is_ours(f) {
                got.push(f.to_vec());
            }
        })
        .unwrap();
    }
    got
}

fn collect_xsk(sock: &mut XdpSocket, dur: Duration, want: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + dur;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        sock.recv(20, |f, o| {
            assert_eq!(o, Offload::NONE, "XDP sees no offloads");
            if is_ours(f) {
                got.push(f.to_vec());
            }
        })
        .unwrap();
    }
    got
}

/// A UDP/IPv4 frame built by etherparse, with valid checksums.
fn udp_frame(src: [u8; 6], dst: [u8; 6], seq: u32) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(src, dst)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1000, 2000)
        .write(&mut f, &payload_pattern(100 + seq as usize, seq as u8))
        .unwrap();
    f
}

#[test]
fn xdp_socket_carries_frames_both_ways_and_detaches_on_drop() {
    let test = "xdp_socket_carries_frames_both_ways_and_detaches_on_drop";
    let Some(pair) = Pair::new(test, 'f') else {
        return;
    };
    let cfg = XdpConfig::default();
    let (mut xa, mut rb) = in_netns(&pair.ns, || {
        let xa = XdpSocket::open(&pair.a, 0, &cfg).unwrap_or_else(|e| panic!("{e}"));
        let rb = Ring::open(&pair.b, &RingConfig::default()).unwrap();
        (xa, rb)
    });
    eprintln!(
        "{test}: XDP {} mode, {} on queue {}",
        xa.mode(),
        if xa.zero_copy() { "zero-copy" } else { "copy" },
        xa.queue()
    );
    assert_eq!(xa.mode(), XdpMode::Native, "veth supports native XDP");
    assert!(
        pair.link_show(&pair.a.name).contains("xdp"),
        "the program is attached: {}",
        pair.link_show(&pair.a.name)
    );

    // Into the XDP socket: 200 frames of varied sizes (more than a receive batch), every
    // 10th a UDP frame with checksums.
    let sent: Vec<Vec<u8>> = (0..200u32)
        .map(|i| {
            if i % 10 == 9 {
                udp_frame(pair.b.mac, pair.a.mac, i)
            } else {
                test_frame(pair.b.mac, pair.a.mac, i, 60 + (i as usize * 97) % 1455)
            }
        })
        .collect();
    let mut got = Vec::new();
    // In chunks, so the veth's receive queue (on a veth, frames wait in a ring of 256)
    // never overflows.
    for chunk in sent.chunks(50) {
        assert_eq!(
            rb.send(chunk.iter().map(Vec::as_slice)).unwrap(),
            chunk.len()
        );
        got.extend(collect_xsk(&mut xa, Duration::from_secs(3), chunk.len()));
    }
    assert_eq!(got.len(), sent.len(), "all frames arrive on the XDP socket");
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(g, s, "frame {i} arrives intact and in order");
    }
    let h = PacketHeaders::from_ethernet_slice(&got[9]).unwrap();
    match (&h.net, &h.transport, &h.payload) {
        (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Udp(u)), PayloadSlice::Udp(p)) => {
            assert_eq!(ip.header_checksum, ip.calc_header_checksum());
            assert_eq!(u.checksum, u.calc_checksum_ipv4(ip, p).unwrap());
        }
        other => panic!("not UDP/IPv4: {other:?}"),
    }

    // Out of the XDP socket: 3000 frames (more than its transmit frames, so they are
    // recycled through the completion ring), received on the other end.
    let out: Vec<Vec<u8>> = (0..3000u32)
        .map(|i| {
            test_frame(
                pair.a.mac,
                pair.b.mac,
                10_000 + i,
                60 + (i as usize * 53) % 1455,
            )
        })
        .collect();
    let mut got = Vec::new();
    for chunk in out.chunks(100) {
        assert_eq!(
            xa.send(chunk.iter().map(Vec::as_slice)).unwrap(),
            chunk.len()
        );
        got.extend(collect_ring(&mut rb, Duration::from_secs(3), chunk.len()));
    }
    assert_eq!(
        got.len(),
        out.len(),
        "all frames sent arrive on the other end"
    );
    for (i, (g, s)) in got.iter().zip(&out).enumerate() {
        assert_eq!(g, s, "sent frame {i} arrives intact and in order");
    }

    // Larger than the MTU: skipped, the rest still go.
    let big = test_frame(pair.a.mac, pair.b.mac, 7777, 1600);
    let small = test_frame(pair.a.mac, pair.b.mac, 7778, 100);
    assert_eq!(
        xa.send([big.as_slice(), small.as_slice()].into_iter())
            .unwrap(),
        1
    );
    assert_eq!(
        collect_ring(&mut rb, Duration::from_secs(2), 1),
        vec![small]
    );

    let st = xa.stats();
    eprintln!("{test}: {st:?}");
    // The peer's own IPv6 chatter (MLD, router solicitations) may come along.
    assert!(st.frames_received >= 200, "{st:?}");
    assert_eq!(st.frames_sent, 3001);
    assert_eq!(st.send_rejected, 1);
    assert_eq!(st.rx_invalid, 0);
    assert_eq!(st.kernel_rx_dropped, 0);
    assert_eq!(st.kernel_tx_invalid_descs, 0);

    drop(xa);
    let shown = pair.link_show(&pair.a.name);
    assert!(!shown.contains("xdp"), "detached after drop: {shown}");
    // The kernel has the interface again: a frame sent now reaches an AF_PACKET socket.
    let ra = in_netns(&pair.ns, || {
        Ring::open(&pair.a, &RingConfig::default()).unwrap()
    });
    let mut ra = ra;
    let after = test_frame(pair.b.mac, pair.a.mac, 9999, 80);
    assert_eq!(rb.send(std::iter::once(after.as_slice())).unwrap(), 1);
    assert_eq!(
        collect_ring(&mut ra, Duration::from_secs(2), 1),
        vec![after]
    );
}

#[test]
fn super_frames_sent_through_xdp_are_segmented() {
    let test = "super_frames_sent_through_xdp_are_segmented";
    let Some(pair) = Pair::new(test, 's') else {
        return;
    };
    let (mut xa, mut rb) = in_netns(&pair.ns, || {
        let xa = XdpSocket::open(&pair.a, 0, &XdpConfig::default()).unwrap();
        let rb = Ring::open(&pair.b, &RingConfig::default()).unwrap();
        (xa, rb)
    });
    // A TCP super-frame with a complete checksum, as the router holds one: 4000 bytes of
    // payload in segments of 1400.
    let payload = payload_pattern(4000, 7);
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(pair.a.mac, pair.b.mac)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 80, 1000, 512)
        .ack(1)
        .psh()
        .write(&mut frame, &payload)
        .unwrap();
    let n = xa
        .send_offloaded(std::iter::once((
            frame.as_mut_slice(),
            Offload::gso(GsoKind::TcpV4, 1400),
        )))
        .unwrap();
    assert_eq!(n, 3);
    let got = collect_ring(&mut rb, Duration::from_secs(2), 3);
    assert_eq!(got.len(), 3);
    let mut joined = Vec::new();
    let mut seq = 1000u32;
    for g in &got {
        let h = PacketHeaders::from_ethernet_slice(g).unwrap();
        let (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Tcp(t)), PayloadSlice::Tcp(p)) =
            (&h.net, &h.transport, &h.payload)
        else {
            panic!("not TCP/IPv4");
        };
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        assert_eq!(t.checksum, t.calc_checksum_ipv4(ip, p).unwrap());
        assert_eq!(t.sequence_number, seq);
        assert!(g.len() <= 1514);
        seq += p.len() as u32;
        joined.extend_from_slice(p);
    }
    assert_eq!(joined, payload);
    assert_eq!(xa.stats().gso_segmented, 1);
}

#[test]
fn queues_without_a_socket_pass_frames_to_the_kernel() {
    let test = "queues_without_a_socket_pass_frames_to_the_kernel";
    let pid = std::process::id();
    let (n1, n2) = (format!("ksxdp-{pid}-p1"), format!("ksxdp-{pid}-p2"));
    let Some(_guard) = Netns::new(test, &[n1.clone(), n2.clone()]) else {
        return;
    };
    let (a, b) = (format!("ksx{pid}pa"), format!("ksx{pid}pb"));
    ip(&[
        "-n", &n1, "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &n2,
    ]);
    ip(&["-n", &n1, "addr", "add", "10.77.0.1/24", "dev", &a]);
    ip(&["-n", &n2, "addr", "add", "10.77.0.2/24", "dev", &b]);
    ip(&["-n", &n1, "link", "set", &a, "up"]);
    ip(&["-n", &n2, "link", "set", &b, "up"]);
    let prog = in_netns(&n1, || {
        let ia = if_info(&a).unwrap();
        // A socket on a queue the interface lacks is refused with a reason.
        let e = XdpSocket::open(&ia, 7, &XdpConfig::default()).unwrap_err();
        assert_eq!(e.kind(), IoErrorKind::InvalidConfig, "{e}");
        assert!(e.to_string().contains("queue 7"), "{e}");
        XdpProgram::attach(&ia, &XdpConfig::default()).unwrap()
    });
    assert_eq!(prog.queues(), 1);
    let ping = Command::new("ip")
        .args([
            "netns", "exec", &n2, "ping", "-c", "2", "-i", "0.2", "-W", "2",
        ])
        .arg("10.77.0.1")
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "ping through an XDP program without sockets: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    drop(prog);
}

#[test]
fn generic_mode_works_too() {
    let test = "generic_mode_works_too";
    let Some(pair) = Pair::new(test, 'g') else {
        return;
    };
    let cfg = XdpConfig {
        mode: Some(XdpMode::Generic),
        zero_copy: false,
        ..XdpConfig::default()
    };
    let (mut xa, mut rb) = in_netns(&pair.ns, || {
        let xa = XdpSocket::open(&pair.a, 0, &cfg).unwrap();
        let rb = Ring::open(&pair.b, &RingConfig::default()).unwrap();
        (xa, rb)
    });
    assert_eq!(xa.mode(), XdpMode::Generic);
    assert!(!xa.zero_copy());
    let sent: Vec<Vec<u8>> = (0..20u32)
        .map(|i| test_frame(pair.b.mac, pair.a.mac, i, 64 + i as usize * 50))
        .collect();
    assert_eq!(rb.send(sent.iter().map(Vec::as_slice)).unwrap(), 20);
    assert_eq!(collect_xsk(&mut xa, Duration::from_secs(3), 20), sent);
    let back = test_frame(pair.a.mac, pair.b.mac, 99, 500);
    assert_eq!(xa.send(std::iter::once(back.as_slice())).unwrap(), 1);
    assert_eq!(collect_ring(&mut rb, Duration::from_secs(2), 1), vec![back]);
}

#[test]
fn partial_checksums_of_a_veth_peer_are_completed() {
    let test = "partial_checksums_of_a_veth_peer_are_completed";
    let pid = std::process::id();
    let (n1, n2) = (format!("ksxdp-{pid}-c1"), format!("ksxdp-{pid}-c2"));
    let Some(_guard) = Netns::new(test, &[n1.clone(), n2.clone()]) else {
        return;
    };
    let (a, b) = (format!("ksx{pid}ca"), format!("ksx{pid}cb"));
    ip(&[
        "-n", &n1, "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &n2,
    ]);
    ip(&["-n", &n1, "link", "set", &a, "up"]);
    ip(&["-n", &n2, "addr", "add", "10.78.0.2/24", "dev", &b]);
    ip(&["-n", &n2, "addr", "add", "fd78::2/64", "dev", &b, "nodad"]);
    ip(&["-n", &n2, "link", "set", &b, "up"]);
    let mut xa = in_netns(&n1, || {
        let ia = if_info(&a).unwrap();
        XdpSocket::open(&ia, 0, &XdpConfig::default()).unwrap()
    });
    let ia = in_netns(&n1, || if_info(&a).unwrap());
    let mac: String = ia
        .mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    // Nobody answers ARP or ND behind an XDP socket: the peer is told the address.
    ip(&[
        "-n",
        &n2,
        "neigh",
        "add",
        "10.78.0.1",
        "lladdr",
        &mac,
        "dev",
        &b,
    ]);
    ip(&[
        "-n", &n2, "neigh", "add", "fd78::1", "lladdr", &mac, "dev", &b,
    ]);
    // The peer's stack sends UDP and a TCP SYN with tx checksum offload (veth's default):
    // CHECKSUM_PARTIAL, the field holding only the pseudo-header sum.
    in_netns(&n2, || {
        for dst in ["10.78.0.1:9", "[fd78::1]:9"] {
            let u = std::net::UdpSocket::bind(if dst.starts_with('[') {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            })
            .unwrap();
            u.send_to(&payload_pattern(300, 1), dst).unwrap();
            let _ = std::net::TcpStream::connect_timeout(
                &dst.parse().unwrap(),
                Duration::from_millis(100),
            );
        }
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 4 && Instant::now() < deadline {
        xa.recv(20, |f, _| {
            let Ok(h) = PacketHeaders::from_ethernet_slice(f) else {
                return;
            };
            let v6 = matches!(h.net, Some(NetHeaders::Ipv6(..)));
            match (&h.net, &h.transport, &h.payload) {
                (
                    Some(NetHeaders::Ipv4(ip, _)),
                    Some(TransportHeader::Udp(u)),
                    PayloadSlice::Udp(p),
                ) => {
                    assert_eq!(u.checksum, u.calc_checksum_ipv4(ip, p).unwrap(), "UDP/IPv4");
                    seen.insert(("udp", v6));
                }
                (
                    Some(NetHeaders::Ipv6(ip, _)),
                    Some(TransportHeader::Udp(u)),
                    PayloadSlice::Udp(p),
                ) => {
                    assert_eq!(u.checksum, u.calc_checksum_ipv6(ip, p).unwrap(), "UDP/IPv6");
                    seen.insert(("udp", v6));
                }
                (
                    Some(NetHeaders::Ipv4(ip, _)),
                    Some(TransportHeader::Tcp(t)),
                    PayloadSlice::Tcp(p),
                ) => {
                    assert_eq!(t.checksum, t.calc_checksum_ipv4(ip, p).unwrap(), "TCP/IPv4");
                    seen.insert(("tcp", v6));
                }
                (
                    Some(NetHeaders::Ipv6(ip, _)),
                    Some(TransportHeader::Tcp(t)),
                    PayloadSlice::Tcp(p),
                ) => {
                    assert_eq!(t.checksum, t.calc_checksum_ipv6(ip, p).unwrap(), "TCP/IPv6");
                    seen.insert(("tcp", v6));
                }
                _ => {}
            }
        })
        .unwrap();
    }
    assert_eq!(seen.len(), 4, "UDP and TCP, v4 and v6, arrived: {seen:?}");
    let st = xa.stats();
    assert!(st.checksums_completed >= 4, "{st:?}");
}

#[test]
fn only_pseudo_header_sums_are_taken_for_partial_checksums() {
    use keepstate_dataplane::linux::complete_partial_checksum;
    // A complete checksum is left alone; so are non-IP frames and fragments.
    let mut f = udp_frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], 5);
    let orig = f.clone();
    assert!(!complete_partial_checksum(&mut f));
    assert_eq!(f, orig);
    let mut short = f[..30].to_vec();
    assert!(!complete_partial_checksum(&mut short));
    let mut arp = test_frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], 1, 60);
    assert!(!complete_partial_checksum(&mut arp));
    // The pseudo-header sum in the field (as a sending stack leaves it): completed.
    let l4_len = (f.len() - 34) as u64;
    let mut s: u64 = 17 + l4_len;
    for w in f[26..34].chunks(2) {
        s += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    f[40..42].copy_from_slice(&(s as u16).to_be_bytes());
    assert_ne!(f, orig);
    assert!(complete_partial_checksum(&mut f));
    assert_eq!(f, orig, "completed to what etherparse computed");
    // Every truncation of it is handled without a panic.
    for n in 0..f.len() {
        let mut t = f[..n].to_vec();
        let _ = complete_partial_checksum(&mut t);
    }
}

#[test]
fn every_queue_of_a_multi_queue_veth_gets_its_socket() {
    let test = "every_queue_of_a_multi_queue_veth_gets_its_socket";
    let pid = std::process::id();
    let ns = format!("ksxdp-{pid}-m");
    let Some(_guard) = Netns::new(test, std::slice::from_ref(&ns)) else {
        return;
    };
    let (a, b) = (format!("ksx{pid}ma"), format!("ksx{pid}mb"));
    ip(&[
        "-n",
        &ns,
        "link",
        "add",
        &a,
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
        "type",
        "veth",
        "peer",
        "name",
        &b,
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
    ]);
    let (ia, ib, prog, mut socks, mut rb) = in_netns(&ns, || {
        set_up(&a).unwrap();
        set_up(&b).unwrap();
        let (ia, ib) = (if_info(&a).unwrap(), if_info(&b).unwrap());
        let cfg = XdpConfig::default();
        let prog = XdpProgram::attach(&ia, &cfg).unwrap();
        let socks: Vec<XdpSocket> = (0..prog.queues())
            .map(|q| XdpSocket::open_on(&prog, &ia, q, &cfg).unwrap())
            .collect();
        let rb = Ring::open(&ib, &RingConfig::default()).unwrap();
        (ia, ib, prog, socks, rb)
    });
    assert_eq!(prog.queues(), 2, "the veth has two receive queues");
    // UDP frames of many flows, so the sender's queue choice spreads them.
    let sent: Vec<Vec<u8>> = (0..200u32)
        .map(|i| {
            let mut f = Vec::new();
            PacketBuilder::ethernet2(ib.mac, ia.mac)
                .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
                .udp(1000 + i as u16, 2000)
                .write(&mut f, &i.to_be_bytes())
                .unwrap();
            f
        })
        .collect();
    let mut got = Vec::new();
    for chunk in sent.chunks(50) {
        assert_eq!(rb.send(chunk.iter().map(Vec::as_slice)).unwrap(), 50);
        let deadline = Instant::now() + Duration::from_secs(3);
        let want = got.len() + 50;
        while got.len() < want && Instant::now() < deadline {
            for s in &mut socks {
                s.recv(10, |f, _| {
                    if is_ours(f) {
                        got.push(f.to_vec());
                    }
                })
                .unwrap();
            }
        }
    }
    got.sort();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(got, want, "every frame arrives on one of the sockets");
    let per_queue: Vec<u64> = socks
        .iter_mut()
        .map(|s| s.stats().frames_received)
        .collect();
    eprintln!("{test}: frames per queue {per_queue:?}");
    // Each socket can send too.
    for (i, s) in socks.iter_mut().enumerate() {
        let f = test_frame(ia.mac, ib.mac, 500 + i as u32, 90);
        assert_eq!(s.send(std::iter::once(f.as_slice())).unwrap(), 1);
        assert_eq!(collect_ring(&mut rb, Duration::from_secs(2), 1), vec![f]);
    }
}
