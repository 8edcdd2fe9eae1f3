//! Deterministic demo data for the three tables of the seed: `sales`, `inventory`, `customers`,
//! plus the `update_log` the invalidation protocol checks.
//!
//! The same seed gives the same rows on every machine, for SQLite and PostgreSQL alike, so the
//! catalog can be checked to give the same answers on both. An ETL batch is a pure function of its
//! label: batch `20261126-10:00` appends the same rows wherever it runs.

use crate::model::clock::{Millis, civil_date};

/// Regions the demo sells in.
pub const REGIONS: [&str; 5] = [
    "North America",
    "Europe",
    "Asia Pacific",
    "Latin America",
    "Middle East & Africa",
];

/// Stock locations.
pub const LOCATIONS: [&str; 3] = ["Reno", "Rotterdam", "Singapore"];

/// Customer segments.
pub const SEGMENTS: [&str; 3] = ["Enterprise", "Mid-market", "SMB"];

/// Products and their unit price in cents.
pub const PRODUCTS: [(&str, i64); 24] = [
    ("Anchor Desk", 34_900),
    ("Beacon Lamp", 4_900),
    ("Cedar Shelf", 12_900),
    ("Drift Chair", 21_900),
    ("Ember Heater", 8_900),
    ("Fjord Sofa", 119_900),
    ("Grove Planter", 2_900),
    ("Harbor Rug", 15_900),
    ("Isle Stool", 6_900),
    ("Juniper Bed", 89_900),
    ("Kestrel Fan", 5_900),
    ("Lumen Panel", 17_900),
    ("Meridian Clock", 3_900),
    ("Nimbus Pillow", 1_900),
    ("Orbit Speaker", 24_900),
    ("Pioneer Cart", 9_900),
    ("Quarry Table", 64_900),
    ("Ridge Cabinet", 44_900),
    ("Summit Monitor", 29_900),
    ("Tidal Kettle", 3_400),
    ("Umber Mirror", 11_900),
    ("Vale Bench", 18_900),
    ("Willow Basket", 2_400),
    ("Zephyr Purifier", 27_900),
];

const NAME_FIRST: [&str; 16] = [
    "Acme",
    "Borealis",
    "Cobalt",
    "Dunmore",
    "Everline",
    "Foxglove",
    "Granite",
    "Helix",
    "Ironwood",
    "Juno",
    "Kinetic",
    "Lattice",
    "Monarch",
    "Northwind",
    "Onyx",
    "Polaris",
];
const NAME_SECOND: [&str; 10] = [
    "Logistics",
    "Foods",
    "Systems",
    "Retail",
    "Labs",
    "Motors",
    "Pharma",
    "Textiles",
    "Studios",
    "Outfitters",
];

/// Rows the initial load writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSize {
    /// Customers.
    pub customers: u32,
    /// Sales.
    pub sales: u32,
}

impl Default for DemoSize {
    fn default() -> Self {
        Self {
            customers: 2_000,
            sales: 100_000,
        }
    }
}

/// A `customers` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// Primary key.
    pub customer_id: i64,
    /// Company name.
    pub name: String,
    /// One of [`REGIONS`].
    pub region: &'static str,
    /// One of [`SEGMENTS`].
    pub segment: &'static str,
    /// The batch that loaded it.
    pub batch: String,
}

/// A `sales` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    /// Primary key.
    pub sale_id: i64,
    /// The buyer.
    pub customer_id: i64,
    /// One of [`PRODUCTS`].
    pub product: &'static str,
    /// The buyer's region.
    pub region: &'static str,
    /// Calendar year.
    pub year: i64,
    /// `Q1`..`Q4`.
    pub quarter: &'static str,
    /// `YYYY-MM-DD`.
    pub sold_on: String,
    /// Units.
    pub quantity: i64,
    /// Total in cents.
    pub amount_cents: i64,
    /// The batch that loaded it.
    pub batch: String,
}

/// An `inventory` row: one product at one location, as of one batch's snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stock {
    /// One of [`PRODUCTS`].
    pub product: &'static str,
    /// One of [`LOCATIONS`].
    pub location: &'static str,
    /// Units on hand (0 is a stock-out).
    pub on_hand: i64,
    /// Reorder below this.
    pub reorder_level: i64,
    /// The snapshot's batch.
    pub batch: String,
}

