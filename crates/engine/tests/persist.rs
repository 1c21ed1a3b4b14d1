//! Saving the state table and restoring it: a restored engine classifies and translates the
//! rest of every connection exactly as the engine that never stopped does, under any clock;
//! timeouts carry over as time left; mapped ports stay taken; damaged files are refused
//! without a panic and without touching the table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use keepstate_engine::persist::{reseal, MAGIC};
use keepstate_engine::{
    Hooks, NatReleased, NatRequest, PacketMeta, RestoreError, RestoreOptions, SnatRequest,
    Translation,
};
use std::net::IpAddr;

const WAN: [u8; 4] = [203, 0, 113, 2];

fn wan() -> IpAddr {
    IpAddr::from(WAN)
}

/// A small router's NAT: a port forward of 203.0.113.2:8080 to 10.0.0.5:80, and masquerade
/// of everything else from 10.0.0.0/8 behind 203.0.113.2 (endpoint-independent towards port
/// 443), each source translation reported when released.
#[derive(Default)]
struct Router {
    /// The request for the packet at hand: `Hooks::nat` lends it.
    plan: Option<NatRequest>,
}

impl Hooks for Router {
    fn raw(&mut self, _meta: &PacketMeta) -> bool {
        false
    }

    fn filter(&mut self, out: &Outcome) -> Verdict {
        out.verdict
    }

    fn nat(&mut self, out: &Outcome) -> Option<&NatRequest> {
        self.plan = plan(out);
        self.plan.as_ref()
    }
}

/// The translation the router gives the connection `out` opens.
fn plan(out: &Outcome) -> Option<NatRequest> {
    let m = &out.meta;
    if m.dst == Some(wan()) && m.dport == Some(8080) {
        return Some(NatRequest {
            dnat: Some((v4(10, 0, 0, 5), 80)),
            snat: None,
            ports: (1024, 65535),
        });
    }
    match m.src {
        Some(IpAddr::V4(a)) if a.octets()[0] == 10 => Some(NatRequest {
            dnat: None,
            snat: Some(SnatRequest {
                addr: wan(),
                preferred: None,
                ask: false,
                report: true,
                endpoint_independent: m.dport == Some(443),
            }),
            ports: (61_000, 61_009),
        }),
        _ => None,
    }
}

/// One frame at a second after the start, and the sequence offset a SYN proxy gives its
/// connection right after it.
struct Step {
    at: u64,
    frame: Vec<u8>,
    seq_offset: Option<u32>,
}

fn step(at: u64, frame: Vec<u8>) -> Step {
    Step {
        at,
        frame,
        seq_offset: None,
    }
}

const BASE: u64 = 1_000;
/// When the table is saved, in seconds after the start.
const SAVE_AT: u64 = 10;

