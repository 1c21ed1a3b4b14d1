//! keepstate's web interface: a dashboard, the live connection table, the firewall's rules
//! and recent drops, as static files built into the binary.
//!
//! The control API's server answers its non-API `GET`s with [`asset`]; the pages then talk
//! to the same origin's `/api/v1/...` endpoints, so nothing is ever fetched from anywhere
//! else at run time and [`CSP`] can forbid everything but `'self'`. The JavaScript is plain
//! ES modules with no build step: what is in `assets/` is exactly what the browser runs.

/// One built-in file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asset {
    /// The `Content-Type` header value to send it with.
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// `Content-Security-Policy` for every page and asset: only this origin's scripts, styles,
/// images and API, no inline script or style, no plugins, no framing, forms only to self.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// Headers the server should send with every asset (the CSP among them). The assets change
/// only with the binary, but a browser holding an old `app.js` against a new API is worse
/// than re-validating, hence `no-cache` rather than a long max-age.
pub const HEADERS: &[(&str, &str)] = &[
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-cache"),
];

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every asset by the path it is served at. `/` is the index page.
const ASSETS: &[(&str, Asset)] = &[
    (
        "/index.html",
        Asset {
            content_type: HTML,
            body: include_bytes!("../assets/index.html"),
        },
    ),
    (
        "/app.css",
        Asset {
            content_type: CSS,
            body: include_bytes!("../assets/app.css"),
        },
    ),
    (
        "/app.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../assets/app.js"),
        },
    ),
    (
        "/fmt.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../assets/fmt.js"),
        },
    ),
    (
        "/favicon.svg",
        Asset {
            content_type: SVG,
            body: include_bytes!("../assets/favicon.svg"),
        },
    ),
];

/// The asset served at `path` (the request target's path; a query string or fragment is
/// ignored), or `None` for anything that is not one, so the server can answer 404.
pub fn asset(path: &str) -> Option<Asset> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let path = if path == "/" { "/index.html" } else { path };
    ASSETS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|&(_, asset)| asset)
}

/// The paths [`asset`] answers for, `/` left out (it is `/index.html`).
pub fn paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|&(p, _)| p)
}

#[cfg(test)]
mod tests;
