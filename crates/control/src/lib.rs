//! keepstate's control API.
//!
//! Every way of driving a running firewall (the HTTP API, the `keepstate conntrack` and
//! `keepstate status` commands, which talk to it, and later the web UI) is a [`Command`],
//! and [`execute`] is the one place commands are carried out: sans-IO, on the [`Router`]
//! the caller holds locked, so the state is only ever touched by whoever owns it at that
//! moment. The HTTP server ([`serve`]) parses requests into commands, takes the router's
//! lock for [`execute`] only, and renders the [`Response`] after letting go of it.
//!
//! Connections are listed with filters, a sort order and a page (`limit` + `offset`): a
//! listing keeps at most `offset + limit` connections in memory whatever the table's size,
//! so a table of a million entries is served page by page, never whole.

pub mod events;
mod filter;
mod http;
pub mod json;
pub mod metrics;
pub mod query;
pub mod rules;

use core::cmp::Ordering;
use std::collections::BTreeMap;

use keepstate_dataplane::router::{PortStats, Router, RouterStats, WorkerStats};
use keepstate_engine::{Conn, DropReason, L4Tuple, Time};
use keepstate_policy::firewall::FirewallStats;
use keepstate_policy::firewall::NatStats;
use keepstate_policy::firewall::{ReloadError, ReloadOptions, ReloadReport};
use keepstate_policy::model::Policy;

pub use filter::{Filter, Prefix};
pub use http::{check_bind, parse_bind, serve, serve_with, ServeError, Server, DEFAULT_BIND};
pub use query::{parse_filter, parse_list, Format, ListQuery};
pub use rules::{DropRow, PortForwardRow, RuleRow, Rules, ZoneRow};

/// The OpenAPI 3 document describing the HTTP API (also served at `/api/v1/openapi.json`).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Most connections one page may hold.
pub const MAX_LIMIT: usize = 10_000;
/// A page's size when the request names none.
pub const DEFAULT_LIMIT: usize = 100;
/// Most deleted connections a [`Response::Deleted`] reports one by one (all are counted).
pub const DELETE_REPORT: usize = 10_000;
/// Most connections a reload's answer lists one by one (all are counted).
pub const RELOAD_REPORT: usize = 100;
/// Drops a [`Command::Drops`] returns when it names no limit.
pub const DEFAULT_DROPS: usize = 100;

/// What a listing is ordered by. Ties are broken by the original tuple, so pages of an
/// unchanging table never overlap or leave gaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// Seconds left until the entry expires.
    Timeout,
    /// Bytes in both directions together.
    Bytes,
    /// Packets in both directions together.
    Packets,
    /// Original source address, then source port.
    Src,
    /// Original destination address, then destination port.
    Dst,
    /// Protocol number.
    Proto,
    /// Seconds since the connection was created.
    Age,
}

impl SortKey {
    pub const ALL: [SortKey; 7] = [
        SortKey::Timeout,
        SortKey::Age,
        SortKey::Bytes,
        SortKey::Packets,
        SortKey::Src,
        SortKey::Dst,
        SortKey::Proto,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            SortKey::Timeout => "timeout",
            SortKey::Bytes => "bytes",
            SortKey::Packets => "packets",
            SortKey::Src => "src",
            SortKey::Dst => "dst",
            SortKey::Proto => "proto",
            SortKey::Age => "age",
        }
    }

    pub fn from_name(s: &str) -> Option<SortKey> {
        SortKey::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Counters are wanted biggest first; everything else smallest first.
    pub const fn default_descending(self) -> bool {
        matches!(self, SortKey::Bytes | SortKey::Packets)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

/// One page of a listing: skip `offset` matching connections, return at most `limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Default for Page {
    fn default() -> Page {
        Page {
            offset: 0,
            limit: DEFAULT_LIMIT,
        }
    }
}

/// Everything the control API can ask of the firewall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Connections matching `filter`, ordered by `sort` (table order without one), one page.
    List {
        filter: Filter,
        sort: Option<Sort>,
        page: Page,
    },
    /// How many connections match.
    Count { filter: Filter },
    /// Removes the matching connections (`conntrack -D`). The filter must not be empty:
    /// emptying the table is [`Command::Flush`], asked for by name.
    Delete { filter: Filter },
    /// Removes every connection (`conntrack -F`).
    Flush,
    /// Counters: the engine's, the firewall's, the router's, and the table by protocol and
    /// state.
    Stats,
    /// A short summary for `keepstate status`.
    Status,
    /// Puts `policy` in force, keeping the connection table (see
    /// `keepstate_policy::firewall::Firewall::reload`); connections it would not let open
    /// are removed unless `keep`.
    Reload { policy: Box<Policy>, keep: bool },
    /// The policy in force: zones, rules with their counters, forwardings, port forwards,
    /// notrack rules.
    Rules,
    /// The latest drops, newest first, at most `limit` (the router keeps
    /// `keepstate_dataplane::router::DROP_LOG`).
    Drops { limit: usize },
}

