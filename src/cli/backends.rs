//! Builds what a command acts on from the shared options: clock, catalog, warehouse, bus, engine
//! and instance. Embedded by default (a SQLite warehouse and a SQLite state file in the data
//! directory, created with demo data on first use); PostgreSQL when `--warehouse` is a URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::exit::{CliError, EXIT_BAD_INPUT, EXIT_UNAVAILABLE};
use crate::settings::{GlobalArgs, default_data_dir};
use std::time::Duration;

use crate::bus::{Bus, LocalBus};
use crate::engine::Engine;
use crate::instance::{Instance, InstanceConfig, Role};
use crate::model::catalog::Catalog;
use crate::model::clock::{ScaledClock, SharedClock, SystemClock, parse_duration, system_now_ms};
use crate::redis::Redis;
use crate::redis::RedisLink;
use crate::store::Store;
use crate::warehouse::demo_data::DemoSize;
use crate::warehouse::etl::batch_label;
use crate::warehouse::{EtlTarget, Latency, PostgresWarehouse, SqliteWarehouse, Warehouse};

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
pub fn clock_for(global: &GlobalArgs) -> Result<SharedClock, CliError> {
    match &global.hour {
        None => Ok(Arc::new(SystemClock)),
        Some(h) => {
            let d = parse_duration(h)
                .map_err(|e| CliError::new(EXIT_BAD_INPUT, format!("--hour: {e}")))?;
            if d.is_zero() {
                return Err(CliError::new(
                    EXIT_BAD_INPUT,
                    "--hour must be longer than 0s",
                ));
            }
            Ok(ScaledClock::new(system_now_ms(), 3600.0 / d.as_secs_f64()))
        }
    }
}

/// A duration flag that must be more than zero, or exit 4 naming the flag.
fn positive_duration(flag: &str, value: &str) -> Result<Duration, CliError> {
    let d =
        parse_duration(value).map_err(|e| CliError::new(EXIT_BAD_INPUT, format!("{flag}: {e}")))?;
    if d.is_zero() {
        return Err(CliError::new(
            EXIT_BAD_INPUT,
            format!("{flag} must be longer than 0s"),
        ));
    }
    Ok(d)
}

/// How long an instance may go without confirming the version truth (`--max-unverified`).
pub fn max_unverified(global: &GlobalArgs) -> Result<Duration, CliError> {
    positive_duration("--max-unverified", &global.max_unverified)
}

/// The deadline of one warehouse load (`--load-timeout`).
pub fn load_timeout(global: &GlobalArgs) -> Result<Duration, CliError> {
    positive_duration("--load-timeout", &global.load_timeout)
}

