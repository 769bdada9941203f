//! A fault-injecting TCP relay for reliability tests: the worker connects to [`Relay::addr`]
//! instead of the real service, and the test breaks the path on demand.
//!
//! Faults are applied at the TCP level, so the client sees what a real network or broker failure
//! looks like: [`Relay::cut`] closes every open connection on both sides (the peer reads EOF, as
//! after a broker-side close or a dead proxy), and [`Relay::set_refuse`] makes the relay close
//! every new connection at once (a service that is down but whose port still answers, like a
//! load balancer with no backend). A relay that cannot reach its target closes the client too.
//!
//! Dropping the [`Relay`] stops accepting and cuts everything, so a failed test leaves no
//! forwarding task behind.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// State shared by the control handle, the accept loop and the forwarding tasks.
#[derive(Default)]
struct Shared {
    /// Close new connections at once instead of forwarding them.
    refuse: AtomicBool,
    /// Connections accepted and forwarded (refused ones are not counted).
    forwarded: AtomicU64,
    /// Connections refused while `refuse` was set.
    refused: AtomicU64,
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
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, target, shared.clone()));
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

    /// While `true`, every new connection is accepted and closed at once (the client reads EOF
    /// during its handshake); open connections are not touched — combine with [`Relay::cut`].
    pub fn set_refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Forwarded connections currently open.
    pub fn open_connections(&self) -> usize {
        self.shared.open().len()
    }

    /// Connections forwarded since the start (each reconnect adds one).
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Connections closed at once because the relay was refusing.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of descriptors or a reset during the handshake: try again shortly, without
                // spinning.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.refuse.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
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
            forward(client, target, &token).await;
            shared.open().remove(&id);
        });
    }
}

/// Copies both ways until either side closes or the connection is cut; dropping both streams
/// then closes them.
async fn forward(mut client: TcpStream, target: SocketAddr, cut: &CancellationToken) {
    let _ = client.set_nodelay(true);
    let mut upstream = tokio::select! {
        r = TcpStream::connect(target) => match r {
            Ok(s) => s,
            Err(_) => return,
        },
        _ = cut.cancelled() => return,
    };
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = cut.cancelled() => {}
    }
}
