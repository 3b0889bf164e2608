//! TAP port (being built; see the foundation issue).
