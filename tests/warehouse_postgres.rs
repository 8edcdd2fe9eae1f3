//! The query catalog runs on PostgreSQL and gives the same answers as on the embedded SQLite
//! warehouse for the same data.
//!
//! * `catalog_answers_on_postgres_match_sqlite`: both warehouses get the same demo data, then the
//!   same ETL batch; after each, every bundled query — with its default parameters and with other
//!   combinations (every quarter, region and location, years 2024–2026, `limit` 3) — must return
//!   equal `Rows` (columns and rows) on both, and their `update_log`s must be equal.
//! * `a_failed_load_on_postgres_leaves_no_trace`: a load that fails part-way is rolled back: no
//!   rows and no `update_log` entry, and the same batch loads normally afterwards.
//! * `bad_urls_are_refused_and_passwords_never_described`: no server needed.
//! * Every load ends: with `sales` locked by another session, a query on another table answers in
//!   under a second and the hung one ends at the load timeout with no backend left waiting
//!   (`with_a_table_locked_…`); a dropped query is cancelled at the server at once
//!   (`a_dropped_query_…`); the ETL and `update_log` reads end at the deadline too (`etl_writes_…`).
//! * `an_update_log_of_another_schema_is_an_error_not_a_panic`.
//!
//! The server is `FRESHCACHE_TEST_POSTGRES_URL` (default `postgres://root@127.0.0.1:5432/postgres`).
//! Each test creates its own database there and drops it afterwards, also when it fails. When no
//! server answers, the tests say loudly on stderr that they are skipped and pass — unless
//! `FRESHCACHE_REQUIRE_POSTGRES=1`, which makes that a failure.

// Tests may unwrap, panic and cast freely: a failure is the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::future::Future;
use std::time::Duration;

use freshcache::model::catalog::{Catalog, ParamKind, ParamSpec, Query, Request};
use freshcache::warehouse::demo_data::{DemoSize, ETL_TABLES};
use freshcache::warehouse::postgres::describe_config;
use freshcache::warehouse::{
    EtlTarget, Latency, PostgresWarehouse, Rows, SqliteWarehouse, UpdateLogEntry, Warehouse,
    WarehouseError,
};
use tokio_postgres::{Client, Config, NoTls};

const DEFAULT_SERVER_URL: &str = "postgres://root@127.0.0.1:5432/postgres";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

const SIZE: DemoSize = DemoSize {
    customers: 500,
    sales: 20_000,
};
const INITIAL_BATCH: &str = "20261126-09:00";
/// 2026-11-26T09:00:00Z.
const INITIAL_AT_MS: u64 = 1_795_683_600_000;
const ETL_BATCH: &str = "20261126-10:00";
/// 2026-11-26T10:00:00Z.
const ETL_AT_MS: u64 = 1_795_687_200_000;

/// A database created for one test.
struct TestDatabase {
    /// Its name.
    name: String,
    /// The server URL with the database name swapped in.
    url: String,
}

fn server_url() -> String {
    std::env::var("FRESHCACHE_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SERVER_URL.to_string())
}

/// `url` with its database replaced by `db`: the path of a `postgres://` URL (before any
/// `?options`; added when the URL has none), or a `dbname=` appended to a `key=value` string.
fn with_dbname(url: &str, db: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return format!("{url} dbname={db}");
    };
    let (base, options) = url.split_at(url.find('?').unwrap_or(url.len()));
    let authority = scheme_end + 3;
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    format!("{}/{db}{options}", &base[..path])
}

/// A tokio-postgres error with its causes (its `Display` alone says only "db error" and the like).
fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Reports that the PostgreSQL tests cannot run: a loud note on stderr, or a failure when
/// `FRESHCACHE_REQUIRE_POSTGRES=1`.
fn skip(test: &str, server: &str, why: &str) {
    let message = format!(
        "PostgreSQL tests SKIPPED ({test}): no PostgreSQL server answers at {server}: {why}. \
         Point FRESHCACHE_TEST_POSTGRES_URL at a server to run them."
    );
    if std::env::var("FRESHCACHE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!("{message} FRESHCACHE_REQUIRE_POSTGRES=1 makes this a failure.");
    }
    let bar = "!".repeat(100);
    eprintln!(
        "\n{bar}\n!!! {message}\n!!! Set FRESHCACHE_REQUIRE_POSTGRES=1 to make this a failure.\n{bar}\n"
    );
}

