//! End-to-end tests of the `doppel` binary: a real engine process, real
//! plugin workers running artifacts built by the real `dvp build`.

mod auth;
mod cli_help;
mod crash;
mod delphix;
mod environments;
mod openapi;
mod plugin_errors;
mod plugins;
mod pool;
mod sandbox;
mod support;
mod tutorial;
