//! Connection events (`conntrack -E`): NEW when an entry is confirmed, UPDATE when its TCP
//! state or seen-reply/assured status changes, DESTROY when it is reclaimed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use keepstate_engine::listing::event_line;
use keepstate_engine::{Event, EventKind, Hooks, PacketMeta};

fn take(sim: &mut Sim) -> Vec<Event> {
    let mut v = Vec::new();
    sim.engine.take_events(&mut v);
    v
}

fn kinds_states(evs: &[Event]) -> Vec<(EventKind, Option<TcpState>)> {
    evs.iter().map(|e| (e.kind, e.conn.tcp_state)).collect()
}

fn with_events() -> Sim {
    let mut sim = Sim::new();
    sim.engine.set_events(1024);
    sim
}

#[test]
fn tcp_handshake_and_close_report_new_updates_destroy_in_order() {
    let mut sim = with_events();
    let mut f = Flow::v4();
    f.handshake(&mut sim);
    // Data does not change state or status: no events.
    expect_est_orig(&f.c(&mut sim, ACK | PSH, b"GET /"));
    expect_est_reply(&f.s(&mut sim, ACK | PSH, b"200"));
    expect_est_orig(&f.c(&mut sim, FIN | ACK, &[]));
    expect_est_reply(&f.s(&mut sim, FIN | ACK, &[]));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    let evs = take(&mut sim);
    use EventKind::*;
    use TcpState::*;
    assert_eq!(
        kinds_states(&evs),
        vec![
            (New, Some(SynSent)),
            (Update, Some(SynRecv)),
            (Update, Some(Established)),
            (Update, Some(FinWait)),
            (Update, Some(LastAck)),
            (Update, Some(TimeWait)),
        ]
    );
    assert!(!evs[0].conn.seen_reply && !evs[0].conn.assured);
    assert!(evs[1].conn.seen_reply && !evs[1].conn.assured);
    assert!(evs[2].conn.assured);
    assert_eq!(
        event_line(&evs[0]),
        "    [NEW] tcp      6 120 SYN_SENT src=10.0.0.1 dst=192.0.2.10 sport=40000 dport=80 \
         [UNREPLIED] src=192.0.2.10 dst=10.0.0.1 sport=80 dport=40000"
    );
    assert_eq!(
        event_line(&evs[1]),
        " [UPDATE] tcp      6 60 SYN_RECV src=10.0.0.1 dst=192.0.2.10 sport=40000 dport=80 \
         src=192.0.2.10 dst=10.0.0.1 sport=80 dport=40000"
    );
    assert_eq!(
        event_line(&evs[2]),
        " [UPDATE] tcp      6 432000 ESTABLISHED src=10.0.0.1 dst=192.0.2.10 sport=40000 \
         dport=80 src=192.0.2.10 dst=10.0.0.1 sport=80 dport=40000 [ASSURED]"
    );
    // Expiry is lazy: the DESTROY comes when the entry is reclaimed.
    sim.advance(121);
    assert!(take(&mut sim).is_empty());
    sim.expire();
    let evs = take(&mut sim);
    assert_eq!(kinds_states(&evs), vec![(Destroy, Some(TimeWait))]);
    let d = &evs[0];
    assert_eq!((d.conn.packets, d.conn.timeout), ([5, 3], 0));
    assert!(event_line(d).starts_with(
        "[DESTROY] tcp      6 TIME_WAIT src=10.0.0.1 dst=192.0.2.10 sport=40000 dport=80 \
         packets=5 bytes="
    ));
    assert!(event_line(d).ends_with(" [ASSURED]"));
    assert_eq!(sim.engine.events_lost(), 0);
}

#[test]
fn rst_reports_close_and_a_reopen_reports_destroy_then_new() {
    let mut sim = with_events();
    let mut f = Flow::v4();
    f.handshake(&mut sim);
    take(&mut sim);
    f.c(&mut sim, RST | ACK, &[]);
    let evs = take(&mut sim);
    let ks: Vec<EventKind> = evs.iter().map(|e| e.kind).collect();
    // RST moves to CLOSE (an UPDATE); the entry stays until its short timeout.
    assert_eq!(ks, vec![EventKind::Update]);
    assert_eq!(evs[0].conn.tcp_state, Some(TcpState::Close));
    // A new SYN on the same tuple reopens: the old entry goes, a new one comes.
    let mut g = Flow {
        cseq: 9_000_000,
        ..f.clone()
    };
    sim.advance(11);
    expect_new(&g.c(&mut sim, SYN, &[]));
    let evs = take(&mut sim);
    assert_eq!(
        kinds_states(&evs),
        vec![
            (EventKind::Destroy, Some(TcpState::Close)),
            (EventKind::New, Some(TcpState::SynSent)),
        ]
    );
}

