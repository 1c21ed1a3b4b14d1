//! A flood of 20,000 SYNs from random sources into a 1,000-entry table never disturbs an established connection that keeps exchanging data.
use crate::common::*;
use crate::{conn_of, exchange, open};

#[test]
fn scenario() {
    let mut sim = Sim::with(Config {
        max_connections: 1_000,
        ..Config::default()
    });
    let mut f = Flow::v4();
    open(&mut sim, &mut f);
    let mut rng = XorShift(0x5eed_f100_d5ee_df10);
    for i in 0..20_000u32 {
        // A spoofed source in 100.64.0.0/10 with a random port and sequence number.
        let [a, b, c, p0, p1, s0, s1, s2] = rng.next_u64().to_le_bytes();
        let src = v4(100, 64 | (a & 0x3f), b, c);
        let sport = u16::from_le_bytes([p0, p1]) | 0x400;
        let seq = u32::from_le_bytes([s0, s1, s2, a]);
        let syn = tcp_frame(src, f.s, sport, f.sp, seq, 0, SYN, 1024, &[], &[]);
        expect_new(&sim.eth(&syn));
        sim.advance_ms(1);
        // Meanwhile the real connection keeps talking, and is never anything but established.
        if i % 100 == 99 {
            exchange(&mut sim, &mut f);
        }
    }
    let c = conn_of(&sim, &f).expect("the established connection survived");
    assert_eq!(c.tcp_state, Some(TcpState::Established));
    assert!(c.assured);
    assert_eq!(c.timeout, 432_000);
    // open: SYN, ACK / SYN-ACK; each of the 200 exchanges: data, ACK / data.
    assert_eq!(c.packets, [2 + 2 * 200, 1 + 200]);
    // The table stayed at its limit: every SYN past the first 999 evicted an unreplied one.
    assert_eq!(sim.engine.len(), 1_000);
    let s = sim.engine.stats();
    assert_eq!(s.created, 20_001);
    assert_eq!(s.evicted, 20_000 - 999);
    assert_eq!(s.refused, 0);
    assert_eq!(s.peak, 1_000);
}
