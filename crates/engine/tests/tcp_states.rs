//! TCP state machine: handshake, data, both close orders, simultaneous open, RST in every
//! state, TIME_WAIT/CLOSE reopen, retransmitted SYN, RST with data in flight, ignored-SYN resync.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

mod common;
use common::*;

fn timeout(sim: &Sim) -> u32 {
    sim.only().timeout
}

#[test]
fn handshake_each_step() {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    let o = f.c(&mut sim, SYN, &[]);
    expect_new(&o);
    let c = sim.only();
    assert_eq!(c.tcp_state, Some(TcpState::SynSent));
    assert_eq!(c.proto, 6);
    assert!(!c.seen_reply);
    assert_eq!(c.timeout, 120);
    assert_eq!(c.original.src, f.c);
    assert_eq!(c.original.dst, f.s);
    assert_eq!(
        c.original.l4,
        L4Tuple::Ports {
            sport: f.cp,
            dport: f.sp
        }
    );
    assert_eq!(c.reply.src, f.s);
    assert_eq!(
        c.reply.l4,
        L4Tuple::Ports {
            sport: f.sp,
            dport: f.cp
        }
    );

    expect_est_reply(&f.s(&mut sim, SYN | ACK, &[]));
    let c = sim.only();
    assert_eq!(c.tcp_state, Some(TcpState::SynRecv));
    assert!(c.seen_reply);
    assert_eq!(c.timeout, 60);

    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    let c = sim.only();
    assert_eq!(c.tcp_state, Some(TcpState::Established));
    assert_eq!(c.timeout, 432_000);
    assert_eq!(c.packets, [2, 1]);
}

#[test]
fn data_and_unacknowledged_cap() {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    f.handshake(&mut sim);
    expect_est_orig(&f.c(&mut sim, ACK | PSH, &[0x55; 100]));
    let c = sim.only();
    assert_eq!(c.tcp_state, Some(TcpState::Established));
    assert_eq!(c.timeout, 300, "unacknowledged data caps the timeout");
    expect_est_reply(&f.s(&mut sim, ACK, &[]));
    assert_eq!(timeout(&sim), 432_000);
    expect_est_reply(&f.s(&mut sim, ACK | PSH, &[0x66; 200]));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    let c = sim.only();
    assert_eq!(c.tcp_state, Some(TcpState::Established));
    assert_eq!(c.timeout, 432_000);
    assert!(c.assured);
}

#[test]
fn close_client_first() {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    f.handshake(&mut sim);
    expect_est_orig(&f.c(&mut sim, FIN | ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::FinWait));
    assert_eq!(timeout(&sim), 120);
    expect_est_reply(&f.s(&mut sim, ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::CloseWait));
    assert_eq!(timeout(&sim), 60);
    expect_est_reply(&f.s(&mut sim, FIN | ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::LastAck));
    assert_eq!(timeout(&sim), 30);
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::TimeWait));
    assert_eq!(timeout(&sim), 120);
}

#[test]
fn close_server_first() {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    f.handshake(&mut sim);
    expect_est_reply(&f.s(&mut sim, FIN | ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::FinWait));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::CloseWait));
    expect_est_orig(&f.c(&mut sim, FIN | ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::LastAck));
    expect_est_reply(&f.s(&mut sim, ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::TimeWait));
    assert_eq!(timeout(&sim), 120);
}

#[test]
fn simultaneous_close() {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    f.handshake(&mut sim);
    let c_fin = f.seg(true, f.cseq, f.sseq, FIN | ACK, f.cwin, &[], &[]);
    let s_fin = f.seg(false, f.sseq, f.cseq, FIN | ACK, f.swin, &[], &[]);
    f.cseq += 1;
    f.sseq += 1;
    expect_est_orig(&sim.eth(&c_fin));
    assert_eq!(sim.tcp_state(), Some(TcpState::FinWait));
    expect_est_reply(&sim.eth(&s_fin));
    assert_eq!(sim.tcp_state(), Some(TcpState::LastAck));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::TimeWait));
}

#[test]
fn simultaneous_open() {
    let mut sim = Sim::new();
    let f = Flow::v4();
    let (ci, si) = (f.cseq, f.sseq);
    expect_new(&sim.eth(&f.seg(true, ci, 0, SYN, 65535, &[], &[])));
    assert_eq!(sim.tcp_state(), Some(TcpState::SynSent));
    // The peer's own SYN crosses ours.
    expect_est_reply(&sim.eth(&f.seg(false, si, 0, SYN, 65535, &[], &[])));
    assert_eq!(sim.tcp_state(), Some(TcpState::SynSent2));
    // Each side answers with a SYN/ACK.
    expect_est_orig(&sim.eth(&f.seg(true, ci, si + 1, SYN | ACK, 65535, &[], &[])));
    assert_eq!(sim.tcp_state(), Some(TcpState::SynRecv));
    let o = sim.eth(&f.seg(false, si, ci + 1, SYN | ACK, 65535, &[], &[]));
    assert_eq!(o.verdict, Verdict::Accept);
    assert_eq!(
        sim.tcp_state(),
        Some(TcpState::SynRecv),
        "reply SYN/ACK in SYN_RECV is ignored"
    );
    expect_est_orig(&sim.eth(&f.seg(true, ci + 1, si + 1, ACK, 65535, &[], &[])));
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
}

