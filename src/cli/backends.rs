//! Builds what a command acts on from the shared options: clock, catalog, warehouse, bus, engine
//! and instance. Embedded by default (a SQLite warehouse and a SQLite state file in the data
//! directory, created with demo data on first use); PostgreSQL when `--warehouse` is a URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use crate::exit::{CliError, EXIT_BAD_INPUT, EXIT_UNAVAILABLE};
use crate::settings::{Settings, WarehouseUrl};

use crate::bus::{Bus, LocalBus};
use crate::engine::Engine;
use crate::instance::{Instance, InstanceConfig, Role};
use crate::model::catalog::Catalog;
use crate::model::clock::{ScaledClock, SharedClock, SystemClock, system_now_ms};
use crate::redis::Redis;
use crate::redis::RedisLink;
use crate::store::Store;
use crate::warehouse::demo_data::DemoSize;
use crate::warehouse::etl::batch_label;
use crate::warehouse::{EtlTarget, PostgresWarehouse, SqliteWarehouse, Warehouse};

/// Everything a command needs, opened.
pub struct Backends {
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// The clock (accelerated with `--hour`).
    pub clock: SharedClock,
    /// The warehouse.
    pub warehouse: Arc<dyn Warehouse>,
    /// Its loading side.
    pub etl: Arc<dyn EtlTarget>,
    /// The bus.
    pub bus: Arc<dyn Bus>,
    /// The shared store (Redis), if any.
    pub shared: Option<Arc<dyn Store>>,
    /// Whether engines keep an in-process tier.
    pub local_tier: bool,
    /// Where embedded files live.
    pub data_dir: PathBuf,
    kind: Kind,
}

enum Kind {
    Sqlite(SqliteWarehouse),
    Postgres(Arc<PostgresWarehouse>),
}

/// The clock `--hour` asks for.
/// Where demo data may not be created (production, read-only), a missing embedded warehouse is
/// an unavailable backend with what to do — never a demo warehouse answering in its place.
fn refuse_demo_data(s: &Settings, path: &Path) -> Result<(), CliError> {
    match crate::model::ops::refusal(
        crate::model::ops::Action::InitWarehouse,
        s.environment,
        s.read_only,
    ) {
        None => Ok(()),
        Some(why) => Err(CliError::new(
            crate::exit::EXIT_UNAVAILABLE,
            format!(
                "no warehouse at {} and demo data is not created here ({why}); give --warehouse \
                 (postgres://… or an existing SQLite file) or FRESHCACHE_WAREHOUSE",
                crate::sanitize::clean_line(&path.display().to_string())
            ),
        )),
    }
}

pub fn clock_for(s: &Settings) -> SharedClock {
    match s.hour {
        None => Arc::new(SystemClock),
        Some(hour) => ScaledClock::new(system_now_ms(), 3600.0 / hour.as_secs_f64()),
    }
}

impl Backends {
    /// Opens the backends `s` describes. An embedded warehouse that has no data yet gets the demo data
    /// (and says so on stderr); a PostgreSQL one must be initialised with `warehouse init`.
    pub async fn open(s: &Settings) -> Result<Backends, CliError> {
        Ok(Self::open_sized(s, DemoSize::default()).await?.0)
    }

