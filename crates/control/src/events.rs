//! `GET /api/v1/events`: connection events as they happen, like `conntrack -E`.
//!
//! The engine records events in a bounded ring (enabled by the daemon with
//! `Engine::set_events`). Each streaming client has a thread of its own, so a stream never
//! holds up the other requests: every [`POLL`] it takes the router's lock just long enough
//! to move the engine's new events into a shared [`Hub`] (whichever stream comes first
//! does it for all), then sends what it has not sent yet, one line each, in chunks. A
//! stream ends after `seconds` or `limit` events when asked, when the server stops, or when
//! the client has gone (noticed at the next write).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keepstate_dataplane::router::Router;
use keepstate_engine::listing::event_line;
use keepstate_engine::{Event, EventKind};
use serde_json::json;

use crate::query::{filter_of, number, only, pairs, FILTER_PARAMS};
use crate::{ApiError, Filter};

/// Events the hub keeps for streams that are behind.
pub const HUB_CAPACITY: usize = 8192;
/// Events the engine's ring holds between two polls (what `keepstate run` asks for).
pub const ENGINE_CAPACITY: usize = 16_384;
/// How often a stream looks for new events.
pub const POLL: Duration = Duration::from_millis(100);
/// The longest `seconds` a stream may be asked for.
pub const MAX_SECONDS: u64 = 86_400;

/// An events request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventsQuery {
    pub filter: Filter,
    /// NEW, UPDATE, DESTROY.
    pub types: [bool; 3],
    pub json: bool,
    /// End after this long (`Some(0)`: send what is pending and end).
    pub seconds: Option<u64>,
    /// End after this many events.
    pub limit: Option<u64>,
}

fn index(k: EventKind) -> usize {
    match k {
        EventKind::New => 0,
        EventKind::Update => 1,
        EventKind::Destroy => 2,
    }
}

/// Parses `GET /api/v1/events`'s query: the connection filters, `types`
/// (`new,update,destroy`, any of them), `format` (`text`, `json`), `seconds`, `limit`.
pub fn parse_events(query: &str) -> Result<EventsQuery, ApiError> {
    let p = pairs(query)?;
    let mut allowed = FILTER_PARAMS.to_vec();
    allowed.extend(["types", "format", "seconds", "limit"]);
    only(&p, &allowed)?;
    let filter = filter_of(&p)?;
    let get = |name: &str| p.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let types = match get("types") {
        None => [true; 3],
        Some(v) => {
            let mut t = [false; 3];
            for name in v.split(',') {
                let k = match name.trim().to_ascii_lowercase().as_str() {
                    "new" => EventKind::New,
                    "update" => EventKind::Update,
                    "destroy" => EventKind::Destroy,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "types: `{name}` is not new, update or destroy"
                        )))
                    }
                };
                t[index(k)] = true;
            }
            t
        }
    };
    let json = match get("format") {
        None | Some("text") => false,
        Some("json") => true,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "format: `{v}` is not text or json"
            )))
        }
    };
    let seconds = match get("seconds") {
        None => None,
        Some(v) => {
            let s: u64 = number("seconds", v, "a number of seconds")?;
            if s > MAX_SECONDS {
                return Err(ApiError::bad_request(format!(
                    "seconds: at most {MAX_SECONDS}"
                )));
            }
            Some(s)
        }
    };
    let limit = match get("limit") {
        None => None,
        Some(v) => Some(number("limit", v, "a number")?),
    };
    Ok(EventsQuery {
        filter,
        types,
        json,
        seconds,
        limit,
    })
}

/// The events every stream reads, numbered in order.
#[derive(Default)]
pub(crate) struct Hub {
    state: Mutex<HubState>,
    /// Streams subscribed and not yet ended.
    streams: AtomicUsize,
}

#[derive(Default)]
struct HubState {
    buf: VecDeque<Event>,
    /// The number of the next event to arrive; the oldest kept is `next - buf.len()`.
    next: u64,
    /// The engine's count of events it lost, as last seen.
    engine_lost: u64,
}

impl Hub {
    /// Streams subscribed and not yet ended.
    pub(crate) fn streams(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }

