//! Async HTTP for the scenarios' native-async versions: [`AsyncApi`], the same requests and the
//! same [`HttpError`]s as the blocking [`Api`], over one async client.
//!
//! **One client per run.** A blocking worker owns a connection (its `ureq` agent, see
//! [`crate::http`]); futures share one client, whose connection pool hands each request an
//! idle keep-alive connection or opens a new one. [`AsyncApi`] is that client plus the base
//! URL and the token, cheap to clone into every future. The pool keeps every idle connection
//! (no per-host cap), so 200 futures in flight leave 200 connections for the next 200.
//!
//! **Which client.** hyper-util's pooled client with hyper-rustls, the layer that `reqwest`
//! is built on, without `reqwest`'s URL parsing, redirect and retry layers: on this 2-core
//! machine, where the client and the mock server compete for the cores, those layers cost
//! ~40 µs of CPU per request (200 requests: 26 ms of client CPU against 18 ms), which is wall
//! time when 200 requests leave at once. TLS goes through rustls with the `ring` provider and
//! the Mozilla roots (`webpki-roots`), all from crates.io: `https://` URLs work unchanged, and
//! the build needs neither OpenSSL headers nor cmake. The mock API is plain HTTP.
//!
//! A client's connections belong to the runtime whose futures opened them: build and use an
//! `AsyncApi` on one executor, as the scenarios do (one per run).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;

use fanout::limit::Scope;

use crate::http::{Answer, Api, HttpError, RequestStats, monotonic_ns};
use crate::retry::{self, Decision, Failure, Jitter, RETRY_AFTER, RETRY_AFTER_MS, RetryPolicy};

/// How long a request may take, connecting included, before it fails; the slowest route waits
/// 3 s at time scale 1 (the blocking client allows the same per phase).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How much of an error body an [`HttpError`] keeps (as the blocking client).
const ERROR_BODY_LIMIT: usize = 300;

type Pool = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The mock API for futures: one client (one connection pool), a base URL and a token.
/// Clones share the client.
#[derive(Clone)]
pub struct AsyncApi {
    inner: Arc<Inner>,
}

struct Inner {
    client: Pool,
    base: String,
    /// The same retry policy as the blocking [`Api`] it was made from.
    retry: RetryPolicy,
    /// Retries made through this client (all its clones).
    retries: AtomicU64,
    /// Attempts sent through this client, retries included.
    attempts: AtomicU64,
    /// `429` answers this client got.
    responses_429: AtomicU64,
    /// When the first and the last attempt left (`CLOCK_MONOTONIC` nanoseconds; `u64::MAX` and
    /// 0 before the first).
    first_sent_ns: AtomicU64,
    last_sent_ns: AtomicU64,
    /// `Bearer <token>`, marked sensitive so that no debug output shows it.
    auth: HeaderValue,
}

impl std::fmt::Debug for AsyncApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncApi").field("base", &self.inner.base).finish_non_exhaustive()
    }
}

