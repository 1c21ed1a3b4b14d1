//! Query strings into commands. Every parameter is checked: an unknown name or a bad value
//! is refused with a message that names it.

use keepstate_engine::{Family, TcpState};

use crate::{ApiError, Filter, Page, Prefix, Sort, SortKey, MAX_LIMIT};

/// The filter parameters, as `GET /api/v1/connections` and its siblings take them.
pub const FILTER_PARAMS: [&str; 12] = [
    "family",
    "proto",
    "src",
    "dst",
    "reply_src",
    "reply_dst",
    "addr",
    "sport",
    "dport",
    "state",
    "zone",
    "mark",
];

/// What a listing is rendered as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    /// `conntrack -L` lines.
    Text,
    /// `conntrack -L -o extended` lines.
    Extended,
    /// `/proc/net/nf_conntrack` lines.
    Proc,
}

/// A listing request: what to list and how to render it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: Filter,
    pub sort: Option<Sort>,
    pub page: Page,
    pub format: Format,
}

/// Splits a query string into decoded name/value pairs.
pub(crate) fn pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k =
            decode(k).ok_or_else(|| ApiError::bad_request("bad percent-encoding in the query"))?;
        let v = decode(v).ok_or_else(|| {
            ApiError::bad_request(format!("{k}: bad percent-encoding in the value"))
        })?;
        if out.iter().any(|(n, _): &(String, String)| *n == k) {
            return Err(ApiError::bad_request(format!("{k}: given more than once")));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// Percent-decoding, with `+` as a space (form encoding).
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = core::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Refuses any parameter not in `allowed`.
pub(crate) fn only(pairs: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    match pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((k, _)) if allowed.is_empty() => Err(ApiError::bad_request(format!(
            "{k}: unknown parameter (this endpoint takes none)"
        ))),
        Some((k, _)) => Err(ApiError::bad_request(format!(
            "{k}: unknown parameter (known: {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn bad(name: &str, msg: impl core::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("{name}: {msg}"))
}

pub(crate) fn number<T: core::str::FromStr>(
    name: &str,
    v: &str,
    what: &str,
) -> Result<T, ApiError> {
    v.parse::<T>()
        .map_err(|_| bad(name, format!("`{v}` is not {what}")))
}

/// Protocol by conntrack's name or by number.
pub fn parse_proto(v: &str) -> Option<u8> {
    let v = v.to_ascii_lowercase();
    match v.as_str() {
        "icmp" => Some(1),
        "tcp" => Some(6),
        "udp" => Some(17),
        "dccp" => Some(33),
        "gre" => Some(47),
        "esp" => Some(50),
        "ah" => Some(51),
        "icmpv6" | "ipv6-icmp" => Some(58),
        "sctp" => Some(132),
        "udplite" => Some(136),
        _ => v.parse().ok(),
    }
}

/// A TCP state by conntrack's name (any case).
pub fn parse_state(v: &str) -> Option<TcpState> {
    TcpState::ALL
        .into_iter()
        .find(|s| s.name().eq_ignore_ascii_case(v))
}

/// The filter in the filter parameters of `pairs` (other names are left for the caller).
pub(crate) fn filter_of(pairs: &[(String, String)]) -> Result<Filter, ApiError> {
    let mut f = Filter::default();
    for (k, v) in pairs {
        let prefix = |v: &str| Prefix::parse(v).map_err(|e| bad(k, e));
        match k.as_str() {
            "family" => {
                f.family = Some(match v.as_str() {
                    "ipv4" | "4" => Family::V4,
                    "ipv6" | "6" => Family::V6,
                    _ => return Err(bad(k, format!("`{v}` is not ipv4 or ipv6"))),
                })
            }
            "proto" => {
                f.proto = Some(
                    parse_proto(v)
                        .ok_or_else(|| bad(k, format!("`{v}` is not a protocol name or number")))?,
                )
            }
            "src" => f.src = Some(prefix(v)?),
            "dst" => f.dst = Some(prefix(v)?),
            "reply_src" => f.reply_src = Some(prefix(v)?),
            "reply_dst" => f.reply_dst = Some(prefix(v)?),
            "addr" => f.addr = Some(prefix(v)?),
            "sport" => f.sport = Some(number(k, v, "a port (0 to 65535)")?),
            "dport" => f.dport = Some(number(k, v, "a port (0 to 65535)")?),
            "state" => {
                f.state = Some(parse_state(v).ok_or_else(|| {
                    let names: Vec<&str> = TcpState::ALL.iter().map(|s| s.name()).collect();
                    bad(
                        k,
                        format!("`{v}` is not a TCP state ({})", names.join(", ")),
                    )
                })?)
            }
            "zone" => f.zone = Some(number(k, v, "a zone (0 to 65535)")?),
            "mark" => f.mark = Some(number(k, v, "a mark (0 to 4294967295)")?),
            _ => {}
        }
    }
    Ok(f)
}

/// A filter from a query string that may hold nothing else (count, delete).
pub fn parse_filter(query: &str) -> Result<Filter, ApiError> {
    let p = pairs(query)?;
    only(&p, &FILTER_PARAMS)?;
    filter_of(&p)
}

/// A listing from a query string: the filter, `sort` (`timeout`, `bytes`, `packets`,
/// `src`, `dst`, `proto`), `order` (`asc`, `desc`), `limit`, `offset` and `format` (`json`,
/// `text`, `extended`, `proc`).
pub fn parse_list(query: &str) -> Result<ListQuery, ApiError> {
    let p = pairs(query)?;
    let mut allowed = FILTER_PARAMS.to_vec();
    allowed.extend(["sort", "order", "limit", "offset", "format"]);
    only(&p, &allowed)?;
    let filter = filter_of(&p)?;
    let get = |name: &str| p.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let key = match get("sort") {
        Some(v) => Some(SortKey::from_name(v).ok_or_else(|| {
            let names: Vec<&str> = SortKey::ALL.iter().map(|k| k.name()).collect();
            bad("sort", format!("`{v}` is not one of {}", names.join(", ")))
        })?),
        None => None,
    };
    let descending = match get("order") {
        Some("asc") => Some(false),
        Some("desc") => Some(true),
        Some(v) => return Err(bad("order", format!("`{v}` is not asc or desc"))),
        None => None,
    };
    let sort = match (key, descending) {
        (Some(key), d) => Some(Sort {
            key,
            descending: d.unwrap_or(key.default_descending()),
        }),
        (None, Some(_)) => return Err(bad("order", "needs sort")),
        (None, None) => None,
    };
    let mut page = Page::default();
    if let Some(v) = get("limit") {
        page.limit = number("limit", v, "a number")?;
        if page.limit > MAX_LIMIT {
            return Err(bad(
                "limit",
                format!("at most {MAX_LIMIT} connections a page"),
            ));
        }
    }
    if let Some(v) = get("offset") {
        page.offset = number("offset", v, "a number")?;
    }
    let format = match get("format") {
        None | Some("json") => Format::Json,
        Some("text") => Format::Text,
        Some("extended") => Format::Extended,
        Some("proc") => Format::Proc,
        Some(v) => {
            return Err(bad(
                "format",
                format!("`{v}` is not json, text, extended or proc"),
            ))
        }
    };
    Ok(ListQuery {
        filter,
        sort,
        page,
        format,
    })
}