fn is_postgres(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

/// Where demo data may not be created (production, read-only), a missing embedded warehouse is
/// an unavailable backend with what to do — never a demo warehouse answering in its place.
fn refuse_demo_data(global: &GlobalArgs, path: &Path) -> Result<(), CliError> {
    match crate::model::ops::refusal(
        crate::model::ops::Action::InitWarehouse,
        global.env,
        global.read_only,
    ) {
        None => Ok(()),
        Some(why) => Err(CliError::new(
            EXIT_UNAVAILABLE,
            format!(
                "no warehouse at {} and demo data is not created here ({why}); give --warehouse \
                 (postgres://… or an existing SQLite file) or FRESHCACHE_WAREHOUSE",
                crate::sanitize::clean_line(&path.display().to_string())
            ),
        )),
    }
}

impl Backends {
    /// Opens the backends `g` describes. An embedded warehouse that has no data yet gets the demo data
    /// (and says so on stderr); a PostgreSQL one must be initialised with `warehouse init`.
    pub async fn open(global: &GlobalArgs) -> Result<Backends, CliError> {
        Ok(Self::open_sized(global, DemoSize::default()).await?.0)
    }

    /// [`Backends::open`], creating demo data of `size` if the embedded warehouse has none; also
    /// returns whether it did.
    pub async fn open_sized(
        global: &GlobalArgs,
        size: DemoSize,
    ) -> Result<(Backends, bool), CliError> {
        let data_dir = global.data_dir.clone().unwrap_or_else(default_data_dir);
        Self::open_with(global, data_dir, size).await
    }

    async fn open_with(
        global: &GlobalArgs,
        data_dir: PathBuf,
        size: DemoSize,
    ) -> Result<(Backends, bool), CliError> {
        let catalog = Arc::new(Catalog::bundled()?);
        let clock = clock_for(global)?;
        let spec = global.warehouse.clone();
        let load_timeout = load_timeout(global)?;
        let latency = match &global.latency {
            Some(l) => Latency::parse(l)
                .map_err(|e| CliError::new(EXIT_BAD_INPUT, format!("--latency: {e}")))?,
            None if spec.as_deref().is_some_and(is_postgres) => Latency::NONE,
            None => Latency::BASELINE,
        };
        let (warehouse, etl, kind): (Arc<dyn Warehouse>, Arc<dyn EtlTarget>, Kind) = match spec {
            Some(url) if is_postgres(&url) => {
                let pg = Arc::new(PostgresWarehouse::with_load_timeout(
                    &url,
                    latency,
                    load_timeout,
                )?);
                (pg.clone(), pg.clone(), Kind::Postgres(pg))
            }
            other => {
                let path = other
                    .map(PathBuf::from)
                    .unwrap_or_else(|| data_dir.join("warehouse.sqlite"));
                if !path.exists() {
                    refuse_demo_data(global, &path)?;
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
        let (bus, shared): (Arc<dyn Bus>, Option<Arc<dyn Store>>) = match &global.redis {
            Some(url) => {
                let timeout = parse_duration(&global.redis_timeout)
                    .map_err(|e| CliError::new(EXIT_BAD_INPUT, format!("--redis-timeout: {e}")))?;
                let link = Arc::new(
                    RedisLink::open_tls(
                        url,
                        global.redis_ca.as_deref(),
                        Duration::from_secs(1),
                        timeout.max(Duration::from_millis(10)),
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
            local_tier: !global.no_local_tier,
            data_dir,
            kind,
        };
        let mut created = false;
        if let Kind::Sqlite(s) = &backends.kind
            && !s.is_initialised().await?
        {
            refuse_demo_data(global, &backends.data_dir.join("warehouse.sqlite"))?;
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
    pub fn engine(&self, global: &GlobalArgs) -> Result<Engine, CliError> {
        let lease = parse_duration(&global.lease)
            .map_err(|e| CliError::new(EXIT_BAD_INPUT, format!("--lease: {e}")))?;
        let mut b = Engine::builder(self.catalog.clone(), self.warehouse.clone())
            .clock(self.clock.clone())
            .lease(lease)
            .load_timeout(load_timeout(global)?)
            .strategy(global.strategy.unwrap_or_default())
            .local_tier(self.local_tier || self.shared.is_none());
        if let Some(s) = &self.shared {
            b = b.shared(s.clone());
        }
        b.build()
            .map_err(|e| CliError::new(crate::exit::EXIT_FAILURE, e.to_string()))
    }

    /// A started instance over this backends, for a one-shot command.
    pub async fn instance(&self, global: &GlobalArgs) -> Result<Instance, CliError> {
        self.instance_as(global, Role::Cli).await
    }

    /// A started instance over this backends, listed in the fleet with `role`.
    pub async fn instance_as(&self, global: &GlobalArgs, role: Role) -> Result<Instance, CliError> {
        let instance = Instance::new(
            self.engine(global)?,
            self.bus.clone(),
            self.warehouse.clone(),
            Some(self.etl.clone()),
            InstanceConfig {
                env: global.env,
                read_only: global.read_only,
                max_unverified: max_unverified(global)?,
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
pub fn serve_metrics(global: &GlobalArgs, instance: &Instance) -> Result<MetricsGuard, CliError> {
    let Some(addr) = global.metrics_addr.as_deref() else {
        return Ok(MetricsGuard { _stop: None });
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    crate::metrics::spawn(Some(addr), instance, stop_rx)
        .map_err(|e| CliError::new(crate::exit::EXIT_CONFIG, e.to_string()))?;
    tracing::info!(%addr, "serving metrics at http://{addr}/metrics");
    Ok(MetricsGuard { _stop: Some(stop) })
}
