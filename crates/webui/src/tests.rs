#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn text(a: Asset) -> &'static str {
    core::str::from_utf8(a.body).expect("assets are UTF-8")
}

#[test]
fn root_and_index_are_the_same_html_page() {
    let root = asset("/").unwrap();
    let index = asset("/index.html").unwrap();
    assert_eq!(root, index);
    assert_eq!(root.content_type, "text/html; charset=utf-8");
    assert!(text(root).starts_with("<!doctype html>"));
}

#[test]
fn content_types_follow_the_kind_of_file() {
    assert_eq!(
        asset("/app.css").unwrap().content_type,
        "text/css; charset=utf-8"
    );
    assert_eq!(
        asset("/app.js").unwrap().content_type,
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        asset("/fmt.js").unwrap().content_type,
        "text/javascript; charset=utf-8"
    );
    assert_eq!(asset("/favicon.svg").unwrap().content_type, "image/svg+xml");
}

#[test]
fn query_strings_and_fragments_are_ignored() {
    assert_eq!(asset("/app.js?v=2"), asset("/app.js"));
    assert_eq!(asset("/?x#/connections"), asset("/index.html"));
}

#[test]
fn anything_else_is_not_an_asset() {
    for p in [
        "",
        "index.html",
        "/index.htm",
        "/APP.JS",
        "/app.js/",
        "/assets/app.js",
        "/../Cargo.toml",
        "/src/lib.rs",
        "/api/v1/stats",
        "/metrics",
        "//app.js",
        "/app.js%00",
    ] {
        assert_eq!(asset(p), None, "{p:?}");
    }
}

#[test]
fn every_asset_is_non_empty_and_listed_once() {
    let all: Vec<&str> = paths().collect();
    assert!(all.len() >= 4);
    for (i, p) in all.iter().enumerate() {
        assert!(p.starts_with('/'));
        assert!(!all[i + 1..].contains(p), "{p} listed twice");
        let a = asset(p).unwrap();
        assert!(!a.body.is_empty(), "{p} is empty");
        assert!(core::str::from_utf8(a.body).is_ok(), "{p} is not UTF-8");
    }
}

#[test]
fn the_page_loads_its_script_and_style_from_this_origin() {
    let html = text(asset("/").unwrap());
    assert!(html.contains(r#"<script type="module" src="/app.js"></script>"#));
    assert!(html.contains(r#"<link rel="stylesheet" href="/app.css">"#));
    assert!(html.contains(r#"href="/favicon.svg""#));
    // The module imports its helpers by a path that is served.
    let js = text(asset("/app.js").unwrap());
    assert!(js.contains(r#"from "./fmt.js""#));
    // Every page the navigation links to has its section.
    for page in ["dashboard", "connections", "firewall", "logs"] {
        assert!(
            html.contains(&format!(r##"href="#/{page}""##)),
            "{page} link"
        );
        assert!(
            html.contains(&format!(r#"id="page-{page}""#)),
            "{page} section"
        );
    }
}

/// Assets reach nothing outside the origin: no absolute URLs but the SVG namespace name
/// (an identifier, never fetched), no protocol-relative ones, no @import.
#[test]
fn no_asset_refers_to_another_host() {
    for p in paths() {
        let body = text(asset(p).unwrap()).replace("http://www.w3.org/2000/svg", "");
        for bad in [
            "http://",
            "https://",
            "src=\"//",
            "href=\"//",
            "url(//",
            "@import",
        ] {
            assert!(!body.contains(bad), "{p} contains {bad}");
        }
    }
}

/// The CSP forbids inline script and style, which only holds if the page has none.
#[test]
fn the_page_has_no_inline_script_style_or_handlers() {
    let html = text(asset("/").unwrap());
    assert!(!html.contains("<style"));
    assert!(!html.contains(" style=\""));
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script type=\"module\" src=\"/").count()
    );
    assert!(!html.contains(" onclick="));
    assert!(!html.contains(" onload="));
    assert!(!html.contains("javascript:"));
}

/// Data from the API must never be parsed as markup.
#[test]
fn the_scripts_never_write_markup() {
    for p in ["/app.js", "/fmt.js"] {
        let js = text(asset(p).unwrap());
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!js.contains(bad), "{p} uses {bad}");
        }
    }
}

#[test]
fn the_csp_allows_only_this_origin() {
    let directives: Vec<&str> = CSP.split(';').map(str::trim).collect();
    for d in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(directives.contains(&d), "missing {d}");
    }
    assert!(!CSP.contains("unsafe"));
    assert!(!CSP.contains('*'));
    assert!(!CSP.contains("http"));
    // A header value: one line.
    assert!(!CSP.contains('\n') && !CSP.contains('\r'));
    assert!(HEADERS.contains(&("Content-Security-Policy", CSP)));
}
