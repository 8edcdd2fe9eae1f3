//! The PostgreSQL warehouse's own tests (those against a server are in tests/warehouse_postgres.rs).
use super::*;

#[test]
fn placeholders_become_positional() {
    let (sql, names) = positional(
        "SELECT ':x', a::int FROM t WHERE y = CAST(:year AS INTEGER) AND q = :quarter AND z = :year",
    );
    assert_eq!(
        sql,
        "SELECT ':x', a::int FROM t WHERE y = CAST($1 AS INTEGER) AND q = $2 AND z = $1"
    );
    assert_eq!(names, vec!["year", "quarter"]);
}

#[test]
fn descriptions_never_hold_the_password() {
    let w = PostgresWarehouse::new(
        "postgres://ann:s3cret-sentinel@db.local:6543/sales",
        Latency::NONE,
    )
    .unwrap();
    assert_eq!(w.describe(), "postgres://ann@db.local:6543/sales");
    assert!(!format!("{w:?}").contains("s3cret"));
    let e =
        PostgresWarehouse::new("postgres://ann:pw@host:notaport/db", Latency::NONE).unwrap_err();
    assert!(e.to_string().contains("bad PostgreSQL URL"), "{e}");
}
