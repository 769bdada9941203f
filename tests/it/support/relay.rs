//! A fault-injecting TCP relay for reliability tests: the worker connects to [`Relay::addr`]
//! instead of the real service, and the test breaks the path on demand.
//!
//! Faults are applied at the TCP level, so the client sees what a real network or broker failure
//! looks like:
//! - [`Relay::cut`] closes every open connection on both sides (the peer reads EOF, as after a
//!   broker-side close or a dead proxy);
//! - [`Relay::set_refuse`] closes the listening socket, so new connections are refused
//!   (`ECONNREFUSED`, as while a broker is stopped); the same port is bound again afterwards;
//! - [`Relay::set_jitter`] delays every chunk the target sends back by a random 0..max (a slow,
//!   jittery network or server), keeping the byte order.
//!
//! A relay that cannot reach its target closes the client too. Dropping the [`Relay`] stops
//! accepting and cuts everything, so a failed test leaves no forwarding task behind.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// State shared by the control handle, the accept loop and the forwarding tasks.
struct Shared {
    /// `true` while the listening socket is closed.
    refuse: watch::Sender<bool>,
    /// Connections accepted and forwarded.
    forwarded: AtomicU64,
    /// Longest random delay (µs) added to each chunk from the target; 0 for none.
    jitter_us: AtomicU64,
    /// Open forwarded connections, each with the token that cuts it.
    open: Mutex<HashMap<u64, CancellationToken>>,
}

impl Shared {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancellationToken>> {
        // A panicking forwarding task cannot leave the map inconsistent; take it over.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A TCP relay from an ephemeral local port to `target`, with fault controls.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Listens on `127.0.0.1:0` and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            refuse: watch::Sender::new(false),
            forwarded: AtomicU64::new(0),
            jitter_us: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, addr, target, shared.clone()));
        Ok(Relay {
            addr,
            shared,
            accept,
        })
    }

    /// Where clients connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection on both sides; new connections are still accepted (unless
    /// refusing). Returns how many connections were cut.
    pub fn cut(&self) -> usize {
        let cut: Vec<CancellationToken> = self.shared.open().drain().map(|(_, t)| t).collect();
        for t in &cut {
            t.cancel();
        }
        cut.len()
    }

    /// While `true` the listening socket is closed: connecting fails with "connection refused".
    /// Open connections are not touched (combine with [`Relay::cut`]). A connection accepted
    /// just before the switch is closed at once rather than forwarded.
    pub fn set_refuse(&self, refuse: bool) {
        self.shared.refuse.send_replace(refuse);
    }

    /// Delays every chunk the target sends by a random 0..`max` from now on (zero: none).
    pub fn set_jitter(&self, max: Duration) {
        let us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        self.shared.jitter_us.store(us, Ordering::SeqCst);
    }

    /// Forwarded connections currently open.
    pub fn open_connections(&self) -> usize {
        self.shared.open().len()
    }

    /// Connections forwarded since the start (each reconnect adds one).
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
) {
    let mut refuse = shared.refuse.subscribe();
    let mut listener = Some(listener);
    let mut next_id = 0u64;
    loop {
        if *refuse.borrow_and_update() {
            // Dropping the socket also resets connections still waiting in its backlog.
            listener = None;
            let _ = refuse.changed().await;
            continue;
        }
        if listener.is_none() {
            // The port was ours a moment ago; tokio binds with SO_REUSEADDR.
            match TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(l) = listener.as_ref() else { continue };
        let client = tokio::select! {
            r = l.accept() => match r {
                Ok((client, _)) => client,
                Err(_) => {
                    // Out of descriptors or a reset during the handshake: retry without spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = refuse.changed() => continue,
        };
        if *refuse.borrow() {
            drop(client);
            continue;
        }
        let id = next_id;
        next_id += 1;
        let token = CancellationToken::new();
        // Registered before the task runs, so a `cut` right after the accept still reaches it.
        shared.open().insert(id, token.clone());
        shared.forwarded.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        tokio::spawn(async move {
            forward(client, target, &token, &shared).await;
            shared.open().remove(&id);
        });
    }
}

/// Copies both ways until either side closes or the connection is cut; dropping both streams
/// then closes them.
async fn forward(client: TcpStream, target: SocketAddr, cut: &CancellationToken, shared: &Shared) {
    let _ = client.set_nodelay(true);
    let upstream = tokio::select! {
        r = TcpStream::connect(target) => match r {
            Ok(s) => s,
            Err(_) => return,
        },
        _ = cut.cancelled() => return,
    };
    let _ = upstream.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut up_rx, mut up_tx) = upstream.into_split();
    let back = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match up_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let max = shared.jitter_us.load(Ordering::SeqCst);
            if max > 0 {
                let us = rand::random_range(0..=max);
                tokio::time::sleep(Duration::from_micros(us)).await;
            }
            if client_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy(&mut client_rx, &mut up_tx) => {}
        _ = back => {}
        _ = cut.cancelled() => {}
    }
}
