//! A TCP fault proxy on loopback, between one instance and Redis, controlled in-process by the
//! checker: pass bytes through, delay them, blackhole them (connections stay open, nothing is
//! forwarded — what a network partition looks like to both ends; held bytes flow once it heals,
//! as TCP would retransmit them), or close every connection at once (as a crashed middlebox
//! would).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward at once.
    Pass,
    /// Forward each chunk this much later.
    Delay(Duration),
    /// Forward nothing; keep the connections.
    Blackhole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    mode: Mode,
    /// Bumped to reset every connection open at that moment.
    generation: u64,
}

/// The proxy; it stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<watch::Sender<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, _) = watch::channel(State {
            mode: Mode::Pass,
            generation: 0,
        });
        let state = Arc::new(tx);
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let state = accept_state.subscribe();
                tokio::spawn(connection(client, upstream, state));
            }
        });
        Ok(FaultProxy { addr, state, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets what happens to bytes from now on (held bytes of a blackhole flow on when it ends).
    pub fn set(&self, mode: Mode) {
        self.state.send_modify(|s| s.mode = mode);
    }

    /// Resets every open connection (new ones are accepted).
    pub fn reset_all(&self) {
        self.state.send_modify(|s| s.generation += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Ends every connection task too (they watch the generation).
        self.state.send_modify(|s| s.generation += 1);
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, mut state: watch::Receiver<State>) {
    let generation = state.borrow().generation;
    // A partitioned client cannot connect either: wait while blackholed.
    while state.borrow().mode == Mode::Blackhole {
        if state.changed().await.is_err() {
            return;
        }
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        // Redis down: the client sees its connection closed, as it would.
        return;
    };
    let _ = client.set_nodelay(true); // latency only; failure changes nothing that matters here
    let _ = server.set_nodelay(true); // as above
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, state.clone(), generation);
    let down = pump(sr, cw, state.clone(), generation);
    // When either direction ends (closed, or reset), both halves are dropped: the client sees
    // its connection closed and reconnects, as after a crashed middlebox.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Copies from `from` to `to` under the proxy's mode; returns true when ended by a reset.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    generation: u64,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            },
            _ = reset(&mut state, generation) => return true,
        };
        // Hold the chunk while blackholed; delay it when delaying.
        loop {
            let s = *state.borrow();
            if s.generation != generation {
                return true;
            }
            match s.mode {
                Mode::Pass => break,
                Mode::Delay(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => break,
                        _ = reset(&mut state, generation) => return true,
                    }
                }
                Mode::Blackhole => {
                    if state.changed().await.is_err() {
                        return true;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return false;
        }
    }
}

/// Completes when the generation moves past `generation` (or the proxy is gone).
async fn reset(state: &mut watch::Receiver<State>, generation: u64) {
    loop {
        if state.borrow_and_update().generation != generation {
            return;
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(c: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        c.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(within, c.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf.to_vec()),
            _ => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_blackholes_heals_and_resets() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut c, Duration::from_secs(5)).await.as_deref(),
            Some(&b"ping"[..])
        );
        proxy.set(Mode::Blackhole);
        assert_eq!(roundtrip(&mut c, Duration::from_millis(300)).await, None);
        proxy.set(Mode::Pass);
        // The held request flows once healed.
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"ping");
        proxy.reset_all();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the connection was closed by the reset");
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(roundtrip(&mut c, Duration::from_secs(5)).await.is_some());
    }
}