#[allow(clippy::too_many_arguments)]
fn tcp(
    (src, sport): (IpAddr, u16),
    (dst, dport): (IpAddr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    opts: &[TcpOptionElement],
    payload: &[u8],
) -> Vec<u8> {
    tcp_frame(src, dst, sport, dport, seq, ack, flags, win, opts, payload)
}

fn ws() -> [TcpOptionElement; 2] {
    [
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::WindowScale(7),
    ]
}

/// Connections in many states: translated TCP with window scaling, half-open and closing
/// TCP, IPv6 TCP, UDP unreplied and streaming (one endpoint-independent), ICMP echo, a port
/// forward, and a SYN-proxied connection with a sequence offset.
fn setup() -> Vec<Step> {
    let c1 = v4(10, 0, 0, 1);
    let c2 = v4(10, 0, 0, 2);
    let srv = v4(192, 0, 2, 10);
    let w = wan();
    let (c6, s6) = (v6(1), v6(0x10));
    let out = v4(198, 51, 100, 1);
    let inside = v4(10, 0, 0, 5);
    let big = [0x61u8; 100];
    vec![
        // A: translated, window scaling both ways, data both ways.
        step(
            0,
            tcp((c1, 40000), (srv, 80), 1000, 0, SYN, 64240, &ws(), &[]),
        ),
        step(
            0,
            tcp(
                (srv, 80),
                (w, 40000),
                500_000,
                1001,
                SYN | ACK,
                65160,
                &ws(),
                &[],
            ),
        ),
        step(
            0,
            tcp((c1, 40000), (srv, 80), 1001, 500_001, ACK, 502, &[], &[]),
        ),
        step(
            1,
            tcp(
                (c1, 40000),
                (srv, 80),
                1001,
                500_001,
                PSH | ACK,
                502,
                &[],
                &big,
            ),
        ),
        step(
            1,
            tcp(
                (srv, 80),
                (w, 40000),
                500_001,
                1101,
                PSH | ACK,
                509,
                &[],
                &[0x62; 200],
            ),
        ),
        step(
            1,
            tcp((c1, 40000), (srv, 80), 1101, 500_201, ACK, 502, &[], &[]),
        ),
        // B: SYN sent.
        step(
            2,
            tcp((c2, 40001), (srv, 80), 2000, 0, SYN, 64240, &[], &[]),
        ),
        // C: SYN received.
        step(
            2,
            tcp((c2, 40002), (srv, 80), 3000, 0, SYN, 64240, &[], &[]),
        ),
        step(
            2,
            tcp(
                (srv, 80),
                (w, 40002),
                700_000,
                3001,
                SYN | ACK,
                65160,
                &[],
                &[],
            ),
        ),
        // D: the client closed first.
        step(
            2,
            tcp((c2, 40003), (srv, 80), 4000, 0, SYN, 64240, &[], &[]),
        ),
        step(
            2,
            tcp(
                (srv, 80),
                (w, 40003),
                800_000,
                4001,
                SYN | ACK,
                65160,
                &[],
                &[],
            ),
        ),
        step(
            2,
            tcp((c2, 40003), (srv, 80), 4001, 800_001, ACK, 64240, &[], &[]),
        ),
        step(
            3,
            tcp(
                (c2, 40003),
                (srv, 80),
                4001,
                800_001,
                FIN | ACK,
                64240,
                &[],
                &[],
            ),
        ),
        // E: IPv6, untranslated.
        step(
            3,
            tcp((c6, 40000), (s6, 80), 1000, 0, SYN, 64800, &ws(), &[]),
        ),
        step(
            3,
            tcp(
                (s6, 80),
                (c6, 40000),
                90_000,
                1001,
                SYN | ACK,
                64800,
                &ws(),
                &[],
            ),
        ),
        step(
            3,
            tcp((c6, 40000), (s6, 80), 1001, 90_001, ACK, 506, &[], &[]),
        ),
        step(
            3,
            tcp(
                (c6, 40000),
                (s6, 80),
                1001,
                90_001,
                PSH | ACK,
                506,
                &[],
                &big,
            ),
        ),
        // F: UDP never answered; F2: UDP answered.
        step(3, udp_frame(c1, v4(192, 0, 2, 53), 5000, 53, b"query")),
        step(3, udp_frame(c1, v4(192, 0, 2, 54), 5002, 53, b"query")),
        step(3, udp_frame(v4(192, 0, 2, 54), w, 53, 5002, b"answer")),
        // G: endpoint-independent UDP, a stream by the third packet.
        step(3, udp_frame(c1, v4(192, 0, 2, 9), 5001, 443, b"hello")),
        step(3, udp_frame(v4(192, 0, 2, 9), w, 443, 5001, b"hello")),
        step(6, udp_frame(c1, v4(192, 0, 2, 9), 5001, 443, b"more")),
        // H: ICMP echo, translated.
        step(4, echo4(c1, srv, false, 77, 1)),
        step(4, echo4(srv, w, true, 77, 1)),
        // I: a port forward.
        step(
            5,
            tcp((out, 50000), (w, 8080), 9000, 0, SYN, 64240, &[], &[]),
        ),
        step(
            5,
            tcp(
                (inside, 80),
                (out, 50000),
                900_000,
                9001,
                SYN | ACK,
                65160,
                &[],
                &[],
            ),
        ),
        step(
            5,
            tcp((out, 50000), (w, 8080), 9001, 900_001, ACK, 64240, &[], &[]),
        ),
        // J: a SYN proxy answered the client: the server's numbers are 1,000,000 ahead.
        Step {
            at: 6,
            frame: tcp(
                (v4(10, 0, 0, 4), 42000),
                (srv, 22),
                7000,
                0,
                SYN,
                64240,
                &[],
                &[],
            ),
            seq_offset: Some(1_000_000),
        },
        step(
            6,
            tcp(
                (srv, 22),
                (w, 42000),
                5_000_000,
                7001,
                SYN | ACK,
                65160,
                &[],
                &[],
            ),
        ),
        step(
            6,
            tcp(
                (v4(10, 0, 0, 4), 42000),
                (srv, 22),
                7001,
                4_000_001,
                ACK,
                64240,
                &[],
                &[],
            ),
        ),
        // K: UDP answered a second before the save, a stream only from 11 on.
        step(9, udp_frame(c1, v4(192, 0, 2, 55), 5003, 53, b"query")),
        step(9, udp_frame(v4(192, 0, 2, 55), w, 53, 5003, b"answer")),
    ]
}

/// What follows the save: more of every connection, packets that are valid only with the
/// window scale known, out-of-window ones, an ICMP error about a translated connection,
/// closes, and packets after some timeouts have run out.
fn continuation() -> Vec<Step> {
    let c1 = v4(10, 0, 0, 1);
    let c2 = v4(10, 0, 0, 2);
    let srv = v4(192, 0, 2, 10);
    let w = wan();
    let (c6, s6) = (v6(1), v6(0x10));
    let out = v4(198, 51, 100, 1);
    let inside = v4(10, 0, 0, 5);
    let t = SAVE_AT;
    let quoted = tcp_raw(w, srv, 40000, 80, 1101, 500_201, ACK, b"");
    let unreach = icmp4_frame(
        srv,
        w,
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port),
        &quoted,
    );
    vec![
        step(
            t,
            udp_frame(c1, v4(192, 0, 2, 55), 5003, 53, b"not yet a stream"),
        ),
        step(
            t,
            tcp(
                (c1, 40000),
                (srv, 80),
                1101,
                500_201,
                PSH | ACK,
                502,
                &[],
                &[1; 50],
            ),
        ),
        step(
            t,
            tcp((srv, 80), (w, 40000), 500_201, 1151, ACK, 509, &[], &[]),
        ),
        step(
            t,
            tcp(
                (srv, 80),
                (w, 40000),
                500_201,
                1151,
                ACK,
                509,
                &[],
                &[5; 60_000],
            ),
        ),
        // The client's window, 502 scaled by 2^7, now reaches to 624,457 ...
        step(
            t,
            tcp((c1, 40000), (srv, 80), 1151, 560_201, ACK, 502, &[], &[]),
        ),
        // ... so this is inside it (without the scale it would end at 564,457).
        step(
            t,
            tcp(
                (srv, 80),
                (w, 40000),
                590_201,
                1151,
                PSH | ACK,
                509,
                &[],
                &[2; 10],
            ),
        ),
        // Far outside any window.
        step(
            t,
            tcp(
                (srv, 80),
                (w, 40000),
                90_500_201,
                1151,
                PSH | ACK,
                509,
                &[],
                &[3; 10],
            ),
        ),
        step(t + 1, unreach),
        step(
            t + 1,
            tcp(
                (c1, 40000),
                (srv, 80),
                1151,
                500_201,
                FIN | ACK,
                502,
                &[],
                &[],
            ),
        ),
        step(
            t + 1,
            tcp(
                (srv, 80),
                (w, 40000),
                500_201,
                1152,
                FIN | ACK,
                509,
                &[],
                &[],
            ),
        ),
        step(
            t + 1,
            tcp((c1, 40000), (srv, 80), 1152, 500_202, ACK, 502, &[], &[]),
        ),
        step(
            t + 1,
            tcp(
                (srv, 80),
                (w, 40001),
                600_000,
                2001,
                SYN | ACK,
                65160,
                &[],
                &[],
            ),
        ),
        step(
            t + 1,
            tcp((c2, 40001), (srv, 80), 2001, 600_001, ACK, 64240, &[], &[]),
        ),
        step(
            t + 1,
            tcp((c2, 40002), (srv, 80), 3001, 700_001, ACK, 64240, &[], &[]),
        ),
        step(
            t + 2,
            tcp(
                (srv, 80),
                (w, 40003),
                800_001,
                4002,
                FIN | ACK,
                65160,
                &[],
                &[],
            ),
        ),
        step(
            t + 2,
            tcp((c2, 40003), (srv, 80), 4002, 800_002, ACK, 64240, &[], &[]),
        ),
        step(
            t + 2,
            tcp(
                (s6, 80),
                (c6, 40000),
                90_001,
                1101,
                PSH | ACK,
                506,
                &[],
                &[4; 300],
            ),
        ),
        step(
            t + 2,
            tcp((c6, 40000), (s6, 80), 1101, 90_301, ACK, 506, &[], &[]),
        ),
        step(
            t + 2,
            tcp(
                (c6, 40000),
                (s6, 80),
                1101,
                90_301,
                RST | ACK,
                506,
                &[],
                &[],
            ),
        ),
        step(t + 2, udp_frame(v4(192, 0, 2, 54), w, 53, 5002, b"again")),
        step(t + 2, udp_frame(v4(192, 0, 2, 9), w, 443, 5001, b"back")),
        step(t + 2, echo4(c1, srv, false, 77, 2)),
        step(t + 2, echo4(srv, w, true, 77, 2)),
        step(
            t + 3,
            tcp(
                (inside, 80),
                (out, 50000),
                900_001,
                9001,
                PSH | ACK,
                65160,
                &[],
                b"hi",
            ),
        ),
        step(
            t + 3,
            tcp(
                (out, 50000),
                (w, 8080),
                9001,
                900_003,
                PSH | ACK,
                64240,
                &[],
                b"yo",
            ),
        ),
        // The inside server's reply must not leave untranslated.
        step(
            t + 3,
            tcp(
                (inside, 80),
                (out, 50000),
                900_003,
                9003,
                ACK,
                65160,
                &[],
                &[],
            ),
        ),
        step(
            t + 3,
            tcp(
                (v4(10, 0, 0, 4), 42000),
                (srv, 22),
                7001,
                4_000_001,
                PSH | ACK,
                64240,
                &[],
                b"ssh",
            ),
        ),
        step(
            t + 3,
            tcp(
                (srv, 22),
                (w, 42000),
                5_000_001,
                7004,
                PSH | ACK,
                65160,
                &[],
                b"SSH-2.0",
            ),
        ),
        // F's 30 s ran out at 33: a new connection, in both.
        step(35, udp_frame(c1, v4(192, 0, 2, 53), 5000, 53, b"query")),
        // A new host with A's source port and server: A's mapped port stays A's.
        step(
            35,
            tcp(
                (v4(10, 0, 0, 9), 40000),
                (srv, 80),
                1,
                0,
                SYN,
                64240,
                &[],
                &[],
            ),
        ),
    ]
}

