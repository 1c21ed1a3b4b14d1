//! The HTTP server: requests become [`Command`]s, carried out under the router's lock by
//! [`execute`], answered as JSON (or text for line formats and metrics) once the lock is
//! let go.
//!
//! It listens on 127.0.0.1:9180 unless told otherwise. Bound anywhere but loopback it needs a
//! token and refuses to start without one; with a token every request must carry
//! `Authorization: Bearer TOKEN`.

use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use keepstate_dataplane::router::Router;
use keepstate_engine::Time;
use serde_json::json;

use crate::events::{self, Hub};
use crate::query::{self, Format};
use crate::{execute, json, metrics, ApiError, Command, Response};

/// Where the API listens by default.
pub const DEFAULT_BIND: &str = "127.0.0.1:9180";

/// The API could not start.
#[derive(Debug)]
pub struct ServeError(pub String);

impl core::fmt::Display for ServeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServeError {}

/// `--control`'s value: `none` (no API), or an address and port.
pub fn parse_bind(s: &str) -> Result<Option<SocketAddr>, String> {
    if s == "none" {
        return Ok(None);
    }
    s.parse::<SocketAddr>().map(Some).map_err(|_| {
        format!("control address `{s}`: expected ADDRESS:PORT (e.g. {DEFAULT_BIND}) or none")
    })
}

/// Refuses a bind address other than loopback without a token, and an empty token.
pub fn check_bind(addr: SocketAddr, token: Option<&str>) -> Result<(), ServeError> {
    match token {
        Some("") => Err(ServeError("the control token is empty".into())),
        Some(_) => Ok(()),
        None if loopback(addr.ip()) => Ok(()),
        None => Err(ServeError(format!(
            "the control API on {addr} would be reachable from other hosts: give a token \
             (--control-token or KEEPSTATE_TOKEN), or bind it to 127.0.0.1"
        ))),
    }
}

fn loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v| v.is_loopback()),
    }
}

/// The running API; stopped when dropped.
pub struct Server {
    inner: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
    hub: Arc<Hub>,
}

impl Server {
    /// The address it listens on (with the port the system chose, for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many `GET /api/v1/events` streams are subscribed now: each sees the events from
    /// its subscription on, so whoever makes events for a stream can wait for it.
    pub fn event_streams(&self) -> usize {
        self.hub.streams()
    }

    /// Stops accepting requests and waits for the one in hand to be answered.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.inner.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the API on `addr`, on a thread of its own. `now` is the clock the router's packets
/// are stamped with. It has no policy file to reload: see [`serve_with`].
pub fn serve<F>(
    addr: SocketAddr,
    token: Option<String>,
    router: Arc<Mutex<Router>>,
    now: F,
) -> Result<Server, ServeError>
where
    F: Fn() -> Time + Send + 'static,
{
    serve_with(addr, token, router, now, None)
}

/// [`serve`], with the policy file `POST /api/v1/reload` reads again (the daemon's
/// `--config`).
pub fn serve_with<F>(
    addr: SocketAddr,
    token: Option<String>,
    router: Arc<Mutex<Router>>,
    now: F,
    config: Option<PathBuf>,
) -> Result<Server, ServeError>
where
    F: Fn() -> Time + Send + 'static,
{
    check_bind(addr, token.as_deref())?;
    let inner = tiny_http::Server::http(addr)
        .map_err(|e| ServeError(format!("control API: cannot listen on {addr}: {e}")))?;
    let bound = inner.server_addr().to_ip().unwrap_or(addr);
    let inner = Arc::new(inner);
    let stop = Arc::new(AtomicBool::new(false));
    let hub = Arc::new(Hub::default());
    let ctx = Ctx {
        router,
        now: Box::new(now),
        token,
        started: Instant::now(),
        config,
        hub: hub.clone(),
        stop: stop.clone(),
    };
    let (srv, flag) = (inner.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("keepstate-api".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok(req) = srv.recv() else {
                    break;
                };
                answer(&ctx, req);
            }
        })
        .map_err(|e| ServeError(format!("control API: cannot start its thread: {e}")))?;
    Ok(Server {
        inner,
        stop,
        thread: Some(thread),
        addr: bound,
        hub,
    })
}

struct Ctx {
    router: Arc<Mutex<Router>>,
    now: Box<dyn Fn() -> Time + Send>,
    token: Option<String>,
    started: Instant,
    config: Option<PathBuf>,
    /// Connection events for `GET /api/v1/events` streams.
    hub: Arc<Hub>,
    /// Set when the server stops: streams end too.
    stop: Arc<AtomicBool>,
}

/// The largest request body read (a reload's options are a few bytes).
const MAX_BODY: u64 = 64 * 1024;

impl Ctx {
    fn lock(&self) -> MutexGuard<'_, Router> {
        // A worker that panicked left the router between two frames: still consistent.
        self.router.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self, cmd: Command) -> Result<Response, ApiError> {
        let mut r = self.lock();
        let now = (self.now)();
        execute(&mut r, now, cmd)
    }

    fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// An answer before it is put on the wire.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    headers: Vec<(&'static str, String)>,
}

