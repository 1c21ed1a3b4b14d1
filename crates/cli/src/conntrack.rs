//! `keepstate conntrack` and `keepstate status`: clients of a running `keepstate run`'s
//! control API. `conntrack` takes conntrack-tools' options and prints what conntrack-tools
//! prints: the same lines on standard output, byte for byte, and the same summary on
//! standard error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// What conntrack-tools' summaries are signed with.
const SIGN: &str = "conntrack v1.4 (keepstate)";
/// Connections fetched per request while listing the whole table.
const PAGE: usize = 10_000;

#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("command")
        .required(true)
        .args(["dump", "count", "delete", "flush", "stats", "event"])
))]
pub struct Args {
    /// List connections.
    #[arg(short = 'L', long = "dump")]
    pub dump: bool,
    /// Count connections (filters allowed).
    #[arg(short = 'C', long = "count")]
    pub count: bool,
    /// Delete the connections the filters match (at least one filter; -F empties the table).
    #[arg(short = 'D', long = "delete")]
    pub delete: bool,
    /// Delete every connection.
    #[arg(short = 'F', long = "flush")]
    pub flush: bool,
    /// Show statistics (conntrack's per-CPU line; keepstate has one table).
    #[arg(short = 'S', long = "stats")]
    pub stats: bool,
    /// Print connection events ([NEW], [UPDATE], [DESTROY]) as they happen, until
    /// interrupted.
    #[arg(short = 'E', long = "event")]
    pub event: bool,
    /// With -E: which events, comma-separated (NEW, UPDATE, DESTROY; default all).
    #[arg(short = 'e', long = "event-mask", value_name = "NEW,UPDATE,DESTROY")]
    pub event_mask: Option<String>,
    /// Protocol name or number.
    #[arg(short = 'p', long = "proto", visible_alias = "protonum")]
    pub proto: Option<String>,
    /// Original source address or prefix.
    #[arg(short = 's', long = "src", visible_alias = "orig-src")]
    pub src: Option<String>,
    /// Original destination address or prefix.
    #[arg(short = 'd', long = "dst", visible_alias = "orig-dst")]
    pub dst: Option<String>,
    /// Reply source address or prefix.
    #[arg(short = 'r', long = "reply-src")]
    pub reply_src: Option<String>,
    /// Reply destination address or prefix (a masqueraded connection's outside address).
    #[arg(short = 'q', long = "reply-dst")]
    pub reply_dst: Option<String>,
    /// Original source port.
    #[arg(long = "sport", visible_alias = "orig-port-src")]
    pub sport: Option<u16>,
    /// Original destination port.
    #[arg(long = "dport", visible_alias = "orig-port-dst")]
    pub dport: Option<u16>,
    /// TCP state (ESTABLISHED, TIME_WAIT, ...).
    #[arg(long)]
    pub state: Option<String>,
    /// Connection mark (keepstate sets none: 0 matches every connection).
    #[arg(short = 'm', long)]
    pub mark: Option<u32>,
    /// Conntrack zone (every connection is in zone 0).
    #[arg(short = 'w', long)]
    pub zone: Option<u16>,
    /// Address family: ipv4 or ipv6.
    #[arg(short = 'f', long)]
    pub family: Option<String>,
    /// Output format: extended (layer 3 protocol first), or json (one object a line).
    #[arg(short = 'o', long, value_parser = ["extended", "json"])]
    pub output: Option<String>,
    #[command(flatten)]
    pub api: Api,
}

