//! The listeners the API is served on: the main one (plain HTTP or TLS),
//! and optionally a plain-HTTP one that carries only the Delphix-compatible
//! routes, because the SDK's `dvp upload` and `dvp download-logs` speak
//! plain HTTP only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use axum::Router;
use doppel_engine::Engine;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish its TLS handshake; a client that
/// stalls holds nothing but its own task.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to serve.
pub struct Listeners {
    /// The whole API.
    pub api: TcpListener,
    /// TLS on `api`; `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// A plain-HTTP listener for the Delphix-compatible routes only.
    pub delphix: Option<TcpListener>,
}

/// Serves until `shutdown` resolves, then lets open requests finish.
pub async fn serve_listeners(
    listeners: Listeners,
    engine: Arc<Engine>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = crate::router(engine.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let main = {
        let stop = stopped(stop_rx.clone());
        async move {
            match listeners.tls {
                // `tap_io` only so that axum provides the peer address
                // (`ConnectInfo<SocketAddr>`) for a listener of ours.
                Some(config) => {
                    let tls = TlsListener::new(listeners.api, config)?.tap_io(|_| {});
                    axum::serve(tls, api).with_graceful_shutdown(stop).await
                }
                None => {
                    axum::serve(listeners.api, api)
                        .with_graceful_shutdown(stop)
                        .await
                }
            }
        }
    };
    let delphix = {
        let stop = stopped(stop_rx);
        let app = delphix_router(engine).into_make_service_with_connect_info::<SocketAddr>();
        async move {
            match listeners.delphix {
                Some(l) => axum::serve(l, app).with_graceful_shutdown(stop).await,
                None => Ok(()),
            }
        }
    };
    let trigger = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let (main, delphix, ()) = tokio::join!(main, delphix, trigger);
    main.and(delphix)
}

/// The Delphix-compatible routes alone; anything else is a 404 in the
/// API's error shape. No bearer-token layer: these routes authenticate by
/// their own cookie sessions, and `/api/v1` paths are not served here at all.
pub fn delphix_router(engine: Arc<Engine>) -> Router {
    crate::delphix::routes(engine.clone())
        .fallback(crate::not_found)
        .with_state(engine)
}

/// TCP connections after their TLS handshake. Handshakes run in their own
/// tasks, so a slow client does not hold up the others.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: pass, as axum does.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            accept_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // axum drops the listener when shutdown begins: stop accepting.
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
