//! A handshake begun during a SYN flood into a full table completes when answered before the table has turned over: the oldest flood entries are evicted first.
use crate::common::*;
use crate::conn_of;

#[test]
fn scenario() {
    let mut sim = Sim::with(Config {
        max_connections: 1_000,
        ..Config::default()
    });
    let mut rng = XorShift(0xf100_d0ff_5eed_0001);
    let mut flood = |sim: &mut Sim, n: u32| {
        for _ in 0..n {
            let [a, b, c, p0, p1, s0, s1, s2] = rng.next_u64().to_le_bytes();
            let src = v4(100, 64 | (a & 0x3f), b, c);
            let sport = u16::from_le_bytes([p0, p1]) | 0x400;
            let seq = u32::from_le_bytes([s0, s1, s2, a]);
            let syn = tcp_frame(src, v4(10, 0, 0, 9), sport, 80, seq, 0, SYN, 1024, &[], &[]);
            expect_new(&sim.eth(&syn));
        }
    };
    // The table is full of the flood's half-open entries when the real client's SYN arrives.
    flood(&mut sim, 3_000);
    let mut f = Flow::v4();
    expect_new(&f.c(&mut sim, SYN, &[]));
    // 900 more flood SYNs, each evicting an older entry, before the answer comes back.
    flood(&mut sim, 900);
    sim.advance_ms(50);
    expect_est_reply(&f.s(&mut sim, SYN | ACK, &[]));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    let c = conn_of(&sim, &f).expect("the handshake survived the flood");
    assert_eq!(c.tcp_state, Some(TcpState::Established));
    let s = sim.engine.stats();
    assert_eq!(s.refused, 0);
    assert_eq!(sim.engine.len(), 1_000);
}