/// Where the control API is.
#[derive(clap::Args)]
pub struct Api {
    /// The control API's address (as given to `keepstate run --control`).
    #[arg(long, value_name = "ADDR:PORT", default_value = keepstate_control::DEFAULT_BIND)]
    pub control: String,
    /// Its bearer token (default: $KEEPSTATE_TOKEN).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

pub fn run(args: &Args) -> Result<()> {
    let client = Client::new(&args.api)?;
    let filter = filter_query(args);
    if args.dump {
        list(&client, &filter, args.output.as_deref())
    } else if args.count {
        let v = client.json("GET", &format!("/api/v1/connections/count{}", q(&filter)))?;
        println!("{}", field(&v, "count")?);
        Ok(())
    } else if args.delete {
        delete(&client, &filter, args.output.as_deref())
    } else if args.event {
        events(&client, &filter, args)
    } else if args.flush {
        client.json("POST", "/api/v1/connections/flush")?;
        eprintln!("{SIGN}: connection tracking table has been emptied.");
        Ok(())
    } else {
        let v = client.json("GET", "/api/v1/stats")?;
        print!("{}", stats_line(&v));
        Ok(())
    }
}

/// The query string for the filters given (without `?`).
fn filter_query(a: &Args) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            parts.push(format!("{k}={}", encode(&v)));
        }
    };
    add("family", a.family.clone());
    add("proto", a.proto.clone());
    add("src", a.src.clone());
    add("dst", a.dst.clone());
    add("reply_src", a.reply_src.clone());
    add("reply_dst", a.reply_dst.clone());
    add("sport", a.sport.map(|p| p.to_string()));
    add("dport", a.dport.map(|p| p.to_string()));
    add("state", a.state.clone());
    add("mark", a.mark.map(|m| m.to_string()));
    add("zone", a.zone.map(|z| z.to_string()));
    parts.join("&")
}

fn q(query: &str) -> String {
    if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}&{b}"),
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `-L`: the whole table, a page at a time (a table that changes meanwhile may show a
/// connection twice or miss one, as a kernel dump racing with updates may).
fn list(client: &Client, filter: &str, output: Option<&str>) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut shown = 0usize;
    let mut offset = 0usize;
    loop {
        let page = format!("limit={PAGE}&offset={offset}");
        let n = if output == Some("json") {
            let v = client.json(
                "GET",
                &format!("/api/v1/connections?{}", join(filter, &page)),
            )?;
            let items = v
                .get("items")
                .and_then(Value::as_array)
                .ok_or_else(|| anyhow!("the API's answer has no items"))?;
            for item in items {
                writeln!(out, "{item}")?;
            }
            items.len()
        } else {
            let format = if output == Some("extended") {
                "extended"
            } else {
                "text"
            };
            let path = format!(
                "/api/v1/connections?{}",
                join(filter, &format!("{page}&format={format}"))
            );
            let r = client.request("GET", &path)?;
            let body = r.ok()?;
            let mut n = 0;
            for line in body.lines() {
                writeln!(out, "{line}")?;
                n += 1;
            }
            n
        };
        shown += n;
        offset += n;
        if n < PAGE {
            break;
        }
    }
    out.flush()?;
    eprintln!("{SIGN}: {shown} flow entries have been shown.");
    Ok(())
}

/// `-E`: the event stream, printed line by line as it arrives; a note of lost events goes
/// to standard error, as conntrack's ENOBUFS warning does.
fn events(client: &Client, filter: &str, args: &Args) -> Result<()> {
    let mut extra = String::from(if args.output.as_deref() == Some("json") {
        "format=json"
    } else {
        "format=text"
    });
    if let Some(m) = &args.event_mask {
        let mut types = Vec::new();
        for t in m.split(',') {
            match t.trim().to_ascii_uppercase().as_str() {
                "ALL" => types.extend(["new", "update", "destroy"]),
                "NEW" => types.push("new"),
                "UPDATE" => types.push("update"),
                "DESTROY" => types.push("destroy"),
                other => bail!("-e: `{other}` is not NEW, UPDATE, DESTROY or ALL"),
            }
        }
        extra.push_str(&format!("&types={}", types.join(",")));
    }
    let path = format!("/api/v1/events?{}", join(filter, &extra));
    let s = client.open("GET", &path, None)?;
    let mut r = std::io::BufReader::new(s);
    let head = read_head(&mut r)?;
    let reply_ok = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .is_some_and(|c| c == "200");
    if !reply_ok {
        let mut raw = head.into_bytes();
        raw.extend_from_slice(b"\r\n\r\n");
        r.read_to_end(&mut raw)?;
        parse_reply(&raw)?.ok()?;
        bail!("control API: the event stream was refused");
    }
    let stdout = std::io::stdout();
    let mut shown = 0u64;
    let mut data = Vec::new();
    loop {
        let mut size = String::new();
        if std::io::BufRead::read_line(&mut r, &mut size)? == 0 {
            break;
        }
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or_default(), 16)
            .map_err(|_| anyhow!("control API: bad chunk size"))?;
        if n == 0 {
            break;
        }
        data.resize(n + 2, 0);
        r.read_exact(&mut data)?;
        let text = core::str::from_utf8(data.get(..n).unwrap_or_default())
            .context("control API: the event stream is not UTF-8")?;
        let mut out = stdout.lock();
        for line in text.lines() {
            if line.starts_with("WARNING:") {
                eprintln!("{line}");
            } else {
                writeln!(out, "{line}")?;
                shown += 1;
            }
        }
        out.flush()?;
    }
    eprintln!("{SIGN}: {shown} flow events have been shown.");
    Ok(())
}

