//! What the kernel hands a packet socket: a virtio-net header and a frame. Every path the
//! ring takes with it: whole-frame preparation for passthrough, segmentation, the transmit
//! header for what is passed on.
//!
//! Input format: [10 bytes of virtio-net header][frame].
#![no_main]

use keepstate_dataplane::gso::{prepare_super, segment_ip_len, tx_header, Segmenter, VnetHdr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(hdr) = VnetHdr::parse(data) else {
        return;
    };
    let frame = &data[10..];

    // Segmentation, with the caller rewriting each segment as a router would.
    let mut seg = Segmenter::new();
    let mut f = frame.to_vec();
    let mut emitted = 0usize;
    if let Ok(n) = seg.process(&hdr, &mut f, |s| {
        emitted += 1;
        assert!(s.len() <= frame.len().max(14) + 65_536);
        s.fill(0);
    }) {
        assert_eq!(n, emitted);
    }

    // Passthrough: prepare, then the header for sending it on.
    let mut f = frame.to_vec();
    if let Ok(off) = prepare_super(&hdr, &mut f) {
        assert_eq!(f.len(), frame.len());
        if let Some(gso) = off.gso {
            let _ = segment_ip_len(&f, gso);
            if let Ok(h) = tx_header(&mut f, gso) {
                assert_eq!(VnetHdr::parse(&h.to_bytes()), Some(h));
            }
            let _ = seg.segment_gso(&mut f, gso, |_| {});
        }
    }
});
