//! With window scaling, data starting exactly at the scaled window's edge is accepted and one byte past it is invalid, in each direction.
use crate::common::*;

/// Handshake where the client offers scale 2 with window 1000 and the server scale 9 with
/// window 300, so a mix-up of the two sides' factors shows.
fn handshake() -> (Sim, Flow) {
    let mut sim = Sim::new();
    let mut f = Flow {
        cwin: 1000,
        swin: 300,
        ..Flow::v4()
    };
    let ws = |s| [TcpOptionElement::WindowScale(s)];
    expect_new(&f.c_opts(&mut sim, SYN, &ws(2), &[]));
    expect_est_reply(&f.s_opts(&mut sim, SYN | ACK, &ws(9), &[]));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    (sim, f)
}

/// Sends one data segment from the client (`client`) or server starting `offset` bytes
/// past the next expected sequence number, on a fresh copy of the connection `setup` makes.
fn probe(setup: impl Fn() -> (Sim, Flow), client: bool, offset: u32, len: usize) -> Outcome {
    let (mut sim, f) = setup();
    let (seq, ack, win) = if client {
        (f.cseq + offset, f.sseq, f.cwin)
    } else {
        (f.sseq + offset, f.cseq, f.swin)
    };
    sim.eth(&f.seg(client, seq, ack, ACK | PSH, win, &[], &vec![0x77; len]))
}

#[test]
fn scenario() {
    // Until the server sends a segment without SYN, the client may only fill the SYN/ACK's
    // window, which is never scaled (RFC 7323 2.2): 300 bytes.
    expect_est_orig(&probe(handshake, true, 200, 100));
    expect_est_orig(&probe(handshake, true, 300, 1));
    expect_invalid(
        &probe(handshake, true, 301, 1),
        DropReason::TcpSeqOverWindow,
    );
    // The client's ACK of the handshake carried window 1000, scaled by the client's factor:
    // the server may send 1000 << 2 bytes.
    let edge = 1000 << 2;
    expect_est_reply(&probe(handshake, false, edge - 100, 100));
    expect_est_reply(&probe(handshake, false, edge, 1));
    expect_invalid(
        &probe(handshake, false, edge + 1, 1),
        DropReason::TcpSeqOverWindow,
    );
    // Once the server sends a segment without SYN, its window 300 is scaled by its own
    // factor: the client may send 300 << 9 bytes.
    let scaled = || {
        let (mut sim, mut f) = handshake();
        expect_est_reply(&f.s(&mut sim, ACK, &[]));
        (sim, f)
    };
    let edge = 300 << 9;
    expect_est_orig(&probe(scaled, true, edge - 1000, 1000));
    expect_est_orig(&probe(scaled, true, edge, 1));
    expect_invalid(
        &probe(scaled, true, edge + 1, 1),
        DropReason::TcpSeqOverWindow,
    );
    // A zero-length ACK one byte past the edge is just as invalid.
    expect_invalid(
        &probe(scaled, true, edge + 1, 0),
        DropReason::TcpSeqOverWindow,
    );
}