/// Table occupancy per protocol name and state: the TCP state's name for TCP, else
/// `UNREPLIED`, `REPLIED` or `ASSURED`.
pub type ByProtoState = BTreeMap<(&'static str, &'static str), u64>;

/// Every counter there is, for `/api/v1/stats`, `/metrics` and `conntrack -S`.
#[derive(Clone, Debug)]
pub struct Stats {
    pub engine: keepstate_engine::Stats,
    pub firewall: FirewallStats,
    pub router: RouterStats,
    pub nat: Option<NatStats>,
    /// Live connections (as listed: expired ones not yet swept are left out).
    pub connections: usize,
    /// The table's limit.
    pub limit: u32,
    pub memory_bytes: usize,
    pub by_proto_state: ByProtoState,
    /// Translated connections.
    pub nat_connections: usize,
    /// Distinct (protocol, address, port) triples source NAT has given out.
    pub nat_ports_in_use: usize,
    /// Per interface the router runs on: its name and counters.
    pub interfaces: Vec<(String, PortStats)>,
    /// Per worker thread of the daemon, by number.
    pub workers: Vec<WorkerStats>,
}

/// What `keepstate status` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub connections: usize,
    pub limit: u32,
    pub memory_bytes: usize,
    /// Packets the engine classified.
    pub packets: u64,
    pub accepted: u64,
    pub dropped: u64,
    pub forwarded: u64,
    pub local: u64,
    /// The router's drops, most frequent first (at most five, none that never happened).
    pub top_drops: Vec<(DropReason, u64)>,
    pub nat_connections: usize,
    /// The policy's interfaces, in order.
    pub interfaces: Vec<String>,
}

#[derive(Clone, Debug)]
pub enum Response {
    List {
        /// Connections matching the filter, on every page.
        total: usize,
        offset: usize,
        items: Vec<Conn>,
    },
    Count {
        count: usize,
    },
    Deleted {
        count: usize,
        /// The first [`DELETE_REPORT`] of them, as they were just before they went.
        items: Vec<Conn>,
    },
    Flushed {
        count: usize,
    },
    Stats(Box<Stats>),
    Status(Status),
    Reloaded(Box<ReloadReport>),
    Rules(Box<Rules>),
    Drops(Vec<DropRow>),
}

/// A refused command: the HTTP status it answers with and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// The policy file's diagnostics (`file:line:col: error: ...`), for a refused reload.
    pub diagnostics: Vec<String>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            diagnostics: Vec::new(),
        }
    }
}

impl From<ReloadError> for ApiError {
    /// 422: the request was understood, the policy it names cannot be put in force.
    fn from(e: ReloadError) -> ApiError {
        match e {
            ReloadError::Config(errs) => ApiError {
                status: 422,
                message: format!(
                    "the policy has {} error{}; the running policy stays in force",
                    errs.0.len(),
                    if errs.0.len() == 1 { "" } else { "s" }
                ),
                diagnostics: errs.0.iter().map(ToString::to_string).collect(),
            },
            e @ ReloadError::InterfacesChanged { .. } => ApiError::new(422, e.to_string()),
        }
    }
}

/// A reload carried out: what the firewall reported, and the file's warnings.
#[derive(Clone, Debug)]
pub struct Reloaded {
    pub report: ReloadReport,
    pub warnings: Vec<String>,
}

/// Reads the policy file at `path` and puts it in force on the router (`keep`: leave the
/// connections it would not let open). The file is read and parsed before the router is
/// locked; the swap itself happens under the lock, between two batches of frames. A file
/// with errors changes nothing: its diagnostics come back in the error. `now` is read once
/// the lock is held.
pub fn reload_file(
    router: &std::sync::Mutex<Router>,
    now: &dyn Fn() -> Time,
    path: &std::path::Path,
    keep: bool,
) -> Result<Reloaded, ApiError> {
    let loaded = keepstate_policy::config::load(path).map_err(ReloadError::Config)?;
    let warnings = loaded.warnings.iter().map(ToString::to_string).collect();
    let cmd = Command::Reload {
        policy: Box::new(loaded.policy),
        keep,
    };
    // A worker that panicked left the router between two frames: still consistent.
    let mut r = router.lock().unwrap_or_else(|p| p.into_inner());
    match execute(&mut r, now(), cmd)? {
        Response::Reloaded(report) => Ok(Reloaded {
            report: *report,
            warnings,
        }),
        other => Err(ApiError::new(500, format!("unexpected answer {other:?}"))),
    }
}