    /// [`Backends::open`], creating demo data of `size` if the embedded warehouse has none; also
    /// returns whether it did.
    pub async fn open_sized(s: &Settings, size: DemoSize) -> Result<(Backends, bool), CliError> {
        let catalog = Arc::new(Catalog::bundled()?);
        let clock = clock_for(s);
        let data_dir = s.data_dir.clone();
        let latency = s.latency();
        let (warehouse, etl, kind): (Arc<dyn Warehouse>, Arc<dyn EtlTarget>, Kind) =
            match s.warehouse_url() {
                WarehouseUrl::Postgres(url) => {
                    let pg = Arc::new(PostgresWarehouse::with_load_timeout(
                        url.expose(),
                        latency,
                        s.warehouse.load_timeout,
                    )?);
                    (pg.clone(), pg.clone(), Kind::Postgres(pg))
                }
                WarehouseUrl::Sqlite(path) => {
                    if !path.exists() {
                        refuse_demo_data(s, &path)?;
                    }
                    let sqlite = SqliteWarehouse::open(&path, latency)?;
                    (
                        Arc::new(sqlite.clone()),
                        Arc::new(sqlite.clone()),
                        Kind::Sqlite(sqlite),
                    )
                }
            };
        // Shared state (event times, heartbeats, bump times) is stamped in wall time, whatever
        // the simulation's clock: other processes read it.
        let wall: crate::model::clock::SharedClock = Arc::new(crate::model::clock::SystemClock);
        let (bus, shared): (Arc<dyn Bus>, Option<Arc<dyn Store>>) = match &s.redis.url {
            Some(url) => {
                let link = Arc::new(
                    RedisLink::open_tls(
                        url.expose(),
                        s.redis.ca.as_deref(),
                        Duration::from_secs(1),
                        s.redis.timeout.max(Duration::from_millis(10)),
                    )
                    .map_err(|e| CliError::new(EXIT_BAD_INPUT, e.to_string()))?,
                );
                let redis = Redis::open(link, catalog.tables().clone(), wall.clone());
                (Arc::new(redis.bus), Some(Arc::new(redis.store)))
            }
            None => (
                Arc::new(
                    LocalBus::open(
                        &data_dir.join("state.sqlite"),
                        catalog.tables().clone(),
                        wall.clone(),
                    )
                    .map_err(|e| CliError::new(EXIT_UNAVAILABLE, e.to_string()))?,
                ),
                None,
            ),
        };
        let backends = Backends {
            catalog,
            clock,
            warehouse,
            etl,
            bus,
            shared,
            local_tier: s.redis.local_tier,
            data_dir,
            kind,
        };
        let mut created = false;
        if let Kind::Sqlite(sqlite) = &backends.kind
            && !sqlite.is_initialised().await?
        {
            refuse_demo_data(s, &backends.data_dir.join("warehouse.sqlite"))?;
            eprintln!(
                "freshcache: creating the demo warehouse ({}) — {} sales, once",
                backends.warehouse.describe(),
                size.sales
            );
            created = backends.init_demo(size).await?;
        }
        Ok((backends, created))
    }

    /// Creates the schema and demo data unless present; returns whether it loaded anything.
    pub async fn init_demo(&self, size: DemoSize) -> Result<bool, CliError> {
        let now = self.clock.now_ms();
        let batch = batch_label(now, std::time::Duration::from_secs(3600));
        Ok(match &self.kind {
            Kind::Sqlite(s) => s.init_demo(size, &batch, now).await?,
            Kind::Postgres(p) => p.init_demo(size, &batch, now).await?,
        })
    }

    /// An engine over this backends.
    pub fn engine(&self, s: &Settings) -> Result<Engine, CliError> {
        let mut b = Engine::builder(self.catalog.clone(), self.warehouse.clone())
            .clock(self.clock.clone())
            .lease(s.redis.lease)
            .load_timeout(s.warehouse.load_timeout)
            .strategy(s.strategy)
            .local_tier(self.local_tier || self.shared.is_none());
        if let Some(s) = &self.shared {
            b = b.shared(s.clone());
        }
        b.build()
            .map_err(|e| CliError::new(crate::exit::EXIT_FAILURE, e.to_string()))
    }

    /// A started instance over these backends, for a one-shot command.
    pub async fn instance(&self, s: &Settings) -> Result<Instance, CliError> {
        self.instance_as(s, Role::Cli).await
    }

    /// A started instance over these backends, listed in the fleet with `role`.
    pub async fn instance_as(&self, s: &Settings, role: Role) -> Result<Instance, CliError> {
        let instance = Instance::new(
            self.engine(s)?,
            self.bus.clone(),
            self.warehouse.clone(),
            Some(self.etl.clone()),
            InstanceConfig {
                env: s.environment,
                read_only: s.read_only,
                max_unverified: s.redis.max_unverified,
                role,
                ..InstanceConfig::default()
            },
        );
        instance.start().await?;
        Ok(instance)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// While it lives, this process serves its metrics (with `--metrics-addr`).
#[must_use = "the metrics endpoint stops when this is dropped"]
pub struct MetricsGuard {
    _stop: Option<tokio::sync::watch::Sender<bool>>,
}

/// Serves `instance`'s metrics on `--metrics-addr` until the guard is dropped; nothing without the
/// flag. A bad address or one already in use is the command's error, before anything starts.
pub fn serve_metrics(s: &Settings, instance: &Instance) -> Result<MetricsGuard, CliError> {
    let Some(addr) = s.metrics_addr else {
        return Ok(MetricsGuard { _stop: None });
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    crate::metrics::spawn(Some(&addr.to_string()), instance, stop_rx)
        .map_err(|e| CliError::new(crate::exit::EXIT_CONFIG, e.to_string()))?;
    tracing::info!(%addr, "serving metrics at http://{addr}/metrics");
    Ok(MetricsGuard { _stop: Some(stop) })
}
