//! One packet through a fresh engine; the first byte picks the link type.
#![no_main]

use keepstate_engine::{Config, CtState, Engine, LinkType, Time};
use libfuzzer_sys::fuzz_target;

const LINKS: [LinkType; 7] = LinkType::ALL;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(first) % LINKS.len()];
    let mut engine = Engine::new(Config::default());
    let out = engine.process(Time::from_secs(1), link, rest);
    if out.state == CtState::Invalid {
        assert!(out.reason.is_some(), "invalid without a reason");
    }
    // Same bytes as a snaplen-cut capture.
    let wire = rest.len() + usize::from(first >> 3);
    let _ = engine.process_captured(Time::from_secs(2), link, rest, wire);
    for c in engine.connections() {
        let _ = (c.tcp_state.map(|s| s.name()), c.timeout);
    }
});
