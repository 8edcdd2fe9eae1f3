//! How an operator sets freshcache up: the options every command shares ([`GlobalArgs`], the
//! flags), the configuration they are resolved from (flags > `FRESHCACHE_*` environment > file >
//! defaults, [`config`]) into one typed [`Settings`], and where the logs go ([`logging`]).

mod args;
pub mod config;
pub mod logging;
mod typed;
pub mod url;

pub use args::{GlobalArgs, default_data_dir};
pub use typed::{LogSettings, RedisSettings, Settings, WarehouseSettings};
pub use url::{PostgresUrl, RedisUrl, WarehouseUrl};
