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
    /// Maximum tracked connections. When full, entries not yet assured are evicted (the
    /// oldest never replied to first), as netfilter's early drop does, and TCP connections in
    /// TIME_WAIT or CLOSE; other assured connections are never evicted, and once only they
    /// remain new connections are refused (`table-full`).
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
    /// Adaptive timeouts (pf's `adaptive.start`/`adaptive.end`): as the table fills past
    /// `start` connections every timeout shrinks in proportion, reaching zero at `end`, so
    /// idle and closing connections make room sooner. Off in netfilter (the default).
    pub adaptive: Option<Adaptive>,
}

/// When timeouts start to shrink and where they would reach zero, in connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adaptive {
    pub start: u32,
    pub end: u32,
}

impl Adaptive {
    /// pf's defaults: from 60% of the limit, reaching zero at 120%, so a full table runs
    /// at a third of every timeout.
    pub fn pf(max_connections: u32) -> Adaptive {
        let of =
            |pct: u64| u32::try_from(u64::from(max_connections) * pct / 100).unwrap_or(u32::MAX);
        Adaptive {
            start: of(60),
            end: of(120),
        }
    }

    /// The share of each timeout in force with `len` connections, in 1/1024ths.
    pub fn scale(&self, len: u32) -> u32 {
        if len <= self.start || self.end <= self.start {
            return 1024;
        }
        if len >= self.end {
            return 0;
        }
        let left = u64::from(self.end - len) * 1024 / u64::from(self.end - self.start);
        u32::try_from(left).unwrap_or(1024)
    }
}

impl Timeouts {
    /// The shortest of them: no connection is given less time than this.
    pub fn least(&self) -> u32 {
        // Every field, once: the assertion below fails to compile when a timeout is added,
        // so that it joins this list (the sweep relies on no timeout being shorter).
        const _: () = assert!(core::mem::size_of::<Timeouts>() == 13 * 4);
        [
            self.tcp_syn_sent,
            self.tcp_syn_recv,
            self.tcp_established,
            self.tcp_fin_wait,
            self.tcp_close_wait,
            self.tcp_last_ack,
            self.tcp_time_wait,
            self.tcp_close,
            self.tcp_unacknowledged,
            self.udp_unreplied,
            self.udp_stream,
            self.icmp,
            self.generic,
        ]
        .into_iter()
        .min()
        .unwrap_or(0)
    }

    /// Every timeout times `scale`/1024, at least one second.
    pub fn scaled(&self, scale: u32) -> Timeouts {
        let s = |t: u32| {
            let v = u64::from(t) * u64::from(scale) / 1024;
            u32::try_from(v).unwrap_or(t).max(1).min(t)
        };
        Timeouts {
            tcp_syn_sent: s(self.tcp_syn_sent),
            tcp_syn_recv: s(self.tcp_syn_recv),
            tcp_established: s(self.tcp_established),
            tcp_fin_wait: s(self.tcp_fin_wait),
            tcp_close_wait: s(self.tcp_close_wait),
            tcp_last_ack: s(self.tcp_last_ack),
            tcp_time_wait: s(self.tcp_time_wait),
            tcp_close: s(self.tcp_close),
            tcp_unacknowledged: s(self.tcp_unacknowledged),
            udp_unreplied: s(self.udp_unreplied),
            udp_stream: s(self.udp_stream),
            icmp: s(self.icmp),
            generic: s(self.generic),
        }
    }
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
            adaptive: None,
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
