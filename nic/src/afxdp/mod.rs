//! AF_XDP port (being built; see the foundation issue).
