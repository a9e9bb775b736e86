//! Client of Doppel's HTTP API, used by the CLI.
