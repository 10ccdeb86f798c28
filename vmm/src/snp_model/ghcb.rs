//! GHCB protocol (owned by the lead).