const JSON: &str = "application/json";

impl Reply {
    fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: JSON,
            body: v.to_string(),
            headers: Vec::new(),
        }
    }

    fn error(status: u16, message: &str) -> Reply {
        Reply::json(status, &json!({ "error": message }))
    }

    fn with(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        if e.diagnostics.is_empty() {
            Reply::error(e.status, &e.message)
        } else {
            Reply::json(
                e.status,
                &json!({ "error": e.message, "diagnostics": e.diagnostics }),
            )
        }
    }
}

fn answer(ctx: &Ctx, mut req: tiny_http::Request) {
    let auth = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_string());
    let mut body = String::new();
    let read = req
        .as_reader()
        .take(MAX_BODY)
        .read_to_string(&mut body)
        .map_err(|_| Reply::error(400, "the request body is not UTF-8 text"));
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    if read.is_ok() && req.method().as_str() == "GET" && path == "/api/v1/events" {
        // A stream: answered on a thread of its own, once the checks pass.
        let checked = authorised(ctx, auth.as_deref())
            .and_then(|()| events::parse_events(query).map_err(Reply::from));
        match checked {
            Ok(q) => {
                let (hub, router) = (ctx.hub.clone(), ctx.router.clone());
                events::spawn_stream(req, q, hub, router, ctx.stop.clone());
                return;
            }
            Err(r) => return send(req, r),
        }
    }
    let reply = match read {
        Ok(_) => route(ctx, req.method().as_str(), &url, auth.as_deref(), &body),
        Err(r) => r,
    };
    send(req, reply);
}

fn send(req: tiny_http::Request, reply: Reply) {
    // The body is in memory whole: send its length, never chunks (simpler for clients).
    let mut resp = tiny_http::Response::from_string(reply.body)
        .with_status_code(reply.status)
        .with_chunked_threshold(usize::MAX);
    let ct = [("Content-Type", reply.content_type.to_string())];
    for (k, v) in ct.iter().chain(reply.headers.iter()) {
        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            resp.add_header(h);
        }
    }
    // A client that went away is no concern of ours.
    let _ = req.respond(resp);
}

/// Compares without an early exit, so the time taken tells nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        let y = b.get(i % b.len().max(1)).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

fn authorised(ctx: &Ctx, auth: Option<&str>) -> Result<(), Reply> {
    let Some(token) = &ctx.token else {
        return Ok(());
    };
    let challenge = |r: Reply| r.with("WWW-Authenticate", "Bearer realm=\"keepstate\"".into());
    let Some(given) = auth.and_then(|a| a.strip_prefix("Bearer ")) else {
        return Err(challenge(Reply::error(
            401,
            "this API needs a token: send Authorization: Bearer TOKEN",
        )));
    };
    if same(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(challenge(Reply::error(401, "wrong token")))
    }
}

/// Paths and the methods each answers to.
const ROUTES: [(&str, &[&str]); 11] = [
    ("/api/v1/events", &["GET"]),
    ("/api/v1/connections", &["GET", "DELETE"]),
    ("/api/v1/connections/count", &["GET"]),
    ("/api/v1/connections/flush", &["POST"]),
    ("/api/v1/reload", &["POST"]),
    ("/api/v1/rules", &["GET"]),
    ("/api/v1/drops", &["GET"]),
    ("/api/v1/stats", &["GET"]),
    ("/api/v1/status", &["GET"]),
    ("/api/v1/openapi.json", &["GET"]),
    ("/metrics", &["GET"]),
];

fn route(ctx: &Ctx, method: &str, url: &str, auth: Option<&str>, body: &str) -> Reply {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    // The web interface's pages hold no data (every figure they show comes from the API,
    // which checks the token), and a browser cannot send a bearer token when it loads a
    // page: so they are served to anyone who can reach the address.
    if method == "GET" && !path.starts_with("/api/") && path != "/metrics" {
        if let Some(page) = page(path) {
            return page;
        }
    }
    if let Err(r) = authorised(ctx, auth) {
        return r;
    }
    let Some((_, methods)) = ROUTES.iter().find(|(p, _)| *p == path) else {
        return Reply::error(404, &format!("no such path: {path}"));
    };
    if !methods.contains(&method) {
        return Reply::error(
            405,
            &format!(
                "{path} answers to {} only, not {method}",
                methods.join(" and ")
            ),
        )
        .with("Allow", methods.join(", "));
    }
    match handle(ctx, method, path, query, body) {
        Ok(r) => r,
        Err(e) => e.into(),
    }
}

/// A page of the web interface, with the headers that lock it to its own origin.
fn page(path: &str) -> Option<Reply> {
    let a = keepstate_webui::asset(path)?;
    // The assets are text (HTML, CSS, JavaScript, SVG), checked by the webui crate's tests.
    let body = std::str::from_utf8(a.body).ok()?.to_string();
    let mut r = Reply {
        status: 200,
        content_type: a.content_type,
        body,
        headers: Vec::new(),
    };
    for (k, v) in keepstate_webui::HEADERS {
        r = r.with(k, (*v).to_string());
    }
    Some(r)
}