    /// Moves the engine's new events in; returns the number the next event will have and
    /// how many events the engine has lost in all.
    fn pull(&self, router: &Mutex<Router>) -> (u64, u64) {
        let mut fresh = Vec::new();
        let mut r = router.lock().unwrap_or_else(|p| p.into_inner());
        let engine = r.firewall_mut().engine_mut();
        engine.take_events(&mut fresh);
        let lost = engine.events_lost();
        // The hub's lock is only ever taken inside the router's: no order to get wrong.
        let mut h = self.state.lock().unwrap_or_else(|p| p.into_inner());
        drop(r);
        h.engine_lost = lost;
        for ev in fresh {
            if h.buf.len() >= HUB_CAPACITY {
                h.buf.pop_front();
            }
            h.buf.push_back(ev);
            h.next += 1;
        }
        (h.next, h.engine_lost)
    }

    /// The events from number `from` on (fewer if some are gone: the first returned is
    /// number `from + skipped`).
    fn since(&self, from: u64, out: &mut Vec<Event>) -> (u64, u64) {
        let h = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let kept = u64::try_from(h.buf.len()).unwrap_or(u64::MAX);
        let oldest = h.next.saturating_sub(kept);
        let start = from.max(oldest);
        let skip = usize::try_from(start - oldest).unwrap_or(usize::MAX);
        out.extend(h.buf.iter().skip(skip).copied());
        (start - from, h.next)
    }
}

/// One event as the stream sends it, with its newline.
fn render(ev: &Event, as_json: bool) -> String {
    let mut s = if as_json {
        let kind = match ev.kind {
            EventKind::New => "new",
            EventKind::Update => "update",
            EventKind::Destroy => "destroy",
        };
        json!({
            "type": kind,
            "line": event_line(ev),
            "connection": crate::json::conn(&ev.conn),
        })
        .to_string()
    } else {
        event_line(ev)
    };
    s.push('\n');
    s
}

/// A note that events were lost, in the stream's format (conntrack prints a warning on
/// standard error when its socket overflows).
fn lost_note(n: u64, as_json: bool) -> String {
    if as_json {
        format!("{}\n", json!({ "type": "lost", "count": n }))
    } else {
        format!("WARNING: {n} events were lost (the event buffer overflowed)\n")
    }
}

fn chunk(w: &mut dyn Write, s: &str) -> std::io::Result<()> {
    write!(w, "{:x}\r\n{s}\r\n", s.len())?;
    w.flush()
}

/// Answers an events request on a thread of its own.
pub(crate) fn spawn_stream(
    req: tiny_http::Request,
    q: EventsQuery,
    hub: Arc<Hub>,
    router: Arc<Mutex<Router>>,
    stop: Arc<AtomicBool>,
) {
    // Subscribing: only what happens from now on, as conntrack -E.
    let (start, lost0) = hub.pull(&router);
    hub.streams.fetch_add(1, Ordering::SeqCst);
    let counted = hub.clone();
    let spawned = std::thread::Builder::new()
        .name("keepstate-events".into())
        .spawn(move || {
            let mut w = req.into_writer();
            // A client that went away is no concern of ours.
            let _ = stream(&mut *w, &q, &hub, &router, &stop, start, lost0);
            hub.streams.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        // Without a thread the request is dropped, and tiny_http closes the connection.
        counted.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

fn stream(
    w: &mut dyn Write,
    q: &EventsQuery,
    hub: &Hub,
    router: &Mutex<Router>,
    stop: &AtomicBool,
    mut next: u64,
    mut engine_lost: u64,
) -> std::io::Result<()> {
    let ct = if q.json {
        "application/x-ndjson"
    } else {
        "text/plain; charset=utf-8"
    };
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )?;
    w.flush()?;
    let deadline = q.seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut sent = 0u64;
    let mut batch = Vec::new();
    loop {
        let (_, lost_now) = hub.pull(router);
        batch.clear();
        let (skipped, upto) = hub.since(next, &mut batch);
        next = upto;
        let lost = skipped + lost_now.saturating_sub(engine_lost);
        engine_lost = lost_now;
        let mut out = String::new();
        if lost > 0 {
            out.push_str(&lost_note(lost, q.json));
        }
        let mut done = false;
        for ev in &batch {
            if q.limit.is_some_and(|l| sent >= l) {
                done = true;
                break;
            }
            if q.types[index(ev.kind)] && q.filter.matches(&ev.conn) {
                out.push_str(&render(ev, q.json));
                sent += 1;
            }
        }
        if !out.is_empty() {
            chunk(w, &out)?;
        }
        done |= q.limit.is_some_and(|l| sent >= l)
            || stop.load(Ordering::Relaxed)
            || deadline.is_some_and(|d| Instant::now() >= d);
        if done {
            break;
        }
        std::thread::sleep(POLL);
    }
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}