/// Runs `body` against a new database on the test server and drops the database afterwards, also
/// when `body` panics (the panic is then resumed). Returns without running `body` when no server
/// answers (see [`skip`]).
async fn with_test_database<F, Fut>(test: &str, body: F)
where
    F: FnOnce(TestDatabase) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let url = server_url();
    let mut config: Config = url.parse().unwrap_or_else(|e| {
        panic!(
            "FRESHCACHE_TEST_POSTGRES_URL is not a PostgreSQL URL: {}",
            error_text(&e)
        )
    });
    config.connect_timeout(CONNECT_TIMEOUT);
    let server = describe_config(&config);
    let (admin, connection) =
        match tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls)).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => return skip(test, &server, &error_text(&e)),
            Err(_) => {
                return skip(
                    test,
                    &server,
                    &format!("no answer within {CONNECT_TIMEOUT:?}"),
                );
            }
        };
    tokio::spawn(async move {
        let _ = connection.await;
    });

    let name = format!(
        "freshcache_test_{}_{:016x}",
        std::process::id(),
        fastrand::u64(..)
    );
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot create database {name} on {server}: {}",
                error_text(&e)
            )
        });
    eprintln!("{test}: running on database {name} at {server}");
    let database = TestDatabase {
        url: with_dbname(&url, &name),
        name: name.clone(),
    };
    let outcome = tokio::spawn(body(database)).await;
    let dropped = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .map_err(|e| {
            format!(
                "cannot drop test database {name} on {server}: {}",
                error_text(&e)
            )
        });
    match outcome {
        Ok(()) => {
            if let Err(e) = dropped {
                panic!("{e}");
            }
        }
        Err(e) => {
            if let Err(d) = dropped {
                eprintln!("{d}");
            }
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            panic!("{test} did not finish: {e}");
        }
    }
}

/// The values tried for one parameter: its default and choices, a few years, a small limit, and
/// the bounds of other whole numbers.
fn values_to_try(spec: &ParamSpec) -> Vec<String> {
    let mut values: Vec<String> = spec.default.iter().cloned().collect();
    values.extend(spec.choices.iter().flatten().cloned());
    match (spec.name.as_str(), spec.kind) {
        ("year", _) => values.extend(["2024", "2025", "2026"].map(String::from)),
        ("limit", _) => values.push("3".into()),
        (_, ParamKind::Int { min, max }) => {
            values.extend(min.into_iter().chain(max).map(|v| v.to_string()))
        }
        _ => {}
    }
    values.sort();
    values.dedup();
    values
}

/// The default request of `query`, then one per combination of the values tried for each of its
/// parameters.
fn requests_for(catalog: &Catalog, query: &Query) -> Vec<Request> {
    let mut requests = vec![
        catalog
            .request::<&str, &str>(&query.name, &[])
            .unwrap_or_else(|e| panic!("the default request of {}: {e}", query.name)),
    ];
    let mut combinations: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for spec in &query.params {
        let mut next = Vec::new();
        for combination in &combinations {
            for value in values_to_try(spec) {
                let mut c = combination.clone();
                c.push((spec.name.clone(), value));
                next.push(c);
            }
        }
        combinations = next;
    }
    for args in combinations {
        let request = catalog
            .request(&query.name, &args)
            .unwrap_or_else(|e| panic!("{}: {args:?}: {e}", query.name));
        if requests
            .iter()
            .all(|r| r.fingerprint() != request.fingerprint())
        {
            requests.push(request);
        }
    }
    requests
}

fn show(answer: &Result<Rows, WarehouseError>) -> String {
    match answer {
        Ok(rows) => rows.to_json(),
        Err(e) => format!("error: {e}"),
    }
}

