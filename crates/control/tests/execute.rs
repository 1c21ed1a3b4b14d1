//! `execute` over a router fed with etherparse-built frames: listings against a recording of
//! conntrack-tools, filters, sorting, paging, deletion and flush.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use keepstate_control::{
    execute, parse_filter, parse_list, ApiError, Command, Filter, Page, Prefix, Response, Sort,
    SortKey,
};
use keepstate_engine::listing::{conntrack_line, extended_line};
use keepstate_engine::{Conn, L4Tuple, TcpState};

fn list(rig: &mut Rig, filter: Filter, sort: Option<Sort>, page: Page) -> (usize, Vec<Conn>) {
    match execute(&mut rig.r, rig.now, Command::List { filter, sort, page }).unwrap() {
        Response::List { total, items, .. } => (total, items),
        other => panic!("{other:?}"),
    }
}

fn all(rig: &mut Rig, filter: Filter) -> Vec<Conn> {
    let (total, items) = list(
        rig,
        filter,
        None,
        Page {
            offset: 0,
            limit: 10_000,
        },
    );
    assert_eq!(total, items.len());
    items
}

fn count(rig: &mut Rig, filter: Filter) -> usize {
    match execute(&mut rig.r, rig.now, Command::Count { filter }).unwrap() {
        Response::Count { count } => count,
        other => panic!("{other:?}"),
    }
}

fn lines(conns: &[Conn], f: fn(&Conn) -> String) -> String {
    conns.iter().map(|c| f(c) + "\n").collect()
}

#[test]
fn listing_matches_conntrack_tools_byte_for_byte() {
    let mut rig = rig(false);
    rig.recorded();
    let items = all(&mut rig, Filter::default());
    assert_eq!(lines(&items, conntrack_line), RECORDED_L);
    assert_eq!(lines(&items, extended_line), RECORDED_EXTENDED);
    let f = parse_filter("proto=tcp&dport=80").unwrap();
    assert_eq!(lines(&all(&mut rig, f), conntrack_line), RECORDED_TCP_80);
}

/// A LAN host with many UDP flows of different sizes, and a few TCP connections.
fn busy() -> Rig {
    let mut rig = rig(false);
    for i in 0..40u16 {
        let src = if i % 2 == 0 { HOST } else { HOST2 };
        let dst = if i % 4 < 2 { REMOTE } else { REMOTE2 };
        rig.udp(src, 20_000 + i, dst, 53, &vec![0; usize::from(i)]);
        rig.now = keepstate_engine::Time::from_nanos(rig.now.as_nanos() + 500_000_000);
    }
    rig.tcp_handshake(HOST, 41_000, REMOTE, 443, (HOST, 41_000));
    rig.tcp_handshake(HOST2, 41_001, REMOTE2, 22, (HOST2, 41_001));
    rig
}

#[test]
fn filters() {
    let mut rig = busy();
    let q = |s: &str| parse_filter(s).unwrap();
    assert_eq!(count(&mut rig, Filter::default()), 42);
    assert_eq!(count(&mut rig, q("proto=udp")), 40);
    assert_eq!(count(&mut rig, q("proto=6")), 2);
    assert_eq!(count(&mut rig, q("src=192.168.1.23")), 21);
    assert_eq!(count(&mut rig, q("src=192.168.1.0%2F24")), 42);
    assert_eq!(count(&mut rig, q("src=10.0.0.0/8")), 0);
    assert_eq!(count(&mut rig, q("dst=198.51.100.20&proto=udp")), 20);
    // The reply direction: replies come from the remote end to the host.
    assert_eq!(count(&mut rig, q("reply_src=198.51.100.10")), 21);
    assert_eq!(count(&mut rig, q("reply_dst=192.168.1.24")), 21);
    assert_eq!(count(&mut rig, q("addr=198.51.100.0/24")), 42);
    assert_eq!(count(&mut rig, q("addr=198.51.100.20")), 21);
    assert_eq!(count(&mut rig, q("sport=20005")), 1);
    assert_eq!(count(&mut rig, q("dport=53")), 40);
    assert_eq!(count(&mut rig, q("dport=443&proto=tcp")), 1);
    assert_eq!(count(&mut rig, q("state=ESTABLISHED")), 2);
    assert_eq!(count(&mut rig, q("state=established&dport=22")), 1);
    assert_eq!(count(&mut rig, q("state=TIME_WAIT")), 0);
    assert_eq!(count(&mut rig, q("family=ipv4")), 42);
    assert_eq!(count(&mut rig, q("family=ipv6")), 0);
    // No zones but 0 and no marks but 0.
    assert_eq!(count(&mut rig, q("zone=0")), 42);
    assert_eq!(count(&mut rig, q("zone=1")), 0);
    assert_eq!(count(&mut rig, q("mark=0")), 42);
    assert_eq!(count(&mut rig, q("mark=7")), 0);
    for c in all(&mut rig, q("state=ESTABLISHED")) {
        assert_eq!(c.tcp_state, Some(TcpState::Established));
    }
}