impl core::fmt::Display for ApiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

/// Carries out one command on the router, at `now` (the clock the router's packets are
/// stamped with). Entries that have expired by `now` are removed first, as the next packet
/// would; nothing else changes unless the command is a deletion. The whole table is visited
/// for everything but [`Command::Status`]; a listing keeps only `offset + limit` entries.
pub fn execute(router: &mut Router, now: Time, cmd: Command) -> Result<Response, ApiError> {
    match cmd {
        Command::Reload { policy, keep } => {
            let opts = ReloadOptions {
                keep_forbidden: keep,
            };
            let report = router.reload(now, *policy, opts)?;
            return Ok(Response::Reloaded(Box::new(report)));
        }
        Command::Rules => return Ok(Response::Rules(Box::new(rules::rules(router)))),
        Command::Drops { limit } => return Ok(Response::Drops(rules::drops(router, now, limit))),
        _ => {}
    }
    let fw = router.firewall_mut();
    fw.engine_mut().expire(now);
    match cmd {
        Command::List { filter, sort, page } => {
            if page.limit > MAX_LIMIT {
                return Err(ApiError::bad_request(format!(
                    "limit: at most {MAX_LIMIT} connections a page"
                )));
            }
            let conns = fw.engine().connections().filter(|c| filter.matches(c));
            let (total, items) = page_of(conns, sort, page);
            Ok(Response::List {
                total,
                offset: page.offset,
                items,
            })
        }
        Command::Count { filter } => {
            let count = if filter.is_empty() {
                fw.engine().connections().count()
            } else {
                fw.engine()
                    .connections()
                    .filter(|c| filter.matches(c))
                    .count()
            };
            Ok(Response::Count { count })
        }
        Command::Delete { filter } => {
            if filter.is_empty() {
                return Err(ApiError::bad_request(
                    "a deletion needs a filter; POST /api/v1/connections/flush empties the table",
                ));
            }
            let mut items = Vec::new();
            let count = fw.remove_connections(now, |c| {
                let hit = filter.matches(c);
                if hit && items.len() < DELETE_REPORT {
                    items.push(*c);
                }
                hit
            });
            Ok(Response::Deleted { count, items })
        }
        Command::Flush => {
            let count = fw.remove_connections(now, |_| true);
            Ok(Response::Flushed { count })
        }
        Command::Stats => Ok(Response::Stats(Box::new(stats(router)))),
        Command::Status => Ok(Response::Status(status(router))),
        // Answered before the table was touched.
        Command::Reload { .. } | Command::Rules | Command::Drops { .. } => {
            Err(ApiError::new(500, "handled above"))
        }
    }
}

/// The page `page` of `conns` in `sort` order, and how many there were.
fn page_of(
    conns: impl Iterator<Item = Conn>,
    sort: Option<Sort>,
    page: Page,
) -> (usize, Vec<Conn>) {
    let mut total = 0;
    let Some(sort) = sort else {
        let mut items = Vec::with_capacity(page.limit.min(1024));
        for c in conns {
            if total >= page.offset && items.len() < page.limit {
                items.push(c);
            }
            total += 1;
        }
        return (total, items);
    };
    // Keep the best `want` seen so far: whenever twice that many have gathered, the better
    // half is selected in linear time and the rest dropped.
    let want = page.offset.saturating_add(page.limit);
    let cmp = |a: &Conn, b: &Conn| compare(a, b, sort);
    let mut best: Vec<Conn> = Vec::new();
    for c in conns {
        total += 1;
        if want == 0 {
            continue;
        }
        best.push(c);
        if best.len() >= want.saturating_mul(2).max(64) {
            best.select_nth_unstable_by(want - 1, cmp);
            best.truncate(want);
        }
    }
    best.sort_unstable_by(cmp);
    let items = best
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .collect();
    (total, items)
}

