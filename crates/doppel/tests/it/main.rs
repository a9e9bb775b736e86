//! End-to-end tests of the `doppel` binary: a real engine process, real
//! plugin workers running artifacts built by the real `dvp build`.

mod plugin_errors;
mod plugins;
mod support;
mod pool;
mod environments;
mod auth;
mod delphix;
mod tutorial;
mod openapi;
mod crash;
mod cli_help;
