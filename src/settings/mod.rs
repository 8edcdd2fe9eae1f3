//! How an operator sets freshcache up: the options every command shares ([`GlobalArgs`]), the
//! configuration they are resolved from (flags > `FRESHCACHE_*` environment > file > defaults,
//! [`config`]), and where the logs go ([`logging`]).

mod args;
pub mod config;
pub mod logging;

pub use args::{GlobalArgs, default_data_dir};