#[test]
fn udp_new_then_update_on_reply_and_on_assured() {
    let mut sim = with_events();
    let (a, b) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
    expect_new(&sim.eth(&udp_frame(a, b, 5000, 53, b"q")));
    // Still unreplied: nothing to report.
    expect_new(&sim.eth(&udp_frame(a, b, 5000, 53, b"q2")));
    expect_est_reply(&sim.eth(&udp_frame(b, a, 53, 5000, b"r")));
    let evs = take(&mut sim);
    assert_eq!(
        evs.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::New, EventKind::Update]
    );
    assert!(evs[1].conn.seen_reply && !evs[1].conn.assured);
    assert_eq!(
        event_line(&evs[0]),
        "    [NEW] udp      17 30 src=10.0.0.1 dst=10.0.0.2 sport=5000 dport=53 [UNREPLIED] \
         src=10.0.0.2 dst=10.0.0.1 sport=53 dport=5000"
    );
    // A stream after a few seconds of traffic: assured.
    sim.advance(3);
    expect_est_orig(&sim.eth(&udp_frame(a, b, 5000, 53, b"q3")));
    let evs = take(&mut sim);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].kind, EventKind::Update);
    assert!(evs[0].conn.assured);
    assert_eq!(
        event_line(&evs[0]),
        " [UPDATE] udp      17 120 src=10.0.0.1 dst=10.0.0.2 sport=5000 dport=53 \
         src=10.0.0.2 dst=10.0.0.1 sport=53 dport=5000 [ASSURED]"
    );
    // Further packets change nothing reported.
    expect_est_reply(&sim.eth(&udp_frame(b, a, 53, 5000, b"r2")));
    assert!(take(&mut sim).is_empty());
}

#[test]
fn removal_reports_destroy_with_time_left() {
    let mut sim = with_events();
    let (a, b) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
    expect_new(&sim.eth(&udp_frame(a, b, 5000, 53, b"q")));
    expect_new(&sim.eth(&udp_frame(a, b, 5001, 53, b"q")));
    take(&mut sim);
    sim.advance(10);
    let now = sim.now;
    let n = sim.engine.remove_where(now, |c| {
        c.original.l4
            == L4Tuple::Ports {
                sport: 5000,
                dport: 53,
            }
    });
    assert_eq!(n, 1);
    let evs = take(&mut sim);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].kind, EventKind::Destroy);
    assert_eq!(evs[0].conn.timeout, 20);
    assert_eq!(
        event_line(&evs[0]),
        "[DESTROY] udp      17 20 src=10.0.0.1 dst=10.0.0.2 sport=5000 dport=53 packets=1 \
         bytes=29 [UNREPLIED] src=10.0.0.2 dst=10.0.0.1 sport=53 dport=5000 packets=0 bytes=0"
    );
}

struct DropAll;

impl Hooks for DropAll {
    fn raw(&mut self, _meta: &PacketMeta) -> bool {
        false
    }

    fn filter(&mut self, _out: &Outcome) -> Verdict {
        Verdict::Drop
    }
}

#[test]
fn a_connection_the_policy_drops_is_never_reported() {
    let mut sim = with_events();
    let frame = udp_frame(v4(10, 0, 0, 1), v4(10, 0, 0, 2), 5000, 53, b"q");
    let now = sim.now;
    let out = sim
        .engine
        .process_hooked(now, LinkType::Ethernet, &frame, frame.len(), &mut DropAll);
    assert_eq!(out.verdict, Verdict::Drop);
    assert_eq!(sim.engine.len(), 0);
    assert!(take(&mut sim).is_empty());
}

#[test]
fn overflow_keeps_the_newest_and_counts_the_lost() {
    let mut sim = Sim::new();
    sim.engine.set_events(4);
    let (a, b) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
    for p in 0..10u16 {
        expect_new(&sim.eth(&udp_frame(a, b, 6000 + p, 53, b"q")));
    }
    assert_eq!(sim.engine.events_lost(), 6);
    let evs = take(&mut sim);
    let ports: Vec<L4Tuple> = evs.iter().map(|e| e.conn.original.l4).collect();
    let want: Vec<L4Tuple> = (6006..6010u16)
        .map(|sport| L4Tuple::Ports { sport, dport: 53 })
        .collect();
    assert_eq!(ports, want);
}

#[test]
fn eviction_reports_destroy() {
    let mut sim = Sim::with(Config {
        max_connections: 2,
        ..Config::default()
    });
    sim.engine.set_events(64);
    let (a, b) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
    for p in 0..3u16 {
        expect_new(&sim.eth(&udp_frame(a, b, 6000 + p, 53, b"q")));
    }
    let evs = take(&mut sim);
    let ks: Vec<EventKind> = evs.iter().map(|e| e.kind).collect();
    use EventKind::*;
    assert_eq!(ks, vec![New, New, Destroy, New]);
    assert_eq!(
        evs[2].conn.original.l4,
        L4Tuple::Ports {
            sport: 6000,
            dport: 53
        }
    );
}

#[test]
fn events_off_records_nothing() {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    f.handshake(&mut sim);
    sim.advance(500_000);
    sim.expire();
    assert!(take(&mut sim).is_empty());
    assert_eq!(sim.engine.events_lost(), 0);
    // And off again after on.
    sim.engine.set_events(8);
    sim.engine.set_events(0);
    let mut g = Flow::v4();
    g.handshake(&mut sim);
    assert!(take(&mut sim).is_empty());
}