/// The DDL, portable between SQLite and PostgreSQL.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS customers (
    customer_id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    region TEXT NOT NULL,
    segment TEXT NOT NULL,
    batch TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sales (
    sale_id BIGINT PRIMARY KEY,
    customer_id BIGINT NOT NULL,
    product TEXT NOT NULL,
    region TEXT NOT NULL,
    year INTEGER NOT NULL,
    quarter TEXT NOT NULL,
    sold_on TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL,
    batch TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sales_year_quarter ON sales (year, quarter);
CREATE INDEX IF NOT EXISTS sales_batch ON sales (batch);
CREATE TABLE IF NOT EXISTS inventory (
    product TEXT NOT NULL,
    location TEXT NOT NULL,
    on_hand BIGINT NOT NULL,
    reorder_level BIGINT NOT NULL,
    batch TEXT NOT NULL,
    PRIMARY KEY (batch, product, location)
);
CREATE TABLE IF NOT EXISTS update_log (
    table_name TEXT NOT NULL,
    batch TEXT NOT NULL,
    last_updated BIGINT NOT NULL,
    rows BIGINT NOT NULL,
    PRIMARY KEY (table_name, batch)
);
";

/// The tables the ETL loads, in load order.
pub const ETL_TABLES: [&str; 3] = ["customers", "sales", "inventory"];

fn rng_for(seed: u64, label: &str) -> fastrand::Rng {
    fastrand::Rng::with_seed(seed ^ xxhash_rust::xxh3::xxh3_64(label.as_bytes()))
}

fn quarter_of(month: u32) -> &'static str {
    match month {
        1..=3 => "Q1",
        4..=6 => "Q2",
        7..=9 => "Q3",
        _ => "Q4",
    }
}

fn customer(id: i64, rng: &mut fastrand::Rng, batch: &str) -> Customer {
    let segment = match rng.u32(0..100) {
        0..=14 => SEGMENTS[0],
        15..=44 => SEGMENTS[1],
        _ => SEGMENTS[2],
    };
    Customer {
        customer_id: id,
        name: format!(
            "{} {} {}",
            NAME_FIRST[rng.usize(..NAME_FIRST.len())],
            NAME_SECOND[rng.usize(..NAME_SECOND.len())],
            id
        ),
        region: REGIONS[rng.usize(..REGIONS.len())],
        segment,
        batch: batch.to_string(),
    }
}

/// The initial customers.
pub fn customers(size: DemoSize, batch: &str) -> Vec<Customer> {
    let mut rng = rng_for(1, "customers");
    (1..=i64::from(size.customers))
        .map(|id| customer(id, &mut rng, batch))
        .collect()
}

fn sale(
    sale_id: i64,
    customers: &[(i64, &'static str, &'static str)],
    day_ms: Millis,
    rng: &mut fastrand::Rng,
    batch: &str,
) -> Sale {
    let (customer_id, region, segment) = customers[rng.usize(..customers.len())];
    // A few products sell far more than the rest.
    let p = crate::model::num::to_usize(crate::model::num::f64_to_u64(
        rng.f64().powi(2) * PRODUCTS.len() as f64,
    )) % PRODUCTS.len();
    let (product, price) = PRODUCTS[p];
    let quantity = match segment {
        "Enterprise" => rng.i64(5..=40),
        "Mid-market" => rng.i64(2..=15),
        _ => rng.i64(1..=5),
    };
    let discount = rng.i64(0..=15);
    let (y, m, d) = civil_date(day_ms);
    Sale {
        sale_id,
        customer_id,
        product,
        region,
        year: y,
        quarter: quarter_of(m),
        sold_on: format!("{y:04}-{m:02}-{d:02}"),
        quantity,
        amount_cents: quantity * price * (100 - discount) / 100,
        batch: batch.to_string(),
    }
}

/// 2025-01-01T00:00:00Z: the first day of the initial sales.
const SALES_FROM_MS: Millis = 1_735_689_600_000;
/// 2026-11-01T00:00:00Z: the day after the last day of the initial sales.
const SALES_UNTIL_MS: Millis = 1_793_491_200_000;
const DAY_MS: Millis = 86_400_000;

