//! Neighbour cache (ARP and IPv6 neighbour discovery).