fn play(engine: &mut Engine, steps: &[Step], shift: u64) -> Vec<(Outcome, Option<Translation>)> {
    steps
        .iter()
        .map(|s| {
            let now = Time::from_secs(BASE + shift + s.at);
            let o = engine.process_hooked(
                now,
                LinkType::Ethernet,
                &s.frame,
                s.frame.len(),
                &mut Router::default(),
            );
            if let Some(d) = s.seq_offset {
                assert!(engine.set_seq_offset(d), "set_seq_offset");
            }
            (o, engine.translation())
        })
        .collect()
}

fn config(key: u64) -> Config {
    Config {
        hash_key: [key, key ^ 1, key ^ 2, key ^ 3],
        ..Config::default()
    }
}

/// The table as listed, in an order independent of slots and hashing.
fn listing(e: &Engine) -> Vec<String> {
    let mut v: Vec<String> = e.connections().map(|c| format!("{c:?}")).collect();
    v.sort();
    v
}

fn built() -> Engine {
    let mut e = Engine::new(config(1));
    for (o, _) in play(&mut e, &setup(), 0) {
        assert_eq!(o.verdict, Verdict::Accept, "setup packet dropped: {o:?}");
        assert_ne!(o.state, CtState::Invalid, "setup packet invalid: {o:?}");
    }
    e.check_table().unwrap();
    e
}