/// An answer's status line and headers, up to the blank line.
fn read_head(r: &mut impl std::io::BufRead) -> Result<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("control API: truncated answer");
        }
        if line == "\r\n" || line == "\n" {
            return Ok(head);
        }
        if head.len() > 64 * 1024 {
            bail!("control API: oversized answer head");
        }
        head.push_str(&line);
    }
}

/// `-D`: the deleted connections' lines, then the summary; like conntrack, exits with 1
/// when nothing matched.
fn delete(client: &Client, filter: &str, output: Option<&str>) -> Result<()> {
    if filter.is_empty() {
        bail!(
            "-D needs a filter (-p, -s, -d, --sport, --dport, --state ...); -F empties the table"
        );
    }
    let v = client.json("DELETE", &format!("/api/v1/connections?{filter}"))?;
    let count = field(&v, "deleted")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for item in v
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let line = match output {
            Some("json") => item.to_string(),
            Some("extended") => str_field(item, "extended")?,
            _ => str_field(item, "line")?,
        };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    eprintln!("{SIGN}: {count} flow entries have been deleted.");
    if count == 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn field(v: &Value, name: &str) -> Result<u64> {
    v.get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("the API's answer has no {name}"))
}

fn str_field(v: &Value, name: &str) -> Result<String> {
    v.get(name)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the API's answer has no {name}"))
}

