//! Arbitrary bytes as a saved state table: `restore` must never panic, must leave the table
//! untouched when it refuses the file, and whatever it accepts must leave a consistent
//! index that saves and restores again to the same table.
//!
//! Input: byte 0's low bit set means "reseal": the rest gets a valid checksum, so the fuzzer
//! explores the records and not only the checksum; bit 1 restores into a table of at most
//! four connections. The rest is the file.
#![no_main]

use keepstate_engine::persist::reseal;
use keepstate_engine::{Config, Engine, Time};
use libfuzzer_sys::fuzz_target;

fn listing(e: &Engine) -> Vec<String> {
    let mut v: Vec<String> = e.connections().map(|c| format!("{c:?}")).collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, file)) = data.split_first() else {
        return;
    };
    let mut file = file.to_vec();
    if mode & 1 != 0 {
        reseal(&mut file);
    }
    let cfg = Config {
        max_connections: if mode & 2 != 0 { 4 } else { 1024 },
        ..Config::default()
    };
    let now = Time::from_secs(100);
    let mut engine = Engine::new(cfg.clone());
    match engine.restore(now, &mut file.as_slice()) {
        Ok(r) => {
            assert_eq!(r.restored, engine.len());
            assert_eq!(r.restored + r.skipped(), r.records);
        }
        Err(e) => {
            assert!(engine.is_empty(), "a refused file left entries: {e}");
        }
    }
    if let Err(m) = engine.check_table() {
        panic!("inconsistent table after restore: {m}");
    }
    // What was accepted round-trips.
    let mut again = Vec::new();
    let n = engine.save(now, &mut again).expect("save to memory");
    assert_eq!(n, engine.len());
    let mut twin = Engine::new(Config {
        hash_key: [9, 8, 7, 6],
        ..cfg
    });
    let r = twin.restore(now, &mut again.as_slice()).expect("restore what was saved");
    assert_eq!(r.restored, n);
    assert_eq!(listing(&twin), listing(&engine));
    if let Err(m) = twin.check_table() {
        panic!("inconsistent table after a second restore: {m}");
    }
});