fn no_params(query: &str) -> Result<(), ApiError> {
    query::only(&query::pairs(query)?, &[])
}

/// A reload's options: no body, or a JSON object with at most `keep` (a boolean).
fn reload_options(body: &str) -> Result<bool, ApiError> {
    if body.trim().is_empty() {
        return Ok(false);
    }
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| ApiError::bad_request(format!("body: not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("body: expected a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| k.as_str() != "keep") {
        return Err(ApiError::bad_request(format!(
            "body: {k}: unknown field (known: keep)"
        )));
    }
    match obj.get("keep") {
        None => Ok(false),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad_request("body: keep: expected true or false")),
    }
}

fn drops_limit(q: &str) -> Result<usize, ApiError> {
    let pairs = query::pairs(q)?;
    query::only(&pairs, &["limit"])?;
    match pairs.iter().find(|(k, _)| k == "limit") {
        None => Ok(crate::DEFAULT_DROPS),
        Some((_, v)) => match v.parse::<usize>() {
            Ok(n) if n <= keepstate_dataplane::router::DROP_LOG => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit: `{v}` is not a number from 0 to {}",
                keepstate_dataplane::router::DROP_LOG
            ))),
        },
    }
}

fn handle(ctx: &Ctx, method: &str, path: &str, q: &str, body: &str) -> Result<Reply, ApiError> {
    let uptime = ctx.uptime();
    let reply = match (method, path) {
        ("GET", "/api/v1/connections") => {
            let l = query::parse_list(q)?;
            let resp = ctx.run(Command::List {
                filter: l.filter,
                sort: l.sort,
                page: l.page,
            })?;
            match (l.format, &resp) {
                (Format::Json, _) => Reply::json(200, &json::response(&resp, uptime)),
                (f, Response::List { total, items, .. }) => {
                    let mut body = String::with_capacity(items.len() * 200);
                    for c in items {
                        body.push_str(&json::line(c, f));
                        body.push('\n');
                    }
                    Reply {
                        status: 200,
                        content_type: "text/plain; charset=utf-8",
                        body,
                        headers: vec![("X-Total-Count", total.to_string())],
                    }
                }
                (_, other) => Reply::json(200, &json::response(other, uptime)),
            }
        }
        ("DELETE", "/api/v1/connections") => {
            let filter = query::parse_filter(q)?;
            Reply::json(
                200,
                &json::response(&ctx.run(Command::Delete { filter })?, uptime),
            )
        }
        ("GET", "/api/v1/connections/count") => {
            let filter = query::parse_filter(q)?;
            Reply::json(
                200,
                &json::response(&ctx.run(Command::Count { filter })?, uptime),
            )
        }
        ("POST", "/api/v1/connections/flush") => {
            no_params(q)?;
            Reply::json(200, &json::response(&ctx.run(Command::Flush)?, uptime))
        }
        ("GET", "/api/v1/stats") => {
            no_params(q)?;
            Reply::json(200, &json::response(&ctx.run(Command::Stats)?, uptime))
        }
        ("GET", "/api/v1/status") => {
            no_params(q)?;
            Reply::json(200, &json::response(&ctx.run(Command::Status)?, uptime))
        }
        ("POST", "/api/v1/reload") => {
            no_params(q)?;
            let keep = reload_options(body)?;
            let Some(path) = &ctx.config else {
                return Err(ApiError::new(
                    409,
                    "this server has no policy file to reload (keepstate run --config names it)",
                ));
            };
            let done = crate::reload_file(&ctx.router, &*ctx.now, path, keep)?;
            Reply::json(200, &json::reloaded(&done.report, &done.warnings))
        }
        ("GET", "/api/v1/rules") => {
            no_params(q)?;
            Reply::json(200, &json::response(&ctx.run(Command::Rules)?, uptime))
        }
        ("GET", "/api/v1/drops") => {
            let limit = drops_limit(q)?;
            Reply::json(
                200,
                &json::response(&ctx.run(Command::Drops { limit })?, uptime),
            )
        }
        ("GET", "/api/v1/openapi.json") => {
            no_params(q)?;
            Reply {
                status: 200,
                content_type: JSON,
                body: crate::OPENAPI.to_string(),
                headers: Vec::new(),
            }
        }
        ("GET", "/metrics") => {
            no_params(q)?;
            match ctx.run(Command::Stats)? {
                Response::Stats(s) => Reply {
                    status: 200,
                    content_type: metrics::CONTENT_TYPE,
                    body: metrics::render(&s, uptime),
                    headers: Vec::new(),
                },
                other => Reply::json(200, &json::response(&other, uptime)),
            }
        }
        _ => Reply::error(404, &format!("no such path: {path}")),
    };
    Ok(reply)
}