/// Drives a fresh connection into `target` and returns it.
fn drive(target: TcpState) -> (Sim, Flow) {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    expect_new(&f.c(&mut sim, SYN, &[]));
    if target == TcpState::SynSent {
        return (sim, f);
    }
    f.s(&mut sim, SYN | ACK, &[]);
    if target == TcpState::SynRecv {
        return (sim, f);
    }
    f.c(&mut sim, ACK, &[]);
    if target == TcpState::Established {
        return (sim, f);
    }
    f.c(&mut sim, FIN | ACK, &[]);
    if target == TcpState::FinWait {
        return (sim, f);
    }
    f.s(&mut sim, ACK, &[]);
    if target == TcpState::CloseWait {
        return (sim, f);
    }
    f.s(&mut sim, FIN | ACK, &[]);
    if target == TcpState::LastAck {
        return (sim, f);
    }
    f.c(&mut sim, ACK, &[]);
    assert_eq!(target, TcpState::TimeWait);
    (sim, f)
}

#[test]
fn drive_reaches_each_state() {
    for st in [
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
    ] {
        let (sim, _) = drive(st);
        assert_eq!(sim.tcp_state(), Some(st), "{}", st.name());
    }
}

#[test]
fn client_rst_in_each_state_closes() {
    for st in [
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
    ] {
        let (mut sim, mut f) = drive(st);
        let o = f.c(&mut sim, RST | ACK, &[]);
        assert_eq!(o.state, CtState::Established, "RST in {}: {o:?}", st.name());
        assert_eq!(
            o.dir,
            Some(Direction::Original),
            "RST in {}: {o:?}",
            st.name()
        );
        let c = sim.only();
        assert_eq!(c.tcp_state, Some(TcpState::Close), "RST in {}", st.name());
        assert_eq!(c.timeout, 10, "RST in {}", st.name());
    }
}

#[test]
fn server_rst_in_each_state_closes() {
    for st in [
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
    ] {
        let (mut sim, mut f) = drive(st);
        let o = f.s(&mut sim, RST | ACK, &[]);
        assert_eq!(o.state, CtState::Established, "RST in {}: {o:?}", st.name());
        assert_eq!(o.dir, Some(Direction::Reply), "RST in {}: {o:?}", st.name());
        assert_eq!(
            sim.tcp_state(),
            Some(TcpState::Close),
            "RST in {}",
            st.name()
        );
    }
}

#[test]
fn rst_to_unreplied_syn_removes_entry() {
    let (mut sim, f) = drive(TcpState::SynSent);
    // Port closed: the server answers the SYN with RST|ACK, seq 0, ack ISN+1.
    let o = sim.eth(&f.seg(false, 0, f.cseq, RST | ACK, 0, &[], &[]));
    assert_ne!(o.state, CtState::Invalid, "{o:?}");
    assert_eq!(o.dir, Some(Direction::Reply), "{o:?}");
    assert_eq!(
        sim.conns().len(),
        0,
        "entry must be removed: {:?}",
        sim.conns()
    );
}

#[test]
fn client_rst_in_syn_sent_closes() {
    let (mut sim, mut f) = drive(TcpState::SynSent);
    let o = f.c(&mut sim, RST, &[]);
    assert_eq!(o.dir, Some(Direction::Original), "{o:?}");
    let left: Vec<_> = sim.conns().into_iter().filter(|c| c.timeout > 0).collect();
    for c in &left {
        assert_eq!(c.tcp_state, Some(TcpState::Close));
    }
}

#[test]
fn syn_in_time_wait_reopens() {
    let (mut sim, mut f) = drive(TcpState::TimeWait);
    sim.advance(1);
    f.cseq = f.cseq.wrapping_add(100_000);
    let o = f.c(&mut sim, SYN, &[]);
    expect_new(&o);
    let c = sim.only();
    assert_eq!(c.tcp_state, Some(TcpState::SynSent));
    assert!(!c.seen_reply);
    assert!(!c.assured);
    assert_eq!(c.timeout, 120);
    assert_eq!(c.packets, [1, 0], "fresh entry");
    f.sseq = f.sseq.wrapping_add(7_777);
    expect_est_reply(&f.s(&mut sim, SYN | ACK, &[]));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
}

