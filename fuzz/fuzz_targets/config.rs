//! Arbitrary text through the configuration parser: it must answer with a policy or with
//! messages, never panic, and every message must point into the text.
#![no_main]

use keepstate_policy::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = u32::try_from(text.split('\n').count()).unwrap_or(u32::MAX);
    // No base directory: a `file = ...` set is an error instead of a read.
    match config::parse("fuzz.toml", text, None) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                assert!(w.line >= 1 && w.line <= lines && w.col >= 1, "{w}");
            }
            let _ = config::describe_match(&loaded.policy, &Default::default());
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error result without messages");
            for e in &errors.0 {
                assert!(e.line >= 1 && e.line <= lines && e.col >= 1, "{e}");
            }
        }
    }
});
