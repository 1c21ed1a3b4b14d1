//! Adversarial TCP: window checks, bad flags, unsolicited segments, window scaling,
//! mid-stream pickup, liberal mode.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

mod common;
use common::*;

fn established() -> (Sim, Flow) {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    f.handshake(&mut sim);
    (sim, f)
}

#[test]
fn out_of_window_rst_is_invalid_and_harmless() {
    let (mut sim, f) = established();
    let o = sim.eth(&f.seg(
        true,
        f.cseq.wrapping_add(10_000_000),
        f.sseq,
        RST | ACK,
        0,
        &[],
        &[],
    ));
    expect_invalid(&o, DropReason::TcpRstOutOfWindow);
    let o = sim.eth(&f.seg(
        false,
        f.sseq.wrapping_add(10_000_000),
        f.cseq,
        RST,
        0,
        &[],
        &[],
    ));
    expect_invalid(&o, DropReason::TcpRstOutOfWindow);
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
    assert_eq!(sim.only().timeout, 432_000);
}

#[test]
fn data_beyond_receiver_window() {
    let (mut sim, f) = established();
    // The server allowed cseq..cseq+65535 (unscaled).
    let o = sim.eth(&f.seg(
        true,
        f.cseq.wrapping_add(100_000),
        f.sseq,
        ACK,
        65535,
        &[],
        &[1; 10],
    ));
    expect_invalid(&o, DropReason::TcpSeqOverWindow);
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
}

#[test]
fn ack_for_unsent_data() {
    let (mut sim, f) = established();
    let o = sim.eth(&f.seg(
        true,
        f.cseq,
        f.sseq.wrapping_add(100_000),
        ACK,
        65535,
        &[],
        &[],
    ));
    expect_invalid(&o, DropReason::TcpAckOverWindow);
    let o = sim.eth(&f.seg(
        false,
        f.sseq,
        f.cseq.wrapping_add(100_000),
        ACK,
        65535,
        &[],
        &[],
    ));
    expect_invalid(&o, DropReason::TcpAckOverWindow);
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
}

#[test]
fn impossible_flag_combinations() {
    let cases: [(&str, u8); 5] = [
        ("SYN+FIN", SYN | FIN),
        ("NULL", 0),
        ("Xmas", FIN | PSH | URG),
        ("SYN+RST", SYN | RST),
        ("FIN without ACK", FIN),
    ];
    for (name, flags) in cases {
        // As the first packet: no entry.
        let mut sim = Sim::new();
        let f = Flow::v4();
        let o = sim.eth(&f.seg(true, f.cseq, 0, flags, 65535, &[], &[]));
        assert_eq!(
            (o.state, o.reason),
            (CtState::Invalid, Some(DropReason::TcpBadFlags)),
            "{name}: {o:?}"
        );
        assert_eq!(sim.conns().len(), 0, "{name} must not create an entry");
        // Inside an established connection: invalid, connection untouched.
        let (mut sim, f) = established();
        let o = sim.eth(&f.seg(true, f.cseq, f.sseq, flags, 65535, &[], &[]));
        assert_eq!(
            (o.state, o.reason),
            (CtState::Invalid, Some(DropReason::TcpBadFlags)),
            "{name} in ESTABLISHED: {o:?}"
        );
        assert_eq!(sim.tcp_state(), Some(TcpState::Established), "{name}");
    }
}

#[test]
fn valid_flag_combinations_with_ignored_bits() {
    // SYN|URG, SYN with ECE|CWR (ECN setup), ACK|PSH|URG are all valid.
    let mut sim = Sim::new();
    let f = Flow::v4();
    let o = sim.eth(&f.seg(true, f.cseq, 0, SYN | URG, 65535, &[], &[]));
    expect_new(&o);
}

#[test]
fn unsolicited_syn_ack_fin_rst_create_nothing() {
    for (name, flags) in [
        ("SYN/ACK", SYN | ACK),
        ("FIN/ACK", FIN | ACK),
        ("RST", RST),
        ("RST/ACK", RST | ACK),
    ] {
        let mut sim = Sim::new();
        let f = Flow::v4();
        let o = sim.eth(&f.seg(false, f.sseq, f.cseq + 1, flags, 65535, &[], &[]));
        expect_invalid(&o, DropReason::TcpNotSyn);
        assert_eq!(sim.conns().len(), 0, "{name} must not create an entry");
        assert_eq!(sim.engine.stats().created, 0);
    }
}

/// Handshake where the client offers `c_ws` and the server `s_ws`; the SYN/ACK and the
/// server's later ACK advertise a window field of 1000.
fn scaled(c_ws: Option<u8>, s_ws: Option<u8>) -> (Sim, Flow) {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    let copts: Vec<_> = c_ws
        .map(TcpOptionElement::WindowScale)
        .into_iter()
        .collect();
    let sopts: Vec<_> = s_ws
        .map(TcpOptionElement::WindowScale)
        .into_iter()
        .collect();
    expect_new(&f.c_opts(&mut sim, SYN, &copts, &[]));
    f.swin = 1000;
    expect_est_reply(&f.s_opts(&mut sim, SYN | ACK, &sopts, &[]));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    // The server's first non-SYN segment: window 1000, scaled if both sides agreed.
    expect_est_reply(&f.s(&mut sim, ACK, &[]));
    (sim, f)
}