fn saved(e: &Engine) -> Vec<u8> {
    let mut buf = Vec::new();
    let n = e.save(Time::from_secs(BASE + SAVE_AT), &mut buf).unwrap();
    assert_eq!(n, e.len());
    buf
}

#[test]
fn restored_engine_continues_exactly_as_the_one_that_never_stopped() {
    let mut kept = built();
    assert_eq!(kept.len(), 12);
    let file = saved(&kept);
    let at = Time::from_secs(BASE + SAVE_AT);
    // Listings count timeouts from the engine's latest time: bring it to the save's.
    kept.expire(at);
    let before = listing(&kept);

    // Restored into an engine with another hash key, at the same clock and 5000 s later
    // (another process's monotonic clock).
    let mut same = Engine::new(config(77));
    let r = same.restore(at, &mut file.as_slice()).unwrap();
    assert_eq!((r.records, r.restored, r.skipped()), (12, 12, 0), "{r:?}");
    same.check_table().unwrap();
    assert_eq!(
        listing(&same),
        before,
        "the table as listed, timeouts included"
    );
    assert_eq!(same.nat_connections(), kept.nat_connections());

    let shift = 5_000;
    let mut later = Engine::new(config(99));
    later
        .restore(
            Time::from_secs(BASE + SAVE_AT + shift),
            &mut file.as_slice(),
        )
        .unwrap();
    later.check_table().unwrap();
    assert_eq!(listing(&later), before);

    let cont = continuation();
    let want = play(&mut kept, &cont, 0);
    let got = play(&mut same, &cont, 0);
    let got_later = play(&mut later, &cont, shift);
    let last = want.len() - 1;
    for (i, w) in want.iter().enumerate() {
        if i == last {
            // A new connection: which free port it gets depends on the hash key.
            for (o, t) in [&got[i], &got_later[i], w] {
                assert_eq!(o, &w.0);
                let port = t.expect("translated").leaves().sport;
                assert!(
                    (61_000..=61_009).contains(&port),
                    "A's mapped port reused: {port}"
                );
            }
            continue;
        }
        assert_eq!(
            &got[i], w,
            "continuation packet {i}, restored at the same clock"
        );
        assert_eq!(
            &got_later[i], w,
            "continuation packet {i}, restored 5000 s later"
        );
    }
    // The continuation is a real test: it holds accepted, invalid and translated packets.
    assert!(want.iter().any(|(o, _)| o.state == CtState::Invalid));
    assert!(want.iter().any(|(o, _)| o.state == CtState::Related));
    assert!(want
        .iter()
        .any(|(_, t)| t.is_some_and(|t| t.tcp_seq().is_some())));
    let scaled = &want[5].0;
    assert_eq!(
        (scaled.state, scaled.dir),
        (CtState::Established, Some(Direction::Reply)),
        "a segment inside the scaled window: {scaled:?}"
    );
    assert_eq!(want[6].0.state, CtState::Invalid, "{:?}", want[6].0);
    // F had expired: its packet opened a new connection.
    assert_eq!(want[want.len() - 2].0.state, CtState::New);

    for e in [&kept, &same, &later] {
        e.check_table().unwrap();
    }
    // The new host's connection differs only in the port it was given.
    let port = |l: Vec<String>| -> Vec<String> {
        l.into_iter().filter(|c| !c.contains("10.0.0.9")).collect()
    };
    assert_eq!(port(listing(&same)), port(listing(&kept)));
    assert_eq!(port(listing(&later)), port(listing(&kept)));
    assert_eq!(listing(&same).len(), listing(&kept).len());
}

