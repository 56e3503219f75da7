//! A loopback TCP proxy for fault injection: [`Proxy::cut`] drops every open connection at once
//! (a network cut mid-stream), [`Proxy::set_target`] with `None` refuses new connections (the
//! far side is unreachable), and a new target moves it (a TPM restarted on another port).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug)]
struct Shared {
    target: Mutex<Option<SocketAddr>>,
    /// Bumped by `cut`; each relay ends when it changes.
    cuts: watch::Sender<u64>,
}

/// A running proxy; it stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

impl Proxy {
    /// Listens on `listen` (port 0 for any) and relays to `target`.
    pub async fn start(listen: SocketAddr, target: Option<SocketAddr>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        Ok(Self::serve(listener, target))
    }

    fn serve(listener: TcpListener, target: Option<SocketAddr>) -> Self {
        let address = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (cuts, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            cuts,
        });
        let relay_shared = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let target = *relay_shared
                    .target
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let Some(target) = target else {
                    // Unreachable: the client sees its connection closed at once.
                    drop(inbound);
                    continue;
                };
                let mut cut = relay_shared.cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            address,
            shared,
            task,
        }
    }

    /// Two proxies on consecutive ports (swtpm's TCTI uses `port` and `port + 1`) relaying to
    /// `target_port` and `target_port + 1`.
    pub async fn start_pair(target_port: Option<u16>) -> anyhow::Result<(Self, Self)> {
        for _ in 0..50 {
            let first = TcpListener::bind("127.0.0.1:0").await?;
            let port = first.local_addr()?.port();
            let Some(next) = port.checked_add(1) else {
                continue;
            };
            let Ok(second) = TcpListener::bind(("127.0.0.1", next)).await else {
                continue;
            };
            let targets = pair_targets(target_port);
            return Ok((
                Self::serve(first, targets.0),
                Self::serve(second, targets.1),
            ));
        }
        anyhow::bail!("no two consecutive free loopback ports in 50 tries")
    }

    /// Where new connections go; `None` refuses them. Open connections are left alone.
    pub fn set_target(&self, target: Option<SocketAddr>) {
        *self
            .shared
            .target
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = target;
    }

    /// Drops every open connection.
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|generation| *generation += 1);
    }
}

/// Targets for a proxy pair in front of a swtpm on `port` (None: refuse).
pub fn pair_targets(port: Option<u16>) -> (Option<SocketAddr>, Option<SocketAddr>) {
    match port {
        Some(port) => (
            Some(SocketAddr::from(([127, 0, 0, 1], port))),
            port.checked_add(1)
                .map(|ctrl| SocketAddr::from(([127, 0, 0, 1], ctrl))),
        ),
        None => (None, None),
    }
}

/// The TCP port in a swtpm TCTI string (`swtpm:host=127.0.0.1,port=2321`).
pub fn tcti_port(tcti: &str) -> Option<u16> {
    tcti.split([',', ':'])
        .find_map(|part| part.strip_prefix("port="))
        .and_then(|port| port.parse().ok())
}