#[test]
fn window_scale_both_sides_edge() {
    let edge = 1000u32 << 7;
    let (mut sim, f) = scaled(Some(7), Some(7));
    let o = sim.eth(&f.seg(true, f.cseq.wrapping_add(edge), f.sseq, ACK, 1000, &[], &[]));
    expect_est_orig(&o);
    let (mut sim, f) = scaled(Some(7), Some(7));
    let o = sim.eth(&f.seg(
        true,
        f.cseq.wrapping_add(edge + 1),
        f.sseq,
        ACK,
        1000,
        &[],
        &[],
    ));
    expect_invalid(&o, DropReason::TcpSeqOverWindow);
    // Data that fits the scaled window (well past the unscaled 1000) passes.
    let (mut sim, f) = scaled(Some(7), Some(7));
    let o = sim.eth(&f.seg(
        true,
        f.cseq.wrapping_add(50_000),
        f.sseq,
        ACK,
        1000,
        &[],
        &[7; 100],
    ));
    expect_est_orig(&o);
}

#[test]
fn window_scale_one_side_only_is_unscaled() {
    for (c, s) in [(Some(7), None), (None, Some(7))] {
        let (mut sim, f) = scaled(c, s);
        let o = sim.eth(&f.seg(true, f.cseq.wrapping_add(1000), f.sseq, ACK, 1000, &[], &[]));
        expect_est_orig(&o);
        let (mut sim, f) = scaled(c, s);
        let o = sim.eth(&f.seg(true, f.cseq.wrapping_add(1001), f.sseq, ACK, 1000, &[], &[]));
        expect_invalid(&o, DropReason::TcpSeqOverWindow);
    }
}

#[test]
fn window_scale_capped_at_14() {
    // Scale 15 offered by both: treated as 14.
    let (mut sim, f) = scaled(Some(15), Some(15));
    let edge = 1000u32 << 14;
    let o = sim.eth(&f.seg(true, f.cseq.wrapping_add(edge), f.sseq, ACK, 1000, &[], &[]));
    expect_est_orig(&o);
    let (mut sim, f) = scaled(Some(15), Some(15));
    let o = sim.eth(&f.seg(
        true,
        f.cseq.wrapping_add(edge + 1),
        f.sseq,
        ACK,
        1000,
        &[],
        &[],
    ));
    expect_invalid(&o, DropReason::TcpSeqOverWindow);
}

#[test]
fn midstream_pickup_loose() {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    let o = f.c(&mut sim, ACK | PSH, &[1; 50]);
    expect_new(&o);
    let c = sim.only();
    assert_eq!(c.tcp_state, Some(TcpState::Established));
    assert!(!c.seen_reply);
    assert_eq!(c.timeout, 300);
    // Another original packet before any reply: still new.
    expect_new(&f.c(&mut sim, ACK, &[2; 50]));
    expect_est_reply(&f.s(&mut sim, ACK, &[]));
    assert!(sim.only().seen_reply);
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
}

#[test]
fn midstream_pickup_off() {
    let mut sim = Sim::with(Config {
        tcp_loose: false,
        ..Config::default()
    });
    let mut f = Flow::v4();
    let o = f.c(&mut sim, ACK, &[1; 50]);
    expect_invalid(&o, DropReason::TcpNotSyn);
    assert_eq!(sim.conns().len(), 0);
    // A normal handshake still works.
    let mut sim = Sim::with(Config {
        tcp_loose: false,
        ..Config::default()
    });
    let mut f = Flow::v4();
    f.handshake(&mut sim);
}

#[test]
fn liberal_mode_accepts_out_of_window_data() {
    let mut sim = Sim::with(Config {
        tcp_liberal: true,
        ..Config::default()
    });
    let mut f = Flow::v4();
    f.handshake(&mut sim);
    let o = sim.eth(&f.seg(
        true,
        f.cseq.wrapping_add(1_000_000),
        f.sseq,
        ACK,
        65535,
        &[],
        &[1; 10],
    ));
    expect_est_orig(&o);
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
}

#[test]
fn in_window_retransmission_passes() {
    let (mut sim, mut f) = established();
    let start = f.cseq;
    expect_est_orig(&f.c(&mut sim, ACK | PSH, &[1; 100]));
    // Retransmit the same segment.
    expect_est_orig(&sim.eth(&f.seg(true, start, f.sseq, ACK | PSH, 65535, &[], &[1; 100])));
    expect_est_reply(&f.s(&mut sim, ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
}

#[test]
fn sack_block_counts_as_ack() {
    // The highest SACK block counts as the ack: a SACK edge beyond what was sent is invalid.
    // SACK is only read when both SYNs offered SACK-permitted.
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    let sp = [TcpOptionElement::SelectiveAcknowledgementPermitted];
    expect_new(&f.c_opts(&mut sim, SYN, &sp, &[]));
    expect_est_reply(&f.s_opts(&mut sim, SYN | ACK, &sp, &[]));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    expect_est_orig(&f.c(&mut sim, ACK | PSH, &[1; 100]));
    let opts = [
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::SelectiveAcknowledgement((f.cseq - 50, f.cseq), [None, None, None]),
    ];
    let o = sim.eth(&f.seg(false, f.sseq, f.cseq - 100, ACK, 65535, &opts, &[]));
    expect_est_reply(&o);
    let opts = [
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::SelectiveAcknowledgement(
            (f.cseq + 100_000, f.cseq + 100_050),
            [None, None, None],
        ),
    ];
    let o = sim.eth(&f.seg(false, f.sseq, f.cseq - 100, ACK, 65535, &opts, &[]));
    expect_invalid(&o, DropReason::TcpAckOverWindow);
}