/// Runs every catalog query with each of its parameter combinations on both warehouses and fails
/// listing every request whose answers differ, with both answers as JSON.
async fn assert_same_answers(
    catalog: &Catalog,
    postgres: &PostgresWarehouse,
    sqlite: &SqliteWarehouse,
    stage: &str,
) {
    let mut differences = Vec::new();
    let mut never_answered = Vec::new();
    let mut compared = 0;
    for query in catalog.queries() {
        let mut answered = false;
        for request in requests_for(catalog, query) {
            compared += 1;
            let (on_postgres, on_sqlite) =
                tokio::join!(postgres.run(&request), sqlite.run(&request));
            match (&on_postgres, &on_sqlite) {
                // The data, not its provenance (SQLite says which batch it read, PostgreSQL
                // does not yet).
                (Ok(a), Ok(b)) if (&a.columns, &a.rows) == (&b.columns, &b.rows) => {
                    answered |= !a.rows.is_empty()
                }
                _ => differences.push(format!(
                    "{request}\n    postgres: {}\n    sqlite:   {}",
                    show(&on_postgres),
                    show(&on_sqlite)
                )),
            }
        }
        if !answered {
            never_answered.push(query.name.clone());
        }
    }
    assert!(
        differences.is_empty(),
        "{stage}: {} of {compared} requests differ between PostgreSQL and SQLite:\n{}",
        differences.len(),
        differences.join("\n")
    );
    assert!(
        never_answered.is_empty(),
        "{stage}: no rows for any parameters from {never_answered:?}, so equal answers prove little"
    );
    eprintln!(
        "{stage}: {compared} requests over {} queries gave equal answers on PostgreSQL and SQLite",
        catalog.queries().len()
    );
}

