//! Several packets with time steps through one small engine, then list its table.
//!
//! Input format, repeated: [link:1][time step:1][len:2 big-endian][len bytes].
#![no_main]

use keepstate_engine::{Config, Engine, LinkType, Packet, Time};
use libfuzzer_sys::fuzz_target;

const LINKS: [LinkType; 7] = LinkType::ALL;

const MAX: u32 = 8;

fuzz_target!(|data: &[u8]| {
    let cfg = Config {
        max_connections: MAX,
        ..Config::default()
    };
    let mut engine = Engine::new(cfg.clone());
    let mut now = Time::from_secs(1);
    let mut batch = Vec::new();
    let mut rest = data;
    while rest.len() >= 4 {
        let link = LINKS[usize::from(rest[0]) % LINKS.len()];
        // Steps up to ~2 minutes, in 0.5 s units, so timeouts fire.
        let step_ms = u64::from(rest[1]) * 500;
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        rest = &rest[4..];
        let take = len.min(rest.len());
        let (pkt, tail) = rest.split_at(take);
        rest = tail;
        now = Time::from_nanos(now.as_nanos() + step_ms * 1_000_000);
        let _ = engine.process(now, link, pkt);
        batch.push(Packet {
            now,
            link,
            data: pkt,
            wire_len: pkt.len(),
        });
        if step_ms > 60_000 {
            engine.expire(now);
        }
        assert!(engine.connections().count() <= MAX as usize);
        if let Err(e) = engine.check_table() {
            panic!("table inconsistent: {e}");
        }
    }
    for c in engine.connections() {
        let _ = (c.tcp_state.map(|s| s.name()), c.timeout, c.packets, c.bytes);
    }
    // The batch path must agree with the one-by-one path.
    let mut other = Engine::new(cfg);
    let mut out = Vec::new();
    other.process_batch(&batch, &mut out);
    let mut again = Engine::new(Config {
        max_connections: MAX,
        ..Config::default()
    });
    for (p, o) in batch.iter().zip(&out) {
        assert_eq!(again.process(p.now, p.link, p.data), *o);
    }
});
