//! The endpoint over real sockets: routing, malformed requests, the limits, and merging the
//! route into another router.

use axum::extract::State;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::bus::LocalBus;
use crate::engine::Engine;
use crate::instance::InstanceConfig;
use crate::model::catalog::Catalog;
use crate::model::clock::ManualClock;
use crate::warehouse::MemoryWarehouse;
use std::io;

/// An instance with an in-memory bus and warehouse.
async fn embedded_instance() -> Instance {
    let catalog = Arc::new(Catalog::bundled().unwrap());
    let clock = ManualClock::new(1_795_687_230_000);
    let bus = LocalBus::in_memory(catalog.tables().clone(), clock.clone()).unwrap();
    let warehouse = Arc::new(MemoryWarehouse::for_tables(
        catalog.tables(),
        Duration::ZERO,
    ));
    let engine = Engine::builder(catalog, warehouse.clone())
        .clock(clock)
        .build()
        .unwrap();
    Instance::new(
        engine,
        Arc::new(bus),
        warehouse,
        None,
        InstanceConfig::default(),
    )
}

/// The endpoint of an embedded instance, on a free loopback port.
async fn endpoint_on_loopback() -> (SocketAddr, watch::Sender<bool>, JoinHandle<()>) {
    let listener = bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr();
    let (stop, shutdown) = watch::channel(false);
    let instance = embedded_instance().await;
    (addr, stop, tokio::spawn(listener.serve(instance, shutdown)))
}

/// Sends `request` on a new connection and reads all that comes back until the server closes.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn requests_route_by_method_and_path() {
    let (addr, stop, server) = endpoint_on_loopback().await;
    let status = async |request: &str| {
        let answer = exchange(addr, request.as_bytes()).await;
        answer.lines().next().unwrap_or_default().to_string()
    };
    for (request, expected) in [
        (
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            "HTTP/1.1 200 OK",
        ),
        ("GET /metrics?x=1 HTTP/1.0\r\n\r\n", "HTTP/1.0 200 OK"),
        ("HEAD /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK"),
        ("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK"),
        ("GET /nope HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        ("HEAD /nope HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        (
            "POST /metrics HTTP/1.1\r\n\r\n",
            "HTTP/1.1 405 Method Not Allowed",
        ),
        ("PUT / HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
        (
            "DELETE /nope HTTP/1.1\r\n\r\n",
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (
            "BREW /metrics HTTP/1.1\r\n\r\n",
            "HTTP/1.1 405 Method Not Allowed",
        ),
    ] {
        assert_eq!(status(request).await, expected, "{request:?}");
    }
    for garbage in [
        "GARBAGE\r\n\r\n",
        "GET /metrics\r\n\r\n",
        "GET  /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/2.0\r\n\r\n",
        "GET /metrics HTTP/1.1 extra\r\n\r\n",
        "G(T /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        "GET /m\x01 HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(
            status(garbage).await,
            "HTTP/1.1 400 Bad Request",
            "{garbage:?}"
        );
    }

    let scrape = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(
        scrape.contains(&format!("\r\nContent-Type: {CONTENT_TYPE}\r\n")),
        "{scrape}"
    );
    assert!(scrape.contains("\r\nConnection: close\r\n"), "{scrape}");
    assert!(scrape.contains("\r\n\r\n# HELP freshcache_"), "{scrape}");
    let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert!(head.ends_with("\r\n\r\n"), "no body after HEAD: {head}");
    let refused = exchange(addr, b"POST /nope HTTP/1.1\r\n\r\n").await;
    assert!(refused.contains("\r\nAllow: GET, HEAD\r\n"), "{refused}");
    assert!(
        refused.ends_with("\r\n\r\nonly GET and HEAD are served\n"),
        "{refused}"
    );
    let missing = exchange(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
    assert!(
        missing.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"),
        "{missing}"
    );
    assert!(
        missing.ends_with("\r\n\r\nnot found; metrics are at /metrics\n"),
        "{missing}"
    );

    stop.send_replace(true);
    server.await.unwrap();
}

#[tokio::test]
async fn the_metrics_route_merges_into_another_router() {
    // Another server's application, with state of its own.
    let app: Router = Router::new()
        .route(
            "/v1/ping",
            get(|State(answer): State<&'static str>| async move { answer }),
        )
        .merge(router(Arc::new(Exporter::new(embedded_instance().await))))
        .with_state("pong");
    let listener = bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr();
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(listener.listener.serve(app, LIMITS, shutdown));

    let ping = exchange(addr, b"GET /v1/ping HTTP/1.1\r\n\r\n").await;
    assert!(ping.ends_with("\r\n\r\npong"), "{ping}");
    let scrape = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(scrape.starts_with("HTTP/1.1 200 OK\r\n"), "{scrape}");
    assert!(scrape.contains(CONTENT_TYPE), "{scrape}");
    let post = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
    stop.send_replace(true);
    server.await.unwrap();
}

/// The endpoint of an embedded instance on a free loopback port, within `limits`.
async fn limited_endpoint(limits: Limits) -> (SocketAddr, watch::Sender<bool>, JoinHandle<()>) {
    let listener = bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr();
    let app = endpoint(Arc::new(Exporter::new(embedded_instance().await)));
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(listener.listener.serve(app, limits, shutdown));
    (addr, stop, server)
}

#[tokio::test]
async fn a_client_that_sends_no_head_is_closed_after_the_read_timeout() {
    let read_timeout = Duration::from_millis(200);
    let (addr, stop, server) = limited_endpoint(Limits {
        read_timeout,
        ..LIMITS
    })
    .await;
    let started = std::time::Instant::now();
    for request in [&b""[..], b"GET /metrics HTTP/1.1\r\nHost: x"] {
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(READ_TIMEOUT, slow.read_to_end(&mut answer))
            .await
            .expect("closed")
            .unwrap();
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    }
    assert!(started.elapsed() >= read_timeout, "{:?}", started.elapsed());
    stop.send_replace(true);
    server.await.unwrap();
}

#[tokio::test]
async fn a_client_that_does_not_take_the_answer_is_given_up_on() {
    // A pipe that holds 16 bytes and is never read: writing more waits for the reader.
    let (_reader, writer) = tokio::io::duplex(16);
    let limit = Duration::from_millis(100);
    let mut io = crate::http::WriteDeadline::new(writer, limit);
    let started = std::time::Instant::now();
    let error = io.write_all(&[b'x'; 64]).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= limit, "{:?}", started.elapsed());
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let (addr, stop, server) = limited_endpoint(Limits {
        connections: 2,
        ..LIMITS
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(READ_TIMEOUT / 2, extra.read_to_end(&mut answer))
        .await
        .expect("closed long before the read timeout")
        .unwrap();
    assert!(answer.is_empty());
    // Those held are still served.
    for mut client in held {
        client
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut scrape = Vec::new();
        client.read_to_end(&mut scrape).await.unwrap();
        assert!(scrape.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
    stop.send_replace(true);
    server.await.unwrap();
}