async fn assert_same_update_log(
    postgres: &PostgresWarehouse,
    sqlite: &SqliteWarehouse,
    stage: &str,
) -> Vec<UpdateLogEntry> {
    let on_postgres = postgres.update_log().await.unwrap();
    let on_sqlite = sqlite.update_log().await.unwrap();
    assert_eq!(
        on_postgres, on_sqlite,
        "{stage}: update_log differs (left: PostgreSQL, right: SQLite)"
    );
    assert_eq!(
        postgres.current_batch().await.unwrap(),
        sqlite.current_batch().await.unwrap(),
        "{stage}: current batch"
    );
    on_postgres
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_answers_on_postgres_match_sqlite() {
    with_test_database(
        "catalog_answers_on_postgres_match_sqlite",
        |db| async move {
            let postgres = PostgresWarehouse::new(&db.url, Latency::NONE).unwrap();
            assert!(
                postgres.describe().ends_with(&format!("/{}", db.name)),
                "{}",
                postgres.describe()
            );
            let sqlite = SqliteWarehouse::temporary(Latency::NONE).unwrap();
            let (on_postgres, on_sqlite) = tokio::join!(
                postgres.init_demo(SIZE, INITIAL_BATCH, INITIAL_AT_MS),
                sqlite.init_demo(SIZE, INITIAL_BATCH, INITIAL_AT_MS)
            );
            assert!(on_postgres.unwrap(), "PostgreSQL loads the demo data");
            assert!(on_sqlite.unwrap(), "SQLite loads the demo data");
            let catalog = Catalog::bundled().unwrap();

            let log = assert_same_update_log(&postgres, &sqlite, "initial load").await;
            assert_eq!(log.len(), ETL_TABLES.len(), "{log:?}");
            assert_same_answers(&catalog, &postgres, &sqlite, "initial load").await;

            let mut appended_sales = 0;
            for table in ETL_TABLES {
                let on_postgres = postgres
                    .load_table(table, ETL_BATCH, ETL_AT_MS, false)
                    .await
                    .unwrap();
                let on_sqlite = sqlite
                    .load_table(table, ETL_BATCH, ETL_AT_MS, false)
                    .await
                    .unwrap();
                assert_eq!(
                    on_postgres, on_sqlite,
                    "rows batch {ETL_BATCH} appends to {table} (left: PostgreSQL, right: SQLite)"
                );
                assert!(on_postgres > 0, "batch {ETL_BATCH} appends to {table}");
                if table == "sales" {
                    appended_sales = on_postgres;
                }
            }

            let log = assert_same_update_log(&postgres, &sqlite, "after the ETL batch").await;
            assert_eq!(log.len(), ETL_TABLES.len(), "{log:?}");
            for entry in &log {
                assert_eq!(entry.batch, ETL_BATCH, "{entry:?}");
                assert_eq!(entry.last_updated_ms, ETL_AT_MS, "{entry:?}");
            }
            assert_same_answers(&catalog, &postgres, &sqlite, "after the ETL batch").await;

            let request = catalog
                .request::<&str, &str>("latest_batch_sales", &[])
                .unwrap();
            let rows = postgres.run(&request).await.unwrap();
            let orders = rows.columns.iter().position(|c| c == "orders").unwrap();
            let counted: u64 = rows.rows.iter().map(|r| r[orders].as_u64().unwrap()).sum();
            assert_eq!(
                counted, appended_sales,
                "latest_batch_sales counts the batch"
            );
        },
    )
    .await;
}

/// Rows of `table`, or of its rows loaded by `batch`.
async fn count(client: &Client, table: &str, batch: Option<&str>) -> i64 {
    let row = match batch {
        None => client
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .await
            .unwrap(),
        Some(b) => client
            .query_one(
                &format!("SELECT COUNT(*) FROM {table} WHERE batch = $1"),
                &[&b],
            )
            .await
            .unwrap(),
    };
    row.get(0)
}

async fn totals(client: &Client) -> Vec<i64> {
    let mut out = Vec::new();
    for table in ETL_TABLES.into_iter().chain(["update_log"]) {
        out.push(count(client, table, None).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_on_postgres_leaves_no_trace() {
    with_test_database(
        "a_failed_load_on_postgres_leaves_no_trace",
        |db| async move {
            let postgres = PostgresWarehouse::new(&db.url, Latency::NONE).unwrap();
            assert!(
                postgres
                    .init_demo(SMALL, INITIAL_BATCH, INITIAL_AT_MS)
                    .await
                    .unwrap()
            );
            let client = session(&db.url).await;
            let log_before = postgres.update_log().await.unwrap();
            let totals_before = totals(&client).await;

            for table in ETL_TABLES {
                let e = postgres
                    .load_table(table, ETL_BATCH, ETL_AT_MS, true)
                    .await
                    .unwrap_err();
                assert!(e.to_string().contains("simulated failure"), "{table}: {e}");
                assert_eq!(
                    postgres.update_log().await.unwrap(),
                    log_before,
                    "the failed load of {table} left an update_log entry"
                );
                assert_eq!(
                    count(&client, "update_log", Some(ETL_BATCH)).await,
                    0,
                    "the failed load of {table} left an update_log entry"
                );
                assert_eq!(
                    count(&client, table, Some(ETL_BATCH)).await,
                    0,
                    "the failed load of {table} left rows"
                );
                assert_eq!(
                    totals(&client).await,
                    totals_before,
                    "row counts of {ETL_TABLES:?} and update_log after the failed load of {table}"
                );
            }

            for table in ETL_TABLES {
                let n = postgres
                    .load_table(table, ETL_BATCH, ETL_AT_MS, false)
                    .await
                    .unwrap();
                assert!(n > 0, "{table}");
                assert_eq!(
                    count(&client, table, Some(ETL_BATCH)).await,
                    n as i64,
                    "{table}: the batch loads after its failed attempt"
                );
            }
            let log = postgres.update_log().await.unwrap();
            assert!(
                log.iter()
                    .all(|e| e.batch == ETL_BATCH && e.last_updated_ms == ETL_AT_MS),
                "{log:?}"
            );
        },
    )
    .await;
}

#[test]
fn bad_urls_are_refused_and_passwords_never_described() {
    const SENTINEL: &str = "s3ntinel-Pa55word";
    for url in [
        format!("postgres://ann:{SENTINEL}@db.local:6543/sales"),
        format!("postgres://ann:{SENTINEL}@db.local/sales?sslmode=disable"),
        format!("postgresql://ann:{SENTINEL}@db.local:6543"),
        format!("host=db.local port=6543 user=ann password={SENTINEL} dbname=sales"),
    ] {
        let w = PostgresWarehouse::new(&url, Latency::NONE).unwrap();
        let described = w.describe();
        assert!(
            !described.contains(SENTINEL),
            "describe() shows the password: {described}"
        );
        assert!(
            described.starts_with("postgres://ann@db.local:"),
            "{described}"
        );
        assert!(!format!("{w:?}").contains(SENTINEL), "{w:?}");
    }
    for url in [
        format!("postgres://ann:{SENTINEL}@db.local:notaport/sales"),
        format!("postgres://ann:{SENTINEL}@db.local:99999/sales"),
        format!("postgres://ann:{SENTINEL}@db.local/sales?sslmode=sometimes"),
    ] {
        let e = PostgresWarehouse::new(&url, Latency::NONE).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("bad PostgreSQL URL"), "{text}");
        assert!(
            !text.contains(SENTINEL),
            "the error shows the password: {text}"
        );
    }
}

#[test]
fn the_database_name_is_swapped_into_any_url() {
    for (url, swapped) in [
        (
            "postgres://root@127.0.0.1:5432/postgres",
            "postgres://root@127.0.0.1:5432/fc_t",
        ),
        (
            "postgres://root@127.0.0.1:5432",
            "postgres://root@127.0.0.1:5432/fc_t",
        ),
        (
            "postgres://root@127.0.0.1:5432/",
            "postgres://root@127.0.0.1:5432/fc_t",
        ),
        (
            "postgresql://ann:pw@db.local/sales?sslmode=disable&connect_timeout=2",
            "postgresql://ann:pw@db.local/fc_t?sslmode=disable&connect_timeout=2",
        ),
        (
            "postgres://ann@db.local?application_name=x",
            "postgres://ann@db.local/fc_t?application_name=x",
        ),
        (
            "host=db.local user=ann dbname=sales",
            "host=db.local user=ann dbname=sales dbname=fc_t",
        ),
    ] {
        let got = with_dbname(url, "fc_t");
        assert_eq!(got, swapped, "{url}");
        let before: Config = url.parse().unwrap();
        let after: Config = got.parse().unwrap();
        assert_eq!(after.get_dbname(), Some("fc_t"), "{got}");
        assert_eq!(after.get_user(), before.get_user(), "{got}");
        assert_eq!(after.get_hosts(), before.get_hosts(), "{got}");
        assert_eq!(after.get_ports(), before.get_ports(), "{got}");
    }
}

/// A plain connection to the test database, for locking tables and watching backends.
async fn session(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Backends of database `db` other than `watcher`'s running a statement now (`active`), with
/// what they wait for and run.
async fn active_backends(watcher: &Client, db: &str) -> Vec<String> {
    watcher
        .query(
            "SELECT COALESCE(wait_event_type, '') || ' ' || COALESCE(query, '') \
             FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid() AND state = 'active'",
            &[&db],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// Polls until `db` has (`want` true) or has not (`want` false) a backend waiting on a lock;
/// panics with what runs after `within`.
async fn await_lock_waiter(watcher: &Client, db: &str, want: bool, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let active = active_backends(watcher, db).await;
        let waiting = active.iter().any(|b| b.starts_with("Lock "));
        if waiting == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {within:?}, a backend waiting on a lock: expected {want}, active: {active:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const SMALL: DemoSize = DemoSize {
    customers: 50,
    sales: 1_000,
};

/// Fills the test database with the small demo warehouse.
async fn init_small(postgres: &PostgresWarehouse) {
    postgres
        .init_demo(SMALL, INITIAL_BATCH, INITIAL_AT_MS)
        .await
        .unwrap();
}

/// Two sessions on the test database: one to watch its backends, and one that has locked `tables`
/// (`ACCESS EXCLUSIVE`) in a transaction it keeps open until its `ROLLBACK`.
async fn watcher_and_locker(url: &str, tables: &[&str]) -> (Client, Client) {
    let watcher = session(url).await;
    let locker = session(url).await;
    let locks: String = tables
        .iter()
        .map(|t| format!("; LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE"))
        .collect();
    locker
        .batch_execute(&format!("BEGIN{locks}"))
        .await
        .unwrap();
    (watcher, locker)
}

/// Every load ends (issue 10, D). With `sales` locked by another session: a query on another
/// table answers in under a second meanwhile (one connection per process used to queue it behind
/// the hung one for good), and at the load timeout the hung query ends — its waiter gets the
/// deadline error and no backend is left waiting on the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_table_locked_other_queries_answer_and_the_hung_one_ends_at_its_deadline() {
    use freshcache::engine::flight::LoadError;
    use freshcache::engine::{Engine, GetError};
    with_test_database(
        "with_a_table_locked_other_queries_answer_and_the_hung_one_ends_at_its_deadline",
        |db| async move {
            // Long enough for the load to reach the lock on a busy machine before it ends.
            let timeout = Duration::from_secs(3);
            let postgres = std::sync::Arc::new(
                PostgresWarehouse::with_load_timeout(&db.url, Latency::NONE, timeout).unwrap(),
            );
            init_small(&postgres).await;
            let engine = Engine::builder(
                std::sync::Arc::new(Catalog::bundled().unwrap()),
                postgres.clone(),
            )
            .load_timeout(timeout)
            .build()
            .unwrap();
            let (watcher, locker) = watcher_and_locker(&db.url, &["sales"]).await;

            let hung = {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let r = engine
                        .request::<&str, &str>("revenue_by_product", &[])
                        .unwrap();
                    let started = std::time::Instant::now();
                    (engine.get(&r).await, started.elapsed())
                })
            };
            await_lock_waiter(&watcher, &db.name, true, Duration::from_secs(10)).await;

            let stock = engine.request::<&str, &str>("stock_outs", &[]).unwrap();
            let started = std::time::Instant::now();
            let answer = tokio::time::timeout(Duration::from_secs(1), engine.get(&stock))
                .await
                .unwrap_or_else(|_| {
                    panic!("a query on inventory waited behind the locked sales table for 1 s")
                })
                .unwrap();
            assert!(answer.freshness.is_fresh());
            assert!(started.elapsed() < Duration::from_secs(1));

            let (result, took) = tokio::time::timeout(Duration::from_secs(30), hung)
                .await
                .expect("the hung load did not end at its deadline")
                .unwrap();
            match result {
                Err(GetError::Warehouse {
                    error: LoadError::Deadline(d),
                    ..
                }) => assert_eq!(d, timeout),
                other => panic!("expected the deadline error, got {other:?}"),
            }
            assert!(took >= timeout, "{took:?}");
            // Nobody waits on the lock any more, while it is still held.
            await_lock_waiter(&watcher, &db.name, false, Duration::from_secs(5)).await;
            assert_eq!(engine.loads_in_flight(), 0);
            locker.batch_execute("ROLLBACK").await.unwrap();
        },
    )
    .await;
}

/// A query whose future is dropped is cancelled at the server at once (a cancel request), not at
/// the server's statement timeout: here that is a minute away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_query_is_cancelled_at_the_server() {
    with_test_database(
        "a_dropped_query_is_cancelled_at_the_server",
        |db| async move {
            let postgres = std::sync::Arc::new(
                PostgresWarehouse::with_load_timeout(
                    &db.url,
                    Latency::NONE,
                    Duration::from_secs(60),
                )
                .unwrap(),
            );
            init_small(&postgres).await;
            let (watcher, locker) = watcher_and_locker(&db.url, &["sales"]).await;
            let catalog = Catalog::bundled().unwrap();
            let request = catalog
                .request::<&str, &str>("revenue_by_product", &[])
                .unwrap();
            let task = {
                let postgres = postgres.clone();
                tokio::spawn(async move { postgres.run(&request).await })
            };
            await_lock_waiter(&watcher, &db.name, true, Duration::from_secs(10)).await;
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
            await_lock_waiter(&watcher, &db.name, false, Duration::from_secs(5)).await;
            // The pool goes on: a query on the locked table's neighbour answers.
            let stock = catalog.request::<&str, &str>("stock_outs", &[]).unwrap();
            postgres.run(&stock).await.unwrap();
            locker.batch_execute("ROLLBACK").await.unwrap();
        },
    )
    .await;
}

/// The ETL and `update_log` reads carry the deadline too: `etl run` on a locked table ends with an
/// error instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etl_writes_and_update_log_reads_end_at_the_deadline() {
    with_test_database(
        "etl_writes_and_update_log_reads_end_at_the_deadline",
        |db| async move {
            let timeout = Duration::from_millis(800);
            let postgres =
                PostgresWarehouse::with_load_timeout(&db.url, Latency::NONE, timeout).unwrap();
            init_small(&postgres).await;
            let (watcher, locker) = watcher_and_locker(&db.url, &["sales", "update_log"]).await;
            let started = std::time::Instant::now();
            let e = tokio::time::timeout(Duration::from_secs(20), postgres.update_log())
                .await
                .expect("update_log hung")
                .unwrap_err();
            assert!(matches!(e, WarehouseError::Unavailable(_)), "{e}");
            let e = tokio::time::timeout(
                Duration::from_secs(20),
                postgres.load_table("sales", ETL_BATCH, ETL_AT_MS, false),
            )
            .await
            .expect("the ETL load hung")
            .unwrap_err();
            assert!(matches!(e, WarehouseError::Unavailable(_)), "{e}");
            assert!(started.elapsed() < Duration::from_secs(10));
            await_lock_waiter(&watcher, &db.name, false, Duration::from_secs(5)).await;
            locker.batch_execute("ROLLBACK").await.unwrap();
            // Unlocked, the same batch loads.
            assert!(
                postgres
                    .load_table("sales", ETL_BATCH, ETL_AT_MS, false)
                    .await
                    .unwrap()
                    > 0
            );
        },
    )
    .await;
}

/// Bad input from the warehouse is an error, never a panic (issue 10, code reading): an
/// `update_log` of another schema used to panic in `Row::get`. A table re-created under a
/// prepared statement is prepared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_log_of_another_schema_is_an_error_not_a_panic() {
    with_test_database(
        "an_update_log_of_another_schema_is_an_error_not_a_panic",
        |db| async move {
            let admin = session(&db.url).await;
            admin
                .batch_execute(
                    "CREATE TABLE update_log (table_name TEXT, batch TEXT, last_updated TEXT, \
                     rows INTEGER); \
                     INSERT INTO update_log VALUES ('sales', '20261126-09:00', 'yesterday', 3)",
                )
                .await
                .unwrap();
            let postgres = PostgresWarehouse::new(&db.url, Latency::NONE).unwrap();
            let e = postgres.update_log().await.unwrap_err();
            assert!(matches!(e, WarehouseError::Query(_)), "{e}");
            assert!(
                e.to_string().contains("unexpected schema of `update_log`"),
                "{e}"
            );
            // NULLs where a value is due, in the right types: an error too.
            admin
                .batch_execute(
                    "DROP TABLE update_log; \
                     CREATE TABLE update_log (table_name TEXT, batch TEXT, last_updated BIGINT, \
                     rows BIGINT); \
                     INSERT INTO update_log VALUES ('sales', '20261126-09:00', NULL, 3)",
                )
                .await
                .unwrap();
            // The same warehouse: its prepared statement described the dropped table, and is
            // prepared again (not "cached plan must not change result type" for good).
            let e = postgres.update_log().await.unwrap_err();
            assert!(
                e.to_string().contains("unexpected schema of `update_log`"),
                "{e}"
            );
        },
    )
    .await;
}

/// The real binary (issue 10, D: `get` used to wait 30 s, then exit while its query went on
/// waiting at the server for minutes): with `sales` locked, `get --load-timeout 500ms` exits 5
/// soon after the deadline, says why, and leaves no backend waiting on the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_on_a_locked_table_exits_5_at_the_deadline_and_leaves_nothing_waiting() {
    with_test_database(
        "get_on_a_locked_table_exits_5_at_the_deadline_and_leaves_nothing_waiting",
        |db| async move {
            let postgres = PostgresWarehouse::new(&db.url, Latency::NONE).unwrap();
            init_small(&postgres).await;
            let (watcher, locker) = watcher_and_locker(&db.url, &["sales"]).await;
            // A sandbox of its own: data, configuration, state and logs in a temporary directory.
            let home = std::env::temp_dir().join(format!("{}-home", db.name));
            std::fs::create_dir_all(&home).unwrap();
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_freshcache"));
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("FRESHCACHE_") {
                    command.env_remove(key);
                }
            }
            for key in [
                "HOME",
                "XDG_CONFIG_HOME",
                "XDG_STATE_HOME",
                "XDG_DATA_HOME",
                "FRESHCACHE_LOG_DIR",
            ] {
                command.env(key, &home);
            }
            command
                .args(["--warehouse", &db.url, "--data-dir"])
                .arg(&home)
                .args(["--load-timeout", "500ms", "get", "revenue_by_product"])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let started = std::time::Instant::now();
            let out = tokio::time::timeout(Duration::from_secs(30), command.output())
                .await
                .expect("`get` on a locked table did not exit within 30 s")
                .unwrap();
            let took = started.elapsed();
            let _ = std::fs::remove_dir_all(&home); // a temporary directory: best effort
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(5), "stderr: {stderr}");
            assert!(
                stderr.contains("exceeded its deadline of 500ms"),
                "stderr: {stderr}"
            );
            // The deadline plus the start of a debug binary on a busy machine.
            assert!(took < Duration::from_secs(15), "{took:?}");
            await_lock_waiter(&watcher, &db.name, false, Duration::from_secs(5)).await;
            locker.batch_execute("ROLLBACK").await.unwrap();
        },
    )
    .await;
}