fn compare(a: &Conn, b: &Conn, sort: Sort) -> Ordering {
    let total = |x: [u64; 2]| x[0].saturating_add(x[1]);
    let primary = match sort.key {
        SortKey::Timeout => a.timeout.cmp(&b.timeout),
        SortKey::Age => a.age.cmp(&b.age),
        SortKey::Bytes => total(a.bytes).cmp(&total(b.bytes)),
        SortKey::Packets => total(a.packets).cmp(&total(b.packets)),
        SortKey::Src => (a.original.src, sport(a)).cmp(&(b.original.src, sport(b))),
        SortKey::Dst => (a.original.dst, dport(a)).cmp(&(b.original.dst, dport(b))),
        SortKey::Proto => a.proto.cmp(&b.proto),
    };
    let primary = if sort.descending {
        primary.reverse()
    } else {
        primary
    };
    primary.then_with(|| tie(a).cmp(&tie(b)))
}

type TieKey = (core::net::IpAddr, u16, core::net::IpAddr, u16, u8);

fn tie(c: &Conn) -> TieKey {
    (c.original.src, sport(c), c.original.dst, dport(c), c.proto)
}

/// The original direction's source port (an ICMP query's identifier).
fn sport(c: &Conn) -> u16 {
    match c.original.l4 {
        L4Tuple::Ports { sport, .. } => sport,
        L4Tuple::Icmp { id, .. } => id,
        L4Tuple::None => 0,
    }
}

fn dport(c: &Conn) -> u16 {
    match c.original.l4 {
        L4Tuple::Ports { dport, .. } => dport,
        L4Tuple::Icmp { ty, .. } => u16::from(ty),
        L4Tuple::None => 0,
    }
}

/// The state a connection is counted under in [`Stats::by_proto_state`].
pub fn state_label(c: &Conn) -> &'static str {
    match c.tcp_state {
        Some(s) => s.name(),
        None if c.assured => "ASSURED",
        None if c.seen_reply => "REPLIED",
        None => "UNREPLIED",
    }
}

/// The translated source a connection's replies come back to, if source NAT changed it.
fn snat_of(c: &Conn) -> Option<(u8, core::net::IpAddr, u16)> {
    let (osport, rdport) = match (c.original.l4, c.reply.l4) {
        (L4Tuple::Ports { sport, .. }, L4Tuple::Ports { dport, .. }) => (sport, dport),
        (L4Tuple::Icmp { id: a, .. }, L4Tuple::Icmp { id: b, .. }) => (a, b),
        _ => (0, 0),
    };
    (c.reply.dst != c.original.src || rdport != osport).then_some((c.proto, c.reply.dst, rdport))
}

fn stats(router: &Router) -> Stats {
    let fw = router.firewall();
    let engine = fw.engine();
    let mut by_proto_state = ByProtoState::new();
    let mut ports = std::collections::HashSet::new();
    let mut connections = 0;
    for c in engine.connections() {
        connections += 1;
        *by_proto_state
            .entry((keepstate_engine::proto_name(c.proto), state_label(&c)))
            .or_insert(0) += 1;
        if let Some(p) = snat_of(&c) {
            ports.insert(p);
        }
    }
    Stats {
        engine: engine.stats().clone(),
        firewall: fw.stats().clone(),
        router: router.stats().clone(),
        nat: fw.nat_stats(),
        connections,
        limit: engine.config().max_connections,
        memory_bytes: engine.memory_bytes(),
        by_proto_state,
        nat_connections: fw.nat_bindings(),
        nat_ports_in_use: ports.len(),
        interfaces: router
            .port_stats()
            .map(|(n, s)| (n.to_string(), s))
            .collect(),
        workers: router.worker_stats().to_vec(),
    }
}

fn status(router: &Router) -> Status {
    let fw = router.firewall();
    let engine = fw.engine();
    let rs = router.stats();
    let mut drops: Vec<(DropReason, u64)> = DropReason::ALL
        .iter()
        .map(|&r| (r, rs.dropped_for(r)))
        .filter(|&(_, n)| n > 0)
        .collect();
    drops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.index().cmp(&b.0.index())));
    drops.truncate(5);
    Status {
        connections: engine.len(),
        limit: engine.config().max_connections,
        memory_bytes: engine.memory_bytes(),
        packets: engine.stats().packets,
        accepted: fw.stats().accepted,
        dropped: fw.stats().dropped,
        forwarded: rs.forwarded,
        local: rs.local,
        top_drops: drops,
        nat_connections: fw.nat_bindings(),
        interfaces: fw
            .policy()
            .interfaces
            .iter()
            .map(|i| i.name.clone())
            .collect(),
    }
}
