//! End-to-end tests of the `doppel` binary: a real engine process, real
//! plugin workers running artifacts built by the real `dvp build`.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

mod auth;
mod browser;
mod cli_help;
mod crash;
mod data_dir;
mod delphix;
mod environments;
mod hostile_artifacts;
mod metrics;
mod openapi;
mod plugin_errors;
mod plugins;
mod policies;
mod pool;
mod postgres;
mod python27;
mod retain;
mod roles;
mod sandbox;
mod support;
mod tls;
mod tutorial;
mod ui;
mod webhooks;
