#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness, TsResolution};

use super::*;

fn pcap_bytes(endianness: Endianness, ts_resolution: TsResolution) -> Vec<u8> {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        endianness,
        ts_resolution,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    w.write_packet(&PcapPacket::new(
        Duration::new(1_700_000_000, 123_456_000),
        60,
        &[1u8; 60],
    ))
    .unwrap();
    w.write_packet(&PcapPacket::new(
        Duration::new(1_700_000_001, 5_000),
        1514,
        &[2u8; 96],
    ))
    .unwrap();
    w.into_writer()
}

fn collect(cap: &Capture) -> (Vec<Record<'_>>, Option<TruncatedTail>) {
    let mut it = cap.records();
    let mut v = Vec::new();
    for r in it.by_ref() {
        v.push(r.unwrap());
    }
    (v, it.truncated_tail().cloned())
}

#[test]
fn pcap_all_byte_orders_and_resolutions() {
    for e in [Endianness::Little, Endianness::Big] {
        for res in [TsResolution::MicroSecond, TsResolution::NanoSecond] {
            let cap = Capture::from_bytes("t.pcap", pcap_bytes(e, res)).unwrap();
            let (recs, tail) = collect(&cap);
            assert!(tail.is_none());
            assert_eq!(recs.len(), 2, "{e:?} {res:?}");
            assert_eq!(
                recs[0].ts,
                Time::from_secs_nanos(1_700_000_000, 123_456_000)
            );
            assert_eq!(recs[1].ts, Time::from_secs_nanos(1_700_000_001, 5_000));
            assert_eq!(recs[0].link, LinkType::Ethernet);
            assert_eq!(recs[0].data, &[1u8; 60][..]);
            assert_eq!(recs[1].data.len(), 96);
            assert_eq!(recs[1].wire_len, 1514);
            assert_eq!(recs[0].offset, 24);
            assert_eq!(recs[1].offset, 24 + 16 + 60);
            assert_eq!(recs[0].iface, None);
        }
    }
}

fn idb(link: DataLink, name: &str, tsresol: u8) -> InterfaceDescriptionBlock<'static> {
    InterfaceDescriptionBlock {
        linktype: link,
        snaplen: 0xffff,
        options: vec![
            InterfaceDescriptionOption::IfName(Cow::Owned(name.to_string())),
            InterfaceDescriptionOption::IfTsResol(tsresol),
        ],
    }
}

fn epb(iface: u32, units: u64, data: &[u8]) -> EnhancedPacketBlock<'_> {
    EnhancedPacketBlock {
        interface_id: iface,
        // pcap-file writes the raw 64-bit value; it is in the interface's units.
        timestamp: Duration::from_nanos(units),
        original_len: u32::try_from(data.len()).unwrap() + 4,
        data: Cow::Borrowed(data),
        options: vec![],
    }
}

fn pcapng_bytes(endianness: Endianness) -> Vec<u8> {
    let mut w = PcapNgWriter::with_endianness(Vec::new(), endianness).unwrap();
    w.write_pcapng_block(idb(DataLink::ETHERNET, "lan0", 6))
        .unwrap();
    w.write_pcapng_block(idb(DataLink::RAW, "wan0", 9)).unwrap();
    w.write_pcapng_block(epb(0, 1_700_000_000_000_001, &[1; 42]))
        .unwrap();
    let mut outbound = epb(1, 1_700_000_000_000_002_003, &[0x45; 21]);
    outbound.options = vec![EnhancedPacketOption::Flags(2)];
    w.write_pcapng_block(outbound).unwrap();
    w.write_pcapng_block(SimplePacketBlock {
        original_len: 30,
        data: Cow::Borrowed(&[3; 30]),
    })
    .unwrap();
    w.into_inner()
}

