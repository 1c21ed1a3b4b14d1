//! Engine settings: table limit, timeouts, TCP strictness, hash key.

/// Per-state timeouts in seconds. Defaults are netfilter's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_sent: u32,
    pub tcp_syn_recv: u32,
    pub tcp_established: u32,
    pub tcp_fin_wait: u32,
    pub tcp_close_wait: u32,
    pub tcp_last_ack: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    /// Used instead of a longer state timeout while sent data is not yet acknowledged, and
    /// for connections picked up mid-stream until a reply is seen.
    pub tcp_unacknowledged: u32,
    pub udp_unreplied: u32,
    /// UDP that has seen a reply and is still active two seconds after it was created.
    pub udp_stream: u32,
    pub icmp: u32,
    pub generic: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_established: 432_000,
            tcp_fin_wait: 120,
            tcp_close_wait: 60,
            tcp_last_ack: 30,
            tcp_time_wait: 120,
            tcp_close: 10,
            tcp_unacknowledged: 300,
            udp_unreplied: 30,
            udp_stream: 120,
            icmp: 30,
            generic: 600,
        }
    }
}

/// Engine configuration. `Config::default()` gives netfilter's behaviour.
#[derive(Clone, Debug)]
pub struct Config {
    /// Maximum tracked connections. When full, entries not yet assured are evicted (those
    /// never replied to first), as netfilter's early drop does; assured connections are never
    /// evicted, and once only they remain new connections are refused (`table-full`).
    pub max_connections: u32,
    pub timeouts: Timeouts,
    /// Create an entry for an ACK of an unknown connection (netfilter's `nf_conntrack_tcp_loose`).
    pub tcp_loose: bool,
    /// Skip TCP window checks for every connection (netfilter's `nf_conntrack_tcp_be_liberal`),
    /// for asymmetric paths where only one direction passes through.
    pub tcp_liberal: bool,
    /// Verify IPv4 header and transport checksums (netfilter's `nf_conntrack_checksum`).
    /// Captures taken on a host with checksum offload carry unfilled checksums on outgoing
    /// packets; turn this off to replay them.
    pub verify_checksums: bool,
    /// Key for the table's hash. Callers must pass secret random bytes in production, or an
    /// attacker who knows the key can aim many connections at one bucket.
    pub hash_key: [u64; 4],
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 262_144,
            timeouts: Timeouts::default(),
            tcp_loose: true,
            tcp_liberal: false,
            verify_checksums: true,
            hash_key: [
                0x243f_6a88_85a3_08d3,
                0x1319_8a2e_0370_7344,
                0xa409_3822_299f_31d0,
                0x082e_fa98_ec4e_6c89,
            ],
        }
    }
}

impl Config {
    /// A table limit sized from the machine's memory: at most 1/64 of it for the state table
    /// (each connection costs at most 128 bytes), clamped to 65,536..4,194,304 connections.
    /// netfilter uses RAM/16384 buckets capped at 262,144; keepstate's entries are smaller, so
    /// the same share of memory holds more connections.
    pub fn limit_for_memory(total_bytes: u64) -> u32 {
        let share = total_bytes / 64 / 128;
        let clamped = share.clamp(65_536, 4_194_304);
        u32::try_from(clamped).unwrap_or(4_194_304)
    }
}