#[test]
fn bad_filters_name_the_parameter() {
    for (query, name) in [
        ("proto=nope", "proto"),
        ("src=1.2.3.4/33", "src"),
        ("dst=banana", "dst"),
        ("sport=70000", "sport"),
        ("state=OPEN", "state"),
        ("colour=red", "colour"),
        ("zone=-1", "zone"),
        ("proto=tcp&proto=udp", "proto"),
        ("src=%zz", "src"),
    ] {
        let e: ApiError = parse_filter(query).unwrap_err();
        assert_eq!(e.status, 400, "{query}");
        assert!(
            e.message.starts_with(&format!("{name}:")),
            "{query}: {}",
            e.message
        );
    }
    for (query, name) in [
        ("sort=colour", "sort"),
        ("order=up&sort=bytes", "order"),
        ("order=asc", "order"),
        ("limit=10001", "limit"),
        ("limit=x", "limit"),
        ("offset=-3", "offset"),
        ("format=xml", "format"),
    ] {
        let e = parse_list(query).unwrap_err();
        assert_eq!(e.status, 400, "{query}");
        assert!(
            e.message.starts_with(&format!("{name}:")),
            "{query}: {}",
            e.message
        );
    }
}

#[test]
fn sorted_pages_cover_the_table_once() {
    let mut rig = busy();
    let sort = Some(Sort {
        key: SortKey::Bytes,
        descending: true,
    });
    let mut seen = Vec::new();
    for p in 0..5 {
        let (total, items) = list(
            &mut rig,
            Filter::default(),
            sort,
            Page {
                offset: p * 10,
                limit: 10,
            },
        );
        assert_eq!(total, 42);
        assert_eq!(items.len(), if p < 4 { 10 } else { 2 });
        seen.extend(items);
    }
    let bytes: Vec<u64> = seen.iter().map(|c| c.bytes[0] + c.bytes[1]).collect();
    assert!(bytes.windows(2).all(|w| w[0] >= w[1]), "{bytes:?}");
    // Every connection exactly once.
    let mut keys: Vec<String> = seen.iter().map(conntrack_line).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 42);
    // The biggest: a TCP handshake (172 bytes) beats the largest datagram (28 + 39).
    assert_eq!(seen[0].proto, 6);

    // Timeout ascending: the oldest UDP flow, closest to expiry, first.
    let (_, items) = list(
        &mut rig,
        parse_filter("proto=udp").unwrap(),
        Some(Sort {
            key: SortKey::Timeout,
            descending: false,
        }),
        Page {
            offset: 0,
            limit: 3,
        },
    );
    let t: Vec<u32> = items.iter().map(|c| c.timeout).collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "{t:?}");
    assert_eq!(
        items[0].original.l4,
        L4Tuple::Ports {
            sport: 20_000,
            dport: 53
        },
        "the oldest flow expires first"
    );

    // Source ascending, with the query parser.
    let l = parse_list("sort=src&limit=50").unwrap();
    let (_, items) = list(&mut rig, l.filter, l.sort, l.page);
    let srcs: Vec<_> = items.iter().map(|c| c.original.src).collect();
    assert!(srcs.windows(2).all(|w| w[0] <= w[1]));

    // Unsorted pages follow table order and still cover it once.
    let (t1, a) = list(
        &mut rig,
        Filter::default(),
        None,
        Page {
            offset: 0,
            limit: 20,
        },
    );
    let (t2, b) = list(
        &mut rig,
        Filter::default(),
        None,
        Page {
            offset: 20,
            limit: 20,
        },
    );
    let (_, c) = list(
        &mut rig,
        Filter::default(),
        None,
        Page {
            offset: 40,
            limit: 20,
        },
    );
    assert_eq!(t1, t2);
    let mut keys: Vec<String> = a.iter().chain(&b).chain(&c).map(conntrack_line).collect();
    assert_eq!(keys.len(), t1);
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), t1);
    // A page past the end is empty, not an error.
    let (t, items) = list(
        &mut rig,
        Filter::default(),
        sort,
        Page {
            offset: 1000,
            limit: 5,
        },
    );
    assert_eq!((t, items.len()), (t1, 0));
}

