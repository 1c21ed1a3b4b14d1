//! Linux packet-socket I/O.