#[test]
fn syn_in_close_reopens() {
    let (mut sim, mut f) = drive(TcpState::Established);
    f.c(&mut sim, RST | ACK, &[]);
    assert_eq!(sim.tcp_state(), Some(TcpState::Close));
    f.cseq = f.cseq.wrapping_add(100_000);
    expect_new(&f.c(&mut sim, SYN, &[]));
    let c = sim.only();
    assert_eq!(c.tcp_state, Some(TcpState::SynSent));
    assert!(!c.seen_reply);
}

#[test]
fn retransmitted_syn_stays_new() {
    let mut sim = Sim::new();
    let f = Flow::v4();
    let syn = f.seg(true, f.cseq, 0, SYN, 65535, &[], &[]);
    expect_new(&sim.eth(&syn));
    sim.advance(1);
    expect_new(&sim.eth(&syn));
    sim.advance(2);
    expect_new(&sim.eth(&syn));
    let c = sim.only();
    assert_eq!(c.tcp_state, Some(TcpState::SynSent));
    assert_eq!(c.packets, [3, 0]);
    assert_eq!(c.timeout, 120);
}

#[test]
fn original_packets_new_until_reply() {
    // netfilter: the SYN/ACK reply makes later original packets established.
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    expect_new(&f.c(&mut sim, SYN, &[]));
    expect_est_reply(&f.s(&mut sim, SYN | ACK, &[]));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
}

#[test]
fn syn_ack_in_syn_sent_from_original_is_invalid() {
    let (mut sim, f) = drive(TcpState::SynSent);
    let o = sim.eth(&f.seg(true, f.cseq, 1, SYN | ACK, 65535, &[], &[]));
    expect_invalid(&o, DropReason::TcpInvalidTransition);
    assert_eq!(sim.tcp_state(), Some(TcpState::SynSent));
}

#[test]
fn ipv6_handshake_and_close() {
    let mut sim = Sim::new();
    let mut f = Flow::v6();
    f.handshake(&mut sim);
    let c = sim.only();
    assert_eq!(c.family, Family::V6);
    expect_est_orig(&f.c(&mut sim, FIN | ACK, &[]));
    expect_est_reply(&f.s(&mut sim, FIN | ACK, &[]));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::TimeWait));
}

#[test]
fn rst_with_data_in_flight() {
    // The client has sent data the server has not acknowledged yet, so where the server
    // expects the next byte is not known exactly: a RST below the client's highest sequence
    // number keeps the state (with the close timeout), one at it closes the connection.
    let (mut sim, mut f) = drive(TcpState::Established);
    let acked = f.cseq;
    expect_est_orig(&f.c(&mut sim, ACK | PSH, &[7; 500]));
    expect_est_orig(&sim.eth(&f.seg(true, acked, f.sseq, RST | ACK, 0, &[], &[])));
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
    assert_eq!(timeout(&sim), 10);
    expect_est_orig(&sim.eth(&f.seg(true, f.cseq, f.sseq, RST | ACK, 0, &[], &[])));
    assert_eq!(sim.tcp_state(), Some(TcpState::Close));
}

#[test]
fn syn_ack_for_another_syn_does_not_resync() {
    let (mut sim, mut f) = drive(TcpState::Established);
    sim.advance(5);
    expect_est_orig(&sim.eth(&f.seg(true, 2_000_000_000, 0, SYN, 65535, &[], &[])));
    // It acknowledges one more than the ignored SYN's sequence number plus one.
    let o = sim.eth(&f.seg(
        false,
        3_000_000_000,
        2_000_000_002,
        SYN | ACK,
        65535,
        &[],
        &[],
    ));
    expect_est_reply(&o);
    let c = sim.only();
    assert_eq!(c.tcp_state, Some(TcpState::Established));
    assert_eq!(c.timeout, 432_000 - 5, "ignored: nothing changes");
    // The old connection carries on.
    expect_est_orig(&f.c(&mut sim, ACK | PSH, &[1; 10]));
    expect_est_reply(&f.s(&mut sim, ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
}

#[test]
fn resync_takes_the_ignored_syns_options() {
    let (mut sim, old) = drive(TcpState::Established);
    let mut f = Flow {
        cseq: 2_000_000_000,
        sseq: 3_000_000_000,
        ..old
    };
    expect_est_orig(&f.c_opts(&mut sim, SYN, &[TcpOptionElement::WindowScale(7)], &[]));
    expect_est_reply(&f.s_opts(
        &mut sim,
        SYN | ACK,
        &[TcpOptionElement::WindowScale(2)],
        &[],
    ));
    assert_eq!(sim.tcp_state(), Some(TcpState::SynRecv));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
    // The client's window is scaled by 2^7, as its SYN said: server data 1 MB ahead is in it.
    let o = sim.eth(&f.seg(
        false,
        f.sseq + 1_000_000,
        f.cseq,
        ACK,
        f.swin,
        &[],
        &[1; 10],
    ));
    expect_est_reply(&o);
}
