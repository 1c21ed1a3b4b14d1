//! Arbitrary bytes as a capture file: reading must end in records or an error, never a panic,
//! and every record read goes through the engine.
#![no_main]

use keepstate_capture::Capture;
use keepstate_engine::{Config, Engine};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cap) = Capture::from_bytes("fuzz.pcap", data.to_vec()) else {
        return;
    };
    let mut engine = Engine::new(Config {
        max_connections: 64,
        ..Config::default()
    });
    let mut records = cap.records();
    for rec in records.by_ref().take(10_000) {
        let Ok(rec) = rec else { break };
        let _ = engine.process_captured(rec.ts, rec.link, rec.data, rec.wire_len);
    }
    let _ = records.truncated_tail();
});
