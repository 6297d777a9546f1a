//! Running the mock API: binding with a deep listen backlog, serving inside an existing tokio
//! runtime ([`serve`]), and [`MockServer`], which runs it on its own thread and runtime.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

use crate::arrival::{Arrival, StampedListener};
use crate::config::Config;
use crate::error::Error;
use crate::routes::{self, Hangs};

/// Listen backlog: deep enough that a burst of thousands of connects is not dropped into
/// SYN retries (the kernel caps it at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: u32 = 4096;

/// How long [`MockServer::shutdown`] lets in-flight requests finish before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Binds `addr` with a listen backlog of [`LISTEN_BACKLOG`]. Must be awaited inside a tokio
/// runtime.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let bind_error = |source| Error::Bind { addr, source };
    let socket =
        if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(bind_error)?;
    socket.set_reuseaddr(true).map_err(bind_error)?;
    socket.bind(addr).map_err(bind_error)?;
    socket.listen(LISTEN_BACKLOG).map_err(bind_error)
}

/// The axum router of the mock API for `config`, for embedding in another server.
/// Fails on an invalid config (see [`Config::validate`]) or, when some latency is non-zero, if
/// the router's timer thread cannot be started ([`Error::Runtime`]). That thread stops once the
/// router and every request it is serving are dropped.
pub fn router(config: Config) -> Result<Router, Error> {
    // Requests held by the hang fault stay held as long as this router serves.
    built(config).map(|(router, _hangs)| router)
}

fn built(config: Config) -> Result<(Router, Hangs), Error> {
    config.validate()?;
    routes::build(config)
}

/// Serves the mock API on `listener` until `shutdown` completes, then lets in-flight requests
/// finish. Runs inside the caller's tokio runtime; `config.addr` is ignored (the listener is
/// already bound; see [`bind`]). Logs `listening on http://ADDR` at info level.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (app, hangs) = built(config)?;
    serve_router(listener, app, hangs, shutdown).await
}

async fn serve_router(
    listener: TcpListener,
    app: Router,
    hangs: Hangs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // Once the server stops, hung requests end, so that the graceful shutdown does not wait
    // for answers the hang fault never gives.
    let shutdown = async move {
        shutdown.await;
        hangs.release();
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("listening on http://{addr}");
    }
    // The rate limit counts requests when they arrived, not when the server, busy or
    // descheduled, got round to them (see `arrival`).
    let listener = StampedListener::new(listener);
    axum::serve(listener, app.into_make_service_with_connect_info::<Arrival>())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Serve)
}

/// A mock API server running on its own thread with its own tokio runtime (two workers),
/// for tests, examples and blocking code. Dropping it shuts it down and joins the thread.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl MockServer {
    /// Validates `config`, binds `config.addr` and starts serving; returns once the server
    /// accepts connections.
    pub fn start(config: Config) -> Result<MockServer, Error> {
        let addr = config.addr;
        let (app, hangs) = built(config)?;
        let (ready_tx, ready_rx) = mpsc::channel::<Result<SocketAddr, Error>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fanout-mock-api".to_owned())
            .spawn(move || run(addr, app, hangs, ready_tx, stop_rx))
            .map_err(Error::Runtime)?;
        match ready_rx.recv() {
            Ok(Ok(addr)) => Ok(MockServer {
                addr,
                url: format!("http://{addr}"),
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => match thread.join() {
                Ok(Err(error)) => Err(error),
                _ => Err(Error::ThreadPanicked),
            },
        }
    }

    /// Base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, lets in-flight requests finish (up to 5 s) and joins the
    /// server thread.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| Error::ThreadPanicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Err(error) = self.stop_and_join() {
            tracing::warn!("mock API server stopped with an error: {error}");
        }
    }
}

/// Body of the server thread.
fn run(
    addr: SocketAddr,
    app: Router,
    hangs: Hangs,
    ready: mpsc::Sender<Result<SocketAddr, Error>>,
    stop: oneshot::Receiver<()>,
) -> Result<(), Error> {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fanout-mock-api-worker")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(Error::Runtime(error)));
            return Ok(());
        }
    };
    runtime.block_on(async move {
        let listener = match bind(addr).await {
            Ok(listener) => listener,
            Err(error) => {
                let _ = ready.send(Err(error));
                return Ok(());
            }
        };
        let local = match listener.local_addr() {
            Ok(local) => local,
            Err(source) => {
                let _ = ready.send(Err(Error::Bind { addr, source }));
                return Ok(());
            }
        };
        let (grace_tx, grace_rx) = oneshot::channel::<()>();
        let server = serve_router(listener, app, hangs, async move {
            let _ = grace_rx.await;
        });
        tokio::pin!(server);
        if ready.send(Ok(local)).is_err() {
            return Ok(());
        }
        tokio::select! {
            result = &mut server => return result,
            // A dropped sender also stops the server.
            _ = stop => {}
        }
        let _ = grace_tx.send(());
        // Past the grace period, in-flight requests are dropped with the runtime.
        tokio::time::timeout(SHUTDOWN_GRACE, server).await.unwrap_or(Ok(()))
    })
}
