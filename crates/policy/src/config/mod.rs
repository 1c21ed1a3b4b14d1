//! The TOML configuration file: parsing it into a [`Policy`] with compiler-style messages.
//!
//! The format follows OpenWrt fw4 (`config defaults`, `zone`, `forwarding`, `rule`,
//! `redirect`), written as TOML tables; `examples/home-router.toml` explains every section.
//!
//! ```toml
//! [defaults]                      # drop_invalid, accept_established, reject_limit,
//!                                 # log_limit, nat_ports, input/output/forward for zones
//! [tracking]                      # max_connections, reserve_connections, tcp_loose,
//!                                 # tcp_liberal, verify_checksums, adaptive_start/end
//! [tracking.timeouts]             # seconds, named as keepstate_engine::Timeouts' fields
//! [[interface]]                   # name, zone, address, routes, default_route, gateway,
//!                                 # ifindex, mac
//! [[zone]]                        # name, input, output, forward, masquerade, mapping
//! [[forwarding]]                  # src, dest
//! [[set]]                         # name, prefixes, file
//! [[rule]]                        # see below
//! [[notrack]]                     # like a rule, but only what is known before tracking
//! [[port_forward]]                # name, src, proto, external_ip, external_port,
//!                                 # internal_ip, internal_port, src_ip, reflection
//! [[snat]]                        # name, dest, src_ip, to (an address or a pool)
//! [[one_to_one]]                  # name, zone, internal_ip, external_ip
//! ```
//!
//! A rule has `src` and/or `dest` (a zone name or `"*"`; leaving `dest` out means traffic to
//! the firewall itself, leaving `src` out traffic from it), and optionally `in_iface`,
//! `out_iface`, `family`, `proto`, `src_ip`, `dest_ip`, `src_port`, `dest_port`,
//! `icmp_type`, `tcp_flags`, `ct_state`, `ct_direction`, then `action`, `reject_with`, `log`,
//! `limit` and `limit_per`. Fields that take a list also take a single value.
//!
//! Addresses are prefixes, bare addresses or `@set`; a leading `!` on every item of a list
//! negates the whole list (`["!10.0.0.0/8", "!@blocklist"]` matches addresses in neither).
//! A rule whose addresses are all of one family matches only that family, as in fw4.
//!
//! Every message names the file, line and column (1-based, counted in characters). All
//! problems found are reported together; a policy is returned only when there are none.

use core::fmt;
use std::path::Path;

use crate::model::{Policy, Span};

mod build;
mod describe;
mod shadow;
mod values;

pub use describe::{describe_limit, describe_match, describe_zone};

/// How bad a [`Diagnostic`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    Error,
    Warning,
}

/// One message about the configuration, at a place in a file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    /// The configuration file or, for a set's prefix file, that file.
    pub file: String,
    /// 1-based; 0 when the message concerns the whole file (it cannot be read).
    pub line: u32,
    /// 1-based, in characters.
    pub col: u32,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.line == 0 {
            write!(f, "{}: {sev}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {sev}: {}",
                self.file, self.line, self.col, self.message
            )
        }
    }
}

/// Everything wrong with a configuration, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Errors(pub Vec<Diagnostic>);

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

/// A configuration that has no errors, and what is suspicious about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub warnings: Vec<Diagnostic>,
}

/// Reads and parses a configuration file; set files are found relative to its directory.
pub fn load(path: &Path) -> Result<Loaded, Errors> {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(Errors(vec![Diagnostic {
                file: name,
                line: 0,
                col: 0,
                severity: Severity::Error,
                message: format!("cannot read the configuration: {e}"),
            }]))
        }
    };
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parse(&name, &text, Some(base))
}

/// Parses configuration text. `file_name` is used in messages; `base_dir` is where set files
/// (`file = "..."`) are looked up, and without it a set file is an error (so parsing text
/// never touches the file system).
pub fn parse(file_name: &str, text: &str, base_dir: Option<&Path>) -> Result<Loaded, Errors> {
    let mut cx = Cx::new(file_name, text, base_dir);
    let policy = build::document(&mut cx);
    if let Some(policy) = &policy {
        if cx.errors.is_empty() {
            shadow::warn_shadowed(&mut cx, policy);
        }
    }
    let (errors, warnings) = cx.finish();
    match policy {
        Some(policy) if errors.is_empty() => Ok(Loaded { policy, warnings }),
        _ => Err(Errors(errors)),
    }
}

/// Byte offsets to lines and character columns.
struct Source<'a> {
    name: String,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    fn new(name: &str, text: &'a str) -> Source<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source {
            name: name.to_string(),
            text,
            line_starts,
        }
    }

    fn span(&self, offset: usize) -> Span {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let col = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count());
        Span {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            col: u32::try_from(col + 1).unwrap_or(u32::MAX),
        }
    }
}

/// What the conversion carries along: the source for positions and the messages so far.
pub(crate) struct Cx<'a> {
    src: Source<'a>,
    base_dir: Option<&'a Path>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl<'a> Cx<'a> {
    fn new(name: &str, text: &'a str, base_dir: Option<&'a Path>) -> Cx<'a> {
        Cx {
            src: Source::new(name, text),
            base_dir,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn span(&self, offset: usize) -> Span {
        self.src.span(offset)
    }

    fn diag(&self, severity: Severity, span: Span, message: String) -> Diagnostic {
        Diagnostic {
            file: self.src.name.clone(),
            line: span.line,
            col: span.col,
            severity,
            message,
        }
    }

    fn error(&mut self, offset: usize, message: impl Into<String>) {
        let d = self.diag(Severity::Error, self.span(offset), message.into());
        self.errors.push(d);
    }

    fn warn(&mut self, offset: usize, message: impl Into<String>) {
        let d = self.diag(Severity::Warning, self.span(offset), message.into());
        self.warnings.push(d);
    }

    fn warn_at(&mut self, span: Span, message: impl Into<String>) {
        let d = self.diag(Severity::Warning, span, message.into());
        self.warnings.push(d);
    }

    /// The source text a value was written as.
    fn raw(&self, range: core::ops::Range<usize>) -> &'a str {
        self.src.text.get(range).unwrap_or("")
    }

    /// Where byte `at` of a string value's content is in the file: exact when the string is
    /// written without escapes, else the start of the value.
    fn offset_in_string(&self, range: core::ops::Range<usize>, content: &str, at: usize) -> usize {
        let raw = self.raw(range.clone());
        let quote = raw.chars().next();
        if matches!(quote, Some('"' | '\''))
            && raw.get(1..raw.len().saturating_sub(1)) == Some(content)
        {
            range.start + 1 + at.min(content.len())
        } else {
            range.start
        }
    }

    fn finish(mut self) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
        let main = self.src.name.clone();
        for list in [&mut self.errors, &mut self.warnings] {
            list.sort_by(|a, b| {
                (a.file != main, &a.file, a.line, a.col).cmp(&(
                    b.file != main,
                    &b.file,
                    b.line,
                    b.col,
                ))
            });
            list.dedup();
        }
        (self.errors, self.warnings)
    }
}
