//! keepstate's stateful packet inspection engine.
//!
//! Sans-IO: the caller passes frame bytes and the current time, the engine returns a verdict
//! with the connection state, direction and, for invalid packets, a named reason. It performs
//! no syscalls, reads no clock and starts no threads, so replay, tests, fuzzers, benchmarks
//! and the live dataplane all run exactly this code.
//!
//! ```
//! use keepstate_engine::{Config, CtState, Engine, LinkType, Time};
//! let mut engine = Engine::new(Config::default());
//! let out = engine.process(Time::from_secs(1), LinkType::Raw, &[0x45]);
//! assert_eq!(out.state, CtState::Invalid);
//! ```

pub mod config;
mod engine;
pub mod events;
mod frag;
pub mod listing;
pub mod nat;
pub mod persist;
pub mod reason;
mod seq;
mod table;
mod tcp;
pub mod time;
pub mod wire;

pub use config::{Adaptive, Config, Timeouts};
pub use engine::{
    Admit, Conn, CtState, Direction, Engine, Hooks, L4Tuple, Lookahead, NatCounters, NoHooks,
    Outcome, Packet, PacketMeta, Stats, Tuple, Verdict, LOOKAHEAD_DISTANCE,
};
pub use events::{Event, EventKind};
pub use listing::proto_name;
pub use nat::{Flow, Ipv4Rewrite, NatReleased, NatRequest, SnatRequest, Translation};
pub use persist::{RestoreError, RestoreOptions, RestoreReport};
pub use reason::DropReason;
pub use tcp::TcpState;
pub use time::Time;
pub use wire::{Family, LinkInfo, LinkType};