#[test]
fn timeouts_are_time_left_and_the_wall_clock_ages_them() {
    let mut kept = built();
    let at = BASE + SAVE_AT;
    kept.expire(Time::from_secs(at));
    let mut file = Vec::new();
    kept.save_stamped(Time::from_secs(at), Some(1_700_000_000), &mut file)
        .unwrap();
    let timeouts = |e: &Engine| {
        let mut v: Vec<(String, u32)> = e
            .connections()
            .map(|c| (format!("{:?}{:?}", c.original, c.proto), c.timeout))
            .collect();
        v.sort();
        v
    };
    let want = timeouts(&kept);
    // Restored 40 s of wall clock later, at a monotonic clock near zero.
    let mut e = Engine::new(config(5));
    let opts = RestoreOptions {
        wall_clock: Some(1_700_000_040),
        ..RestoreOptions::default()
    };
    let r = e
        .restore_with(Time::from_secs(3), &mut file.as_slice(), &opts)
        .unwrap();
    assert_eq!(r.saved_at, Some(1_700_000_000));
    // The UDP exchanges (30 s until they are streams, 23 and 29 s left at the save) and the
    // ICMP echo (30 s, 24 left) are gone.
    assert_eq!((r.restored, r.expired), (8, 4), "{r:?}");
    let got = timeouts(&e);
    for (k, t) in &got {
        let (_, w) = want.iter().find(|(wk, _)| wk == k).unwrap();
        assert_eq!(*t, w - 40, "{k}");
    }
    e.check_table().unwrap();
    // Without the wall clock nothing ages.
    let mut e = Engine::new(config(6));
    let r = e.restore(Time::from_secs(3), &mut file.as_slice()).unwrap();
    assert_eq!(r.restored, 12);
    assert_eq!(timeouts(&e), want);
}

