//! pcap replay port and recorder (being built; see the foundation issue).