#[test]
fn pcapng_interfaces_names_and_resolutions() {
    for e in [Endianness::Little, Endianness::Big] {
        let cap = Capture::from_bytes("t.pcapng", pcapng_bytes(e)).unwrap();
        let (recs, tail) = collect(&cap);
        assert!(tail.is_none());
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].iface, Some("lan0"));
        assert_eq!(recs[0].link, LinkType::Ethernet);
        assert_eq!(recs[0].ts, Time::from_secs_nanos(1_700_000_000, 1_000));
        assert_eq!(recs[0].data.len(), 42);
        assert_eq!(recs[0].wire_len, 46);
        assert_eq!(recs[1].iface, Some("wan0"));
        assert_eq!(recs[1].link, LinkType::Raw);
        assert_eq!(recs[1].ts, Time::from_secs_nanos(1_700_000_000, 2_003));
        assert_eq!(recs[1].data.len(), 21);
        assert_eq!(recs[0].direction, PacketDirection::Unknown);
        assert_eq!(recs[1].direction, PacketDirection::Outbound);
        assert_eq!(recs[2].iface, Some("lan0"));
        assert_eq!(recs[2].data, &[3u8; 30][..]);
        assert!(recs[0].offset < recs[1].offset && recs[1].offset < recs[2].offset);
    }
}

#[test]
fn corrupt_header_names_file_and_offset() {
    let Err(e) = Capture::from_bytes("bad.pcap", b"garbage-garbage-garbage-garbage".to_vec())
    else {
        panic!("garbage accepted");
    };
    let msg = format!("{e:#}");
    assert!(msg.contains("bad.pcap"), "{msg}");
    assert!(msg.contains("offset 0"), "{msg}");
}

#[test]
fn corrupt_record_names_offset() {
    let mut b = pcap_bytes(Endianness::Little, TsResolution::MicroSecond);
    // Second record's captured length (offset 100 + 8) set absurdly large.
    b[108..112].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let cap = Capture::from_bytes("bad.pcap", b).unwrap();
    let r: Result<Vec<_>> = cap.records().collect();
    let msg = format!("{:#}", r.unwrap_err());
    assert!(
        msg.contains("bad.pcap") && msg.contains("offset 100"),
        "{msg}"
    );

    let mut b = pcapng_bytes(Endianness::Little);
    let offs: Vec<u64> = {
        let cap = Capture::from_bytes("x", b.clone()).unwrap();
        cap.records().map(|r| r.unwrap().offset).collect()
    };
    let o = usize::try_from(offs[1]).unwrap();
    b[o + 4..o + 8].copy_from_slice(&13u32.to_le_bytes());
    let cap = Capture::from_bytes("bad.pcapng", b).unwrap();
    let r: Result<Vec<_>> = cap.records().collect();
    let msg = format!("{:#}", r.unwrap_err());
    assert!(
        msg.contains("bad.pcapng") && msg.contains(&format!("offset {o}")),
        "{msg}"
    );
}

#[test]
fn truncated_last_record_is_reported() {
    let b = pcap_bytes(Endianness::Little, TsResolution::MicroSecond);
    let cap = Capture::from_bytes("t.pcap", b[..b.len() - 10].to_vec()).unwrap();
    let (recs, tail) = collect(&cap);
    assert_eq!(recs.len(), 1);
    let tail = tail.unwrap();
    assert_eq!(tail.offset, 100);
    assert!(tail.to_string().contains("offset 100"));

    let b = pcapng_bytes(Endianness::Big);
    let cap = Capture::from_bytes("t.pcapng", b[..b.len() - 5].to_vec()).unwrap();
    let (recs, tail) = collect(&cap);
    assert_eq!(recs.len(), 2);
    assert!(tail.is_some());
}

#[test]
fn unknown_link_type_is_named() {
    let mut b = pcap_bytes(Endianness::Little, TsResolution::MicroSecond);
    b[20..24].copy_from_slice(&4242u32.to_le_bytes());
    let cap = Capture::from_bytes("t.pcap", b).unwrap();
    let r: Result<Vec<_>> = cap.records().collect();
    let msg = format!("{:#}", r.unwrap_err());
    assert!(msg.contains("4242"), "{msg}");
}
