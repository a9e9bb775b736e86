//! Doppel's HTTP JSON API (axum).