#[test]
fn nat_ports_and_reports_come_back() {
    let kept = built();
    let file = saved(&kept);
    let mut e = Engine::new(config(3));
    let at = Time::from_secs(BASE + SAVE_AT);
    let r = e.restore(at, &mut file.as_slice()).unwrap();
    // Every source-translated connection asked to be reported: the policy's books get them.
    let mut m = r.nat_mappings.clone();
    m.sort_by_key(|x| format!("{x:?}"));
    assert_eq!(m.len(), 10, "{m:?}");
    let a = NatReleased {
        proto: 6,
        inside: (v4(10, 0, 0, 1), 40000),
        outside: (wan(), 40000),
        endpoint_independent: false,
    };
    assert!(m.contains(&a));
    assert!(m
        .iter()
        .any(|x| x.endpoint_independent && x.inside == (v4(10, 0, 0, 1), 5001)));
    // Removing it reports the release, as for a connection opened here.
    let n = e.remove_where(at, |c| c.original.src == v4(10, 0, 0, 1) && c.proto == 6);
    assert_eq!(n, 1);
    let mut rel = Vec::new();
    e.take_nat_released(&mut rel);
    assert_eq!(rel, vec![a]);
    e.check_table().unwrap();

    // A policy that keeps no books: nothing is reported.
    let mut e = Engine::new(config(4));
    let opts = RestoreOptions {
        nat_reports: false,
        ..RestoreOptions::default()
    };
    let r = e.restore_with(at, &mut file.as_slice(), &opts).unwrap();
    assert!(r.nat_mappings.is_empty());
    e.remove_where(at, |_| true);
    let mut rel = Vec::new();
    e.take_nat_released(&mut rel);
    assert!(rel.is_empty(), "{rel:?}");
}

#[test]
fn a_full_table_and_taken_tuples_skip_records() {
    let kept = built();
    let file = saved(&kept);
    let at = Time::from_secs(BASE + SAVE_AT);
    let mut small = Engine::new(Config {
        max_connections: 5,
        ..config(8)
    });
    let r = small.restore(at, &mut file.as_slice()).unwrap();
    assert_eq!((r.restored, r.full), (5, 7), "{r:?}");
    small.check_table().unwrap();

    // The same file again: every connection is there already.
    let mut e = Engine::new(config(9));
    e.restore(at, &mut file.as_slice()).unwrap();
    let r = e.restore(at, &mut file.as_slice()).unwrap();
    assert_eq!((r.restored, r.conflicts), (0, 12), "{r:?}");
    assert_eq!(e.len(), 12);
    e.check_table().unwrap();

    // An empty table saves and restores as such.
    let mut buf = Vec::new();
    assert_eq!(Engine::new(config(1)).save(at, &mut buf).unwrap(), 0);
    let r = Engine::new(config(2))
        .restore(at, &mut buf.as_slice())
        .unwrap();
    assert_eq!(r.records, 0);
}