fn at(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

/// `conntrack -S`'s line (conntrack-tools 1.4.7, one "CPU": keepstate has one table):
/// `found` counts packets of known connections (established and related), `invalid` invalid
/// packets, `insert` connections created, `insert_failed` and `drop` new connections
/// refused by a full table, `early_drop` those evicted to make room; the rest are 0.
pub fn stats_line(v: &Value) -> String {
    let found = at(v, &["engine", "by_state", "established"])
        .saturating_add(at(v, &["engine", "by_state", "related"]));
    let refused = at(v, &["engine", "refused"]);
    format!(
        "cpu={:<4}\tfound={found} invalid={} insert={} insert_failed={refused} drop={refused} \
         early_drop={} error=0 search_restart=0 clash_resolve=0 chaintoolong=0 \n",
        0,
        at(v, &["engine", "by_state", "invalid"]),
        at(v, &["engine", "created"]),
        at(v, &["engine", "evicted"]),
    )
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: Api,
}

pub fn status(args: &StatusArgs) -> Result<()> {
    let client = Client::new(&args.api)?;
    let v = client.json("GET", "/api/v1/status")?;
    print!("{}", status_text(&v));
    Ok(())
}

/// `keepstate status`'s summary.
pub fn status_text(v: &Value) -> String {
    let n = |k: &str| at(v, &[k]);
    let up = n("uptime_s");
    let ifaces: Vec<&str> = v
        .get("interfaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let (conns, limit) = (n("connections"), n("limit"));
    let per_mille = conns.saturating_mul(1000).checked_div(limit).unwrap_or(0);
    let mut s = format!(
        "keepstate {}, up {}h {:02}m {:02}s\n",
        v.get("version").and_then(Value::as_str).unwrap_or("?"),
        up / 3600,
        up / 60 % 60,
        up % 60
    );
    s.push_str(&format!("interfaces:  {}\n", ifaces.join(", ")));
    s.push_str(&format!(
        "connections: {conns} of {limit} ({}.{}%), {} translated\n",
        per_mille / 10,
        per_mille % 10,
        n("nat_connections")
    ));
    s.push_str(&format!(
        "packets:     {} judged: {} accepted, {} dropped; {} forwarded, {} for the router\n",
        n("packets"),
        n("accepted"),
        n("dropped"),
        n("forwarded"),
        n("local")
    ));
    let drops: Vec<String> = v
        .get("top_drops")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| {
            Some(format!(
                "{} {}",
                d.get("reason")?.as_str()?,
                d.get("count")?
            ))
        })
        .collect();
    if drops.is_empty() {
        s.push_str("drops:       none\n");
    } else {
        s.push_str(&format!("top drops:   {}\n", drops.join(", ")));
    }
    s
}

#[derive(clap::Args)]
pub struct ReloadArgs {
    /// Leave the connections the new policy would not let open in the table (by default
    /// they are removed).
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub api: Api,
}

/// `keepstate reload`: the running router reads its policy file again (as on SIGHUP).
/// The connections the new policy refused are printed as `conntrack -L` lines; a refused
/// file's diagnostics go to standard error and the command fails.
pub fn reload(args: &ReloadArgs) -> Result<()> {
    let client = Client::new(&args.api)?;
    let body = if args.keep { r#"{"keep":true}"# } else { "{}" };
    let r = client.request_with("POST", "/api/v1/reload", Some(body))?;
    if r.status == 422 {
        let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        for d in v
            .get("diagnostics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            eprintln!("{d}");
        }
        let msg = v.get("error").and_then(Value::as_str).unwrap_or("refused");
        bail!("reload refused: {msg}");
    }
    let v: Value = serde_json::from_str(&r.ok()?).context("control API: the answer is not JSON")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in v
        .get("refused")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    for w in v
        .get("warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            v.get("notes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
        .filter_map(Value::as_str)
    {
        eprintln!("{w}");
    }
    let forbidden = at(&v, &["forbidden"]);
    eprintln!(
        "keepstate: policy reloaded: {} connections checked, {forbidden} no longer allowed ({}), \
         {} in the table",
        at(&v, &["checked"]),
        if args.keep {
            "kept".to_string()
        } else {
            format!("{} removed", at(&v, &["removed"]))
        },
        at(&v, &["connections"]),
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct RulesArgs {
    /// Print the API's JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: Api,
}

/// `keepstate rules`: the policy in force with its counters, one line a rule, as
/// `nft list ruleset` shows counters.
pub fn rules(args: &RulesArgs) -> Result<()> {
    let client = Client::new(&args.api)?;
    let v = client.json("GET", "/api/v1/rules")?;
    if args.json {
        println!("{v}");
    } else {
        print!("{}", rules_text(&v));
    }
    Ok(())
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Fields of a rule's JSON that are not part of its match.
const RULE_KEYS: [&str; 11] = [
    "index", "name", "src", "dest", "target", "log", "limit", "hits", "packets", "bytes", "match",
];

fn rule_lines(out: &mut String, heading: &str, rules: &[Value]) {
    use std::fmt::Write as _;
    if rules.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{heading}:");
    let _ = writeln!(
        out,
        "  {:>3}  {:<24} {:<18} {:<8} {:>10} {:>12}  match",
        "#", "name", "chain", "action", "packets", "bytes"
    );
    for r in rules {
        let matches: Vec<String> = r
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !RULE_KEYS.contains(&k.as_str()))
            .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
            .collect();
        let mut m = matches.join(" ");
        if let Some(l) = r.get("limit").and_then(Value::as_str) {
            m.push_str(&format!(" limit {l}"));
        }
        if r.get("log").and_then(Value::as_bool) == Some(true) {
            m.push_str(" log");
        }
        let _ = writeln!(
            out,
            "  {:>3}  {:<24} {:<18} {:<8} {:>10} {:>12}  {}",
            at(r, &["index"]) + 1,
            s(r, "name"),
            format!("{} -> {}", s(r, "src"), s(r, "dest")),
            s(r, "target"),
            at(r, &["packets"]),
            at(r, &["bytes"]),
            m.trim()
        );
    }
}

/// `keepstate rules`' table.
pub fn rules_text(v: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let list = |k: &str| -> Vec<Value> {
        v.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for z in list("zones") {
        let _ = writeln!(
            out,
            "zone {}: input {}, output {}, forward {}{}  [{}{}]",
            s(&z, "name"),
            s(&z, "input"),
            s(&z, "output"),
            s(&z, "forward"),
            if z.get("masq").and_then(Value::as_bool) == Some(true) {
                ", masquerade"
            } else {
                ""
            },
            strs(&z, "interfaces").join(" "),
            match strs(&z, "networks") {
                n if n.is_empty() => String::new(),
                n => format!(": {}", n.join(" ")),
            }
        );
    }
    for f in list("forwards") {
        let _ = writeln!(out, "forwarding {} -> {}", s(&f, "src"), s(&f, "dest"));
    }
    rule_lines(&mut out, "rules", &list("rules"));
    rule_lines(&mut out, "notrack", &list("notrack"));
    let forwards = list("port_forwards");
    if !forwards.is_empty() {
        let _ = writeln!(out, "\nport forwards:");
        for f in forwards {
            let _ = writeln!(
                out,
                "  {:<24} {} {} {}:{} -> {}:{}{}",
                s(&f, "name"),
                s(&f, "src"),
                s(&f, "proto"),
                f.get("external_ip")
                    .and_then(Value::as_str)
                    .unwrap_or("(zone address)"),
                s(&f, "src_dport"),
                s(&f, "dest_ip"),
                s(&f, "dest_port"),
                if f.get("reflection").and_then(Value::as_bool) == Some(true) {
                    " reflection"
                } else {
                    ""
                }
            );
        }
    }
    out
}

/// A minimal HTTP/1.1 client: one request per connection, which is all a command-line tool
/// makes, and no dependency for it.
struct Client {
    addr: SocketAddr,
    host: String,
    token: Option<String>,
}

struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    /// The body of a 2xx answer; else the API's error message.
    fn ok(self) -> Result<String> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        let msg = serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_string))
            .unwrap_or(self.body);
        bail!("control API: {msg} (HTTP {})", self.status)
    }
}

impl Client {
    fn new(api: &Api) -> Result<Client> {
        let addr = api
            .control
            .to_socket_addrs()
            .with_context(|| format!("control address `{}`", api.control))?
            .next()
            .ok_or_else(|| anyhow!("control address `{}` resolves to nothing", api.control))?;
        Ok(Client {
            addr,
            host: api.control.clone(),
            token: api
                .token
                .clone()
                .or_else(|| std::env::var("KEEPSTATE_TOKEN").ok()),
        })
    }

    fn json(&self, method: &str, path: &str) -> Result<Value> {
        let body = self.request(method, path)?.ok()?;
        serde_json::from_str(&body).context("control API: the answer is not JSON")
    }

    fn request(&self, method: &str, path: &str) -> Result<Reply> {
        self.request_with(method, path, None)
    }

    /// A request with a JSON body.
    fn request_with(&self, method: &str, path: &str, body: Option<&str>) -> Result<Reply> {
        let mut s = self.open(method, path, body)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .context("reading the control API's answer")?;
        parse_reply(&raw)
    }

    /// Sends a request; the answer is left to read (with no read timeout: an event stream
    /// may be quiet for long).
    fn open(&self, method: &str, path: &str, body: Option<&str>) -> Result<TcpStream> {
        let mut s =
            TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).with_context(|| {
                format!(
                    "cannot reach the control API at {} (is `keepstate run` running, with \
                     --control there?)",
                    self.addr
                )
            })?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: */*\r\n",
            self.host
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        match body {
            Some(b) => req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None if method != "GET" => req.push_str("Content-Length: 0\r\n\r\n"),
            None => req.push_str("\r\n"),
        }
        s.write_all(req.as_bytes())?;
        Ok(s)
    }
}

fn parse_reply(raw: &[u8]) -> Result<Reply> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("control API: truncated answer"))?;
    let head = String::from_utf8_lossy(raw.get(..end).unwrap_or_default());
    let body = raw.get(end + 4..).unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("control API: not an HTTP answer"))?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(Reply {
        status,
        body: String::from_utf8(body).context("control API: the answer is not UTF-8")?,
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("control API: bad chunked body"))?;
        let size = core::str::from_utf8(b.get(..eol).unwrap_or_default())
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or_else(|| anyhow!("control API: bad chunk size"))?;
        if size == 0 {
            return Ok(out);
        }
        let data = b
            .get(eol + 2..eol + 2 + size)
            .ok_or_else(|| anyhow!("control API: truncated chunk"))?;
        out.extend_from_slice(data);
        b = b.get(eol + 4 + size..).unwrap_or_default();
    }
}
