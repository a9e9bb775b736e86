//! Doppel's metadata store (SQLite): the only crate that speaks SQL.