impl AsyncApi {
    /// A client for the server and token of `api`. It needs no runtime until it sends.
    pub fn new(api: &Api) -> Result<Self, HttpError> {
        let setup = |message: String| HttpError::Transport {
            request: "building the HTTP client".to_owned(),
            message,
        };
        let mut auth = HeaderValue::try_from(format!("Bearer {}", api.token().expose()))
            .map_err(|_| setup("the token is not a valid header value".to_owned()))?;
        auth.set_sensitive(true);
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(REQUEST_TIMEOUT));
        // Let `https://` URLs through to the TLS layer.
        http.enforce_http(false);
        let https = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|error| setup(format!("TLS set-up: {error}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            // Keep every idle connection: one per future in flight, reused by the next ones.
            .pool_max_idle_per_host(usize::MAX)
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                base: api.base().to_owned(),
                retry: api.retry(),
                retries: AtomicU64::new(0),
                attempts: AtomicU64::new(0),
                responses_429: AtomicU64::new(0),
                first_sent_ns: AtomicU64::new(u64::MAX),
                last_sent_ns: AtomicU64::new(0),
                auth,
            }),
        })
    }

    /// How many times requests through this client (and its clones) were retried.
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    /// What the requests through this client (and its clones) did so far.
    pub fn stats(&self) -> RequestStats {
        let inner = &self.inner;
        let first = inner.first_sent_ns.load(Ordering::Relaxed);
        let last = inner.last_sent_ns.load(Ordering::Relaxed);
        RequestStats {
            attempts: inner.attempts.load(Ordering::Relaxed),
            retries: inner.retries.load(Ordering::Relaxed),
            responses_429: inner.responses_429.load(Ordering::Relaxed),
            first_sent_ns: (first != u64::MAX).then_some(first),
            last_sent_ns: (last != 0).then_some(last),
        }
    }

    /// `GET path`, the body as bytes.
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, HttpError> {
        self.send(Method::GET, path, &[], Bytes::new()).await.map(|answer| answer.body)
    }

    /// `GET path`, the body decoded from JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, HttpError> {
        self.send(Method::GET, path, &[], Bytes::new()).await?.json(|| format!("GET {path}"))
    }

    /// `POST path` with extra `headers` and `body`.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, HttpError> {
        self.send(Method::POST, path, headers, Bytes::from(body)).await
    }

    /// Sends the request, retrying it as [`crate::retry`] decides: the same rules as the
    /// blocking client (see [`Api`]), with the waits on the runtime's timer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, HttpError> {
        let keyed = headers.iter().any(|(name, _)| {
            name.eq_ignore_ascii_case("idempotency-key") || name.eq_ignore_ascii_case("x-attachment-name")
        });
        let idempotent = retry::is_idempotent(method.as_str(), keyed);
        let mut retrier = self.inner.retry.start(None, Jitter::from_entropy());
        // As the blocking client: a permit per attempt with a per-request limit, per retry with
        // a per-job one (the executor took the first attempt's), waited for on the runtime.
        let per_request = fanout::limit::ambient().is_some_and(|source| source.scope() == Scope::PerRequest);
        loop {
            if per_request || retrier.failed_attempts() > 0 {
                fanout_async::acquire().await;
            }
            let now = monotonic_ns();
            let inner = &self.inner;
            inner.attempts.fetch_add(1, Ordering::Relaxed);
            inner.first_sent_ns.fetch_min(now, Ordering::Relaxed);
            inner.last_sent_ns.fetch_max(now, Ordering::Relaxed);
            // `Bytes` clones share the buffer: a retry resends the same body without a copy.
            let (error, failure) = match self.send_once(method.clone(), path, headers, body.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(failed) => failed,
            };
            if let Failure::Status { status: 429, retry_after } = failure {
                inner.responses_429.fetch_add(1, Ordering::Relaxed);
                // As the blocking client: one 429 pauses the executor's whole limit, if any.
                if let Some(wait) = retry_after {
                    fanout::limit::pause(wait);
                }
            }
            match retrier.on_failure(&failure, idempotent, Instant::now()) {
                Decision::Retry(wait) => {
                    self.inner.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                }
                Decision::GiveUp(_) => return Err(error),
            }
        }
    }

    /// One attempt; a failure comes with how [`crate::retry`] classifies it.
    async fn send_once(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, (HttpError, Failure)> {
        let request = || format!("{method} {path}");
        let fail = |message: String| HttpError::Transport { request: request(), message };
        let refused = |message: String| (fail(message), Failure::Invalid);
        let inner = &self.inner;
        let uri: Uri = format!("{}{path}", inner.base)
            .parse()
            .map_err(|error| refused(format!("invalid URL: {error}")))?;
        let mut builder =
            Request::builder().method(method.clone()).uri(uri).header(AUTHORIZATION, inner.auth.clone());
        for &(name, value) in headers {
            builder = builder.header(name, value);
        }
        let outgoing =
            builder.body(Full::new(body)).map_err(|error| refused(format!("invalid request: {error}")))?;
        let exchange = async {
            let response = inner.client.request(outgoing).await.map_err(|error| {
                // Nothing was sent when no connection opened.
                let failure = if error.is_connect() { Failure::Connect } else { Failure::Transport };
                (fail(describe(&error)), failure)
            })?;
            let status = response.status().as_u16();
            let header = |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok());
            let wait = retry::retry_after(header(RETRY_AFTER), header(RETRY_AFTER_MS), SystemTime::now());
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| (fail(describe(&error)), Failure::Transport))?;
            Ok::<_, (HttpError, Failure)>((status, wait, body.to_bytes()))
        };
        let (status, wait, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| (fail(format!("no answer within {REQUEST_TIMEOUT:?}")), Failure::Timeout))??;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&body);
            let body = text.chars().take(ERROR_BODY_LIMIT).collect();
            let failure = Failure::Status { status, retry_after: wait };
            return Err((HttpError::Status { request: request(), status, body }, failure));
        }
        Ok(Answer { status, body: body.into() })
    }
}

/// The error and its causes on one line.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use fanout_async::AsyncExecutor;

    use super::*;
    use crate::http::Secret;

    #[test]
    fn transport_errors_name_the_request_not_the_token() {
        // Port 1 on loopback: nothing listens there.
        let api = Api::new("http://127.0.0.1:1", Secret::new("s3cret-token"));
        let client = AsyncApi::new(&api);
        assert!(!format!("{client:?}").contains("s3cret-token"));
        let executor = AsyncExecutor::new(1).ok();
        let answer = executor.and_then(|executor| {
            let client = client.ok()?;
            executor.block_on(async move { client.get_bytes("/health").await }).ok()
        });
        let error = answer.and_then(Result::err).map(|e| e.to_string()).unwrap_or_default();
        assert!(error.starts_with("GET /health: "), "{error}");
        assert!(!error.contains("s3cret-token"), "{error}");
    }
}
