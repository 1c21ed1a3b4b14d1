//! What the binary takes from the machine for the engine: a secret hash key and a table limit
//! sized from memory. The engine itself never reads either.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use keepstate_engine::Config;

/// Four secret 64-bit words from the OS's random source (std seeds `RandomState` from it).
pub fn random_hash_key() -> [u64; 4] {
    let s = RandomState::new();
    [
        s.hash_one(0u8),
        s.hash_one(1u8),
        s.hash_one(2u8),
        s.hash_one(3u8),
    ]
}

/// Total memory in bytes from /proc/meminfo, if readable.
fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The engine defaults with a random hash key and, where memory can be read, a table limit
/// sized from it (otherwise the engine's default).
pub fn config() -> Config {
    let mut cfg = Config {
        hash_key: random_hash_key(),
        ..Config::default()
    };
    if let Some(mem) = total_memory() {
        cfg.max_connections = Config::limit_for_memory(mem);
    }
    cfg
}