/// The initial sales, spread over 2025-01-01 .. 2026-10-31.
pub fn sales(size: DemoSize, customers: &[Customer], batch: &str) -> Vec<Sale> {
    let mut rng = rng_for(2, "sales");
    let buyers: Vec<_> = customers
        .iter()
        .map(|c| (c.customer_id, c.region, c.segment))
        .collect();
    let days = (SALES_UNTIL_MS - SALES_FROM_MS) / DAY_MS;
    (1..=i64::from(size.sales))
        .map(|id| {
            let day = SALES_FROM_MS + rng.u64(0..days) * DAY_MS;
            sale(id, &buyers, day, &mut rng, batch)
        })
        .collect()
}

/// One inventory snapshot for a batch.
pub fn inventory(batch: &str) -> Vec<Stock> {
    let mut rng = rng_for(3, batch);
    let mut out = Vec::with_capacity(PRODUCTS.len() * LOCATIONS.len());
    for (product, price) in PRODUCTS {
        for location in LOCATIONS {
            let reorder_level = if price > 50_000 { 10 } else { 40 };
            let on_hand = if rng.u32(0..100) < 6 {
                0
            } else {
                rng.i64(1..=400)
            };
            out.push(Stock {
                product,
                location,
                on_hand,
                reorder_level,
                batch: batch.to_string(),
            });
        }
    }
    out
}

/// What one ETL batch appends: new customers (ids after `max_customer`), sales on the batch's day
/// (ids after `max_sale`, bought by existing or new customers), and a fresh inventory snapshot.
pub struct Batch {
    /// New customers.
    pub customers: Vec<Customer>,
    /// New sales.
    pub sales: Vec<Sale>,
    /// The new inventory snapshot.
    pub inventory: Vec<Stock>,
}

/// The rows of ETL batch `label`, landing at `at_ms`.
pub fn batch(label: &str, at_ms: Millis, max_customer: i64, max_sale: i64) -> Batch {
    let mut rng = rng_for(4, label);
    let new_customers: Vec<Customer> = (1..=rng.i64(3..=12))
        .map(|i| customer(max_customer + i, &mut rng, label))
        .collect();
    // Buyers: a deterministic sample of the existing ids plus the new customers. Regions and
    // segments of existing ids are re-derived the way the initial load made them.
    let mut buyers: Vec<(i64, &'static str, &'static str)> = new_customers
        .iter()
        .map(|c| (c.customer_id, c.region, c.segment))
        .collect();
    let mut initial = rng_for(1, "customers");
    for id in 1..=max_customer.min(500) {
        let c = customer(id, &mut initial, "");
        buyers.push((c.customer_id, c.region, c.segment));
    }
    let day = at_ms - at_ms % DAY_MS;
    let n = rng.i64(800..=1_600);
    let sales = (1..=n)
        .map(|i| sale(max_sale + i, &buyers, day, &mut rng, label))
        .collect();
    Batch {
        customers: new_customers,
        sales,
        inventory: inventory(label),
    }
}

/// Quotes a string for SQL text (doubling single quotes); used only for generated demo rows.
pub fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_deterministic_and_realistic() {
        let size = DemoSize {
            customers: 200,
            sales: 5_000,
        };
        let c1 = customers(size, "b0");
        let c2 = customers(size, "b0");
        assert_eq!(c1, c2);
        let s1 = sales(size, &c1, "b0");
        assert_eq!(s1, sales(size, &c2, "b0"));
        assert_eq!(s1.len(), 5_000);
        for s in &s1 {
            assert!(s.year == 2025 || s.year == 2026, "{s:?}");
            assert!(s.amount_cents > 0);
            assert!(REGIONS.contains(&s.region));
        }
        for q in ["Q1", "Q2", "Q3", "Q4"] {
            assert!(s1.iter().any(|s| s.quarter == q));
        }
        let inv = inventory("b0");
        assert_eq!(inv.len(), PRODUCTS.len() * LOCATIONS.len());
        assert!(inv.iter().any(|s| s.on_hand == 0), "some stock-outs");
        let b = batch("20261126-10:00", 1_795_687_200_000, 200, 5_000);
        assert!(!b.sales.is_empty() && !b.customers.is_empty());
        assert!(
            b.sales
                .iter()
                .all(|s| s.sold_on == "2026-11-26" && s.quarter == "Q4")
        );
        assert_eq!(b.sales[0].sale_id, 5_001);
    }

    #[test]
    fn sql_text_quotes() {
        assert_eq!(sql_text("O'Neil"), "'O''Neil'");
    }
}