#[test]
fn delete_removes_the_connection_and_its_next_packet_is_new() {
    let mut rig = rig(true);
    rig.tcp_handshake(HOST, 40_000, REMOTE, 80, (ROUTER_WAN, 40_000));
    rig.udp(HOST, 40_001, REMOTE, 53, b"hello");
    rig.udp(HOST2, 40_002, REMOTE, 53, b"hello");
    assert_eq!(count(&mut rig, Filter::default()), 3);
    let stats = |rig: &mut Rig| match execute(&mut rig.r, rig.now, Command::Stats).unwrap() {
        Response::Stats(s) => s,
        other => panic!("{other:?}"),
    };
    let s = stats(&mut rig);
    assert_eq!(s.nat_connections, 3);
    assert_eq!(s.nat_ports_in_use, 3);

    // An empty filter deletes nothing: flushing is asked for by name.
    let e = execute(
        &mut rig.r,
        rig.now,
        Command::Delete {
            filter: Filter::default(),
        },
    )
    .unwrap_err();
    assert_eq!(e.status, 400);
    assert_eq!(count(&mut rig, Filter::default()), 3);

    let filter = parse_filter("proto=tcp&src=192.168.1.23").unwrap();
    let r = execute(&mut rig.r, rig.now, Command::Delete { filter }).unwrap();
    let Response::Deleted { count: n, items } = r else {
        panic!("{r:?}")
    };
    assert_eq!(n, 1);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].tcp_state, Some(TcpState::Established));
    assert_eq!(count(&mut rig, parse_filter("proto=tcp").unwrap()), 0);
    let s = stats(&mut rig);
    assert_eq!(s.engine.removed, 1);
    assert_eq!(s.nat_connections, 2);

    // The next packet of the deleted connection opens a new entry (picked up mid-stream):
    // unreplied, unassured, none of the old counters.
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(HOST_MAC, LAN_MAC)
        .ipv4(HOST, REMOTE, 64)
        .tcp(40_000, 80, 1001, 502)
        .ack(5001)
        .write(&mut f, b"GET /")
        .unwrap();
    // (Queued for the gateway's address, which nobody resolved: judged all the same.)
    rig.send(LAN, f);
    let tcp = all(&mut rig, parse_filter("proto=tcp").unwrap());
    assert_eq!(tcp.len(), 1);
    assert_eq!(tcp[0].packets, [1, 0]);
    assert!(!tcp[0].seen_reply && !tcp[0].assured, "{:?}", tcp[0]);

    // Flush empties the table.
    let r = execute(&mut rig.r, rig.now, Command::Flush).unwrap();
    assert!(matches!(r, Response::Flushed { count: 3 }), "{r:?}");
    assert_eq!(count(&mut rig, Filter::default()), 0);
    let s = stats(&mut rig);
    assert_eq!(s.nat_connections, 0);
    assert_eq!(s.nat_ports_in_use, 0);
    assert_eq!(s.engine.removed, 4);
    rig.r.firewall().engine().check_table().unwrap();
}

#[test]
fn status_and_stats() {
    let mut rig = busy();
    let r = execute(&mut rig.r, rig.now, Command::Status).unwrap();
    let Response::Status(s) = r else {
        panic!("{r:?}")
    };
    assert_eq!(s.connections, 42);
    assert_eq!(s.interfaces, vec!["lan0".to_string(), "wan0".to_string()]);
    assert!(s.packets >= 46);
    let r = execute(&mut rig.r, rig.now, Command::Stats).unwrap();
    let Response::Stats(st) = r else {
        panic!("{r:?}")
    };
    assert_eq!(st.by_proto_state.get(&("tcp", "ESTABLISHED")), Some(&2));
    assert_eq!(st.by_proto_state.get(&("udp", "UNREPLIED")), Some(&40));
    assert_eq!(st.connections, 42);
    assert!(st.firewall.accepted_bytes > 0);
    let text = keepstate_control::metrics::render(&st, 5);
    assert!(text.contains("keepstate_connections{proto=\"tcp\",state=\"ESTABLISHED\"} 2\n"));
    assert!(text.contains("# TYPE keepstate_packets_total counter\n"));
    assert!(text.contains("keepstate_uptime_seconds 5\n"));
}

#[test]
fn prefixes() {
    let p = Prefix::parse("10.1.0.0/16").unwrap();
    assert!(p.contains("10.1.200.3".parse().unwrap()));
    assert!(!p.contains("10.2.0.1".parse().unwrap()));
    assert!(!p.contains("::1".parse().unwrap()));
    assert!(Prefix::parse("0.0.0.0/0")
        .unwrap()
        .contains("1.2.3.4".parse().unwrap()));
    let p = Prefix::parse("2001:db8::/32").unwrap();
    assert!(p.contains("2001:db8:ffff::1".parse().unwrap()));
    assert!(!p.contains("2001:db9::1".parse().unwrap()));
    assert!(Prefix::parse("::/129").is_err());
}