fn restore_err(file: &[u8]) -> RestoreError {
    let mut e = Engine::new(config(11));
    let err = e
        .restore(Time::from_secs(BASE + SAVE_AT), &mut &file[..])
        .expect_err("a bad file restored");
    assert!(e.is_empty(), "a failed restore left entries behind");
    e.check_table().unwrap();
    err
}

#[test]
fn bad_files_give_errors_naming_what_and_where() {
    let file = saved(&built());
    let msg = |e: RestoreError| e.to_string();

    let mut bad = file.clone();
    bad[0] = b'X';
    let m = msg(restore_err(&bad));
    assert!(m.contains("not a keepstate state file"), "{m}");

    let mut bad = file.clone();
    bad[8] = 2;
    let m = msg(restore_err(&bad));
    assert!(
        m.contains("version 2") && m.contains("reads version 1"),
        "{m}"
    );

    let m = msg(restore_err(&file[..file.len() - 3]));
    assert!(m.contains("truncated") && m.contains("checksum"), "{m}");
    let m = msg(restore_err(&file[..100]));
    assert!(m.contains("truncated") && m.contains("record"), "{m}");
    let m = msg(restore_err(&file[..7]));
    assert!(m.contains("ends at byte 7") && m.contains("header"), "{m}");

    let mut bad = file.clone();
    bad[200] ^= 0x10;
    let m = msg(restore_err(&bad));
    assert!(m.contains("checksum mismatch") && m.contains("byte"), "{m}");

    let mut bad = file.clone();
    bad.push(0);
    let m = msg(restore_err(&bad));
    assert!(m.contains("after the checksum"), "{m}");

    // A checksum-valid file holding a record no engine writes: the record's offset.
    let mut bad = file.clone();
    bad[32] = 5; // the first record's address family
    reseal(&mut bad);
    let m = msg(restore_err(&bad));
    assert!(
        m.contains("corrupt at byte 32") && m.contains("family 5"),
        "{m}"
    );

    assert!(matches!(
        restore_err(b""),
        RestoreError::Truncated { offset: 0, .. }
    ));
    let m = msg(restore_err(b"garbage\n"));
    assert!(m.contains("not a keepstate state file"), "{m}");
    assert_eq!(&file[..8], &MAGIC);
}

#[test]
fn every_truncation_and_bit_flip_is_refused() {
    let file = saved(&built());
    for len in 0..file.len() {
        assert!(
            matches!(restore_err(&file[..len]), RestoreError::Truncated { .. }),
            "{len}"
        );
    }
    for i in 0..file.len() {
        for bit in 0..8 {
            let mut bad = file.clone();
            bad[i] ^= 1 << bit;
            restore_err(&bad);
        }
    }
}

#[test]
fn random_damage_never_panics_and_keeps_the_table_consistent() {
    let file = saved(&built());
    let at = Time::from_secs(BASE + SAVE_AT);
    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    let mut restored_some = 0;
    for round in 0..3_000 {
        let mut bad = file.clone();
        match round % 3 {
            // Random bytes, resealed so the records themselves are read.
            0 | 1 => {
                for _ in 0..=rng.below(6) {
                    let i = rng.below(bad.len());
                    bad[i] = rng.byte();
                }
                reseal(&mut bad);
            }
            // Garbage of any length.
            _ => {
                let n = rng.below(600);
                bad = (0..n).map(|_| rng.byte()).collect();
                if n > 40 && rng.below(2) == 0 {
                    bad[..8].copy_from_slice(&MAGIC);
                    bad[8..10].copy_from_slice(&1u16.to_le_bytes());
                    reseal(&mut bad);
                }
            }
        }
        let mut e = Engine::new(config(round));
        match e.restore(at, &mut bad.as_slice()) {
            Ok(r) => {
                restored_some += 1;
                assert_eq!(r.restored, e.len());
                // A restored table works: every connection takes packets.
                let _ = play(&mut e, &continuation(), 0);
            }
            Err(err) => {
                assert!(e.is_empty());
                assert!(!err.to_string().is_empty());
            }
        }
        e.check_table()
            .unwrap_or_else(|m| panic!("round {round}: {m}"));
    }
    assert!(
        restored_some > 100,
        "only {restored_some} damaged files read"
    );
}
