//! keepstate's firewall policy: zones, state-aware rules, notrack, reject and rate limits.
//!
//! Sans-IO like the engine: a [`model::Policy`] is plain data (built from a TOML file by
//! [`config`]), compiled into a ruleset whose per-packet cost does not grow with the number
//! of rules or prefixes.

mod antispoof;
pub mod config;
pub mod firewall;
mod flood;
pub mod limit;
pub mod model;
pub mod nat;
pub mod prefix;
pub mod reject;
pub mod ruleset;
pub mod scan;
mod synproxy;
pub mod topology;
mod translate;
