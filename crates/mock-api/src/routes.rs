//! The HTTP surface: the axum router, the body limit, bearer-token auth, the per-route
//! middleware (fault injection and latency), the handlers and the new system's in-memory store
//! (created tickets and attachments, the running summary).
//!
//! A request goes through, in order: the body limit (`413` for a declared `Content-Length`
//! over it, before anything else), auth (`401`), then, on its route, the fault injector's
//! admission (the concurrency cap's `503`, the rate limit's `429`), its fate (see
//! [`crate::faults`]), the route's latency (times the slow factor for the slow tail), an
//! injected fault striking before the handler, the handler, and a fault striking after it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use http_body::Frame;
use http_body_util::BodyExt;
use serde_json::json;
use tokio::sync::watch;

use crate::arrival::Arrival;
use crate::checksum::{self, Accumulator};
use crate::config::{Config, Route};
use crate::data::{Dataset, ITEM_ID_MAX, QUEUES, Ticket};
use crate::error::Error;
use crate::faults::{self, FaultPoint, Injector, Refusal};
use crate::timer::Timer;

/// Ids the new system gives to created tickets start here (far from every old id).
const FIRST_NEW_TICKET_ID: u64 = 5_000_001;
/// Ids the new system gives to uploaded attachments start here.
const FIRST_NEW_ATTACHMENT_ID: u64 = 7_000_001;
/// Longest accepted `X-Attachment-Name`, in bytes.
const MAX_ATTACHMENT_NAME: usize = 255;
/// Name of the latency timer's thread (at most 15 bytes, so Linux shows it whole).
const TIMER_THREAD: &str = "mock-api-timer";
/// Bytes of a body over the limit that are still read and thrown away before answering `413`,
/// so that a client still sending gets to read the answer instead of a connection reset (a
/// server that closes with unread bytes makes the kernel send a reset). Past them the server
/// answers and closes at once.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
/// Name of the header with the precise wait of a `429` or `503`, in milliseconds.
pub(crate) const RETRY_AFTER_MS: &str = "retry-after-ms";

type Shared = Arc<AppState>;

struct AppState {
    config: Config,
    dataset: Dataset,
    store: Mutex<Store>,
    /// The precise timer of the latencies; `None` when every applied latency is zero. Its
    /// thread stops when the last clone of the state (router or request) is dropped.
    timer: Option<Timer>,
    /// Fault injection, admission and the in-flight count.
    injector: Injector,
    /// Turns `true` when the server stops: hung requests then end (see [`Hangs`]).
    hangs_released: watch::Sender<bool>,
}

/// The handle that ends the requests the hang fault holds, when the server stops serving:
/// without it a graceful shutdown would wait for answers that never come.
pub(crate) struct Hangs(Shared);

impl Hangs {
    /// Ends every hung request, and every later one at once: each closes its connection
    /// without an answer.
    pub(crate) fn release(&self) {
        self.0.hangs_released.send_replace(true);
    }
}

impl AppState {
    /// Waits `factor` times the applied latency of `route` without blocking other requests,
    /// on the precise timer (microsecond latencies; tokio's timer would round up to whole
    /// milliseconds).
    async fn delay(&self, route: Route, factor: f64) {
        let latency = self.config.applied_latency(route);
        if latency.is_zero() {
            return;
        }
        let latency = if factor == 1.0 {
            latency
        } else {
            Duration::try_from_secs_f64(latency.as_secs_f64() * factor).unwrap_or(Duration::MAX)
        };
        if let Some(timer) = &self.timer {
            timer.sleep(latency).await;
        }
    }

    /// The store, locked. Held only for a few map operations, never across an await.
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The new system: tickets created through `POST /new/tickets` and their attachments.
#[derive(Default)]
struct Store {
    new_id_by_old_id: HashMap<u64, u64>,
    tickets: HashMap<u64, NewTicket>,
    created_tickets: u64,
    created_attachments: u64,
    summary: Accumulator,
}

struct NewTicket {
    old_id: u64,
    attachments: HashMap<String, StoredAttachment>,
}

#[derive(Clone, Copy)]
struct StoredAttachment {
    id: u64,
    size: u64,
}

impl Store {
    /// Creates the ticket of `old_id` unless it exists; returns (created, new id).
    fn create_ticket(&mut self, old_id: u64, digest: u64) -> (bool, u64) {
        if let Some(&id) = self.new_id_by_old_id.get(&old_id) {
            return (false, id);
        }
        let id = FIRST_NEW_TICKET_ID + self.created_tickets;
        self.created_tickets += 1;
        self.new_id_by_old_id.insert(old_id, id);
        self.tickets.insert(id, NewTicket { old_id, attachments: HashMap::new() });
        self.summary.add_ticket(digest);
        (true, id)
    }

    /// Adds an attachment unless one with that name exists; `None` for an unknown ticket.
    fn add_attachment(
        &mut self,
        ticket_id: u64,
        name: &str,
        size: u64,
        digest: u64,
    ) -> Option<(bool, StoredAttachment)> {
        let ticket = self.tickets.get_mut(&ticket_id)?;
        match ticket.attachments.entry(name.to_owned()) {
            Entry::Occupied(existing) => Some((false, *existing.get())),
            Entry::Vacant(slot) => {
                let stored =
                    StoredAttachment { id: FIRST_NEW_ATTACHMENT_ID + self.created_attachments, size };
                self.created_attachments += 1;
                slot.insert(stored);
                self.summary.add_attachment(digest);
                Some((true, stored))
            }
        }
    }
}

/// An error answer: a status and a JSON body `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
}

/// `413` for a body over `limit` bytes.
fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "request body is larger than the server's limit of {limit} bytes; send a smaller body or start the server with a larger body_limit"
        ),
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Builds the router of a validated `config` (see [`crate::router`]); fails only if the timer
/// thread cannot be started.
pub(crate) fn build(config: Config) -> Result<(Router, Hangs), Error> {
    let body_limit = config.body_limit;
    let needs_timer = Route::ALL.iter().any(|&route| !config.applied_latency(route).is_zero());
    let timer = if needs_timer { Some(Timer::new(TIMER_THREAD).map_err(Error::Runtime)?) } else { None };
    let injector = Injector::new(config.faults.clone(), config.seed, config.time_scale);
    let state = Arc::new(AppState {
        dataset: Dataset::new(config.seed),
        config,
        store: Mutex::new(Store::default()),
        timer,
        injector,
        hangs_released: watch::Sender::new(false),
    });
    let on = |route: Route, endpoint: MethodRouter<Shared>| {
        endpoint.route_layer(middleware::from_fn_with_state((state.clone(), route), per_route))
    };
    let protected = Router::new()
        .route("/api/items/{id}", on(Route::Items, get(item)))
        .route("/old/queues/{queue}/tickets", on(Route::QueueTickets, get(queue_tickets)))
        .route("/old/tickets/{id}", on(Route::TicketDetails, get(ticket)))
        .route("/old/tickets/{id}/attachments", on(Route::AttachmentList, get(attachment_list)))
        .route("/old/attachments/{id}", on(Route::AttachmentDownload, get(attachment_download)))
        .route("/new/tickets", on(Route::PostTicket, post(post_ticket)))
        .route("/new/tickets/summary", on(Route::Summary, get(summary)))
        .route("/new/tickets/{id}/attachments", on(Route::PostAttachment, post(post_attachment)))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let router = Router::new()
        .route("/health", on(Route::Health, get(health)))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), limit_body))
        .with_state(state.clone());
    Ok((router, Hangs(state)))
}

/// Answers `413` at once to a request that declares a body over the limit (after draining
/// up to [`DRAIN_LIMIT`] bytes of it, so the client reads the answer).
async fn limit_body(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let limit = state.config.body_limit;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > u64::try_from(limit).unwrap_or(u64::MAX)) {
        drain(request.into_body(), DRAIN_LIMIT).await;
        return too_large(limit).into_response();
    }
    next.run(request).await
}

/// Reads and throws away up to `budget` bytes of `body` (stops early at its end or an error).
///
/// Every answer to a request whose body was not read goes through here first: hyper closes a
/// connection whose request body is left unread, and a client that already pooled it for its
/// next request would meet a closed connection (or the kernel's reset) instead of an answer.
async fn drain(mut body: Body, budget: usize) {
    let mut read = 0usize;
    while read <= budget {
        match body.frame().await {
            Some(Ok(frame)) => {
                read = read.saturating_add(frame.data_ref().map_or(0, Bytes::len));
            }
            Some(Err(_)) | None => return,
        }
    }
}

/// Reads a whole request body of at most `limit` bytes; `413` past it (after draining up to
/// [`DRAIN_LIMIT`] more bytes), `400` if the body cannot be read.
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut kept: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|error| ApiError::bad_request(format!("could not read the request body: {error}")))?;
        let Ok(data) = frame.into_data() else { continue };
        total = total.saturating_add(data.len());
        if total > limit {
            drain(body, DRAIN_LIMIT).await;
            return Err(too_large(limit));
        }
        kept.extend_from_slice(&data);
    }
    Ok(Bytes::from(kept))
}

/// The per-route middleware: fault injection (admission, fate) and the route's latency.
/// Exempt routes (see [`faults::EXEMPT_ROUTES`]) only wait their latency.
async fn per_route(State((state, route)): State<(Shared, Route)>, request: Request, next: Next) -> Response {
    if faults::is_exempt(route) {
        state.delay(route, 1.0).await;
        return next.run(request).await;
    }
    // When the request arrived (the kernel's stamp, see `arrival`), else now.
    let arrived = request
        .extensions()
        .get::<ConnectInfo<Arrival>>()
        .and_then(|ConnectInfo(arrival)| arrival.get())
        .unwrap_or_else(Instant::now);
    let _slot = match state.injector.admit(arrived) {
        Ok(slot) => slot,
        Err(refusal) => {
            drain(request.into_body(), DRAIN_LIMIT).await;
            return refused(refusal, state.config.applied_latency(route));
        }
    };
    let fate = state.injector.decide(|| identity(&state, route, &request));
    let factor = if fate.slow { state.injector.faults().slow_factor } else { 1.0 };
    state.delay(route, factor).await;
    let Some(fault) = fate.fault else {
        return next.run(request).await;
    };
    if fate.before {
        drain(request.into_body(), DRAIN_LIMIT).await;
    } else {
        // Applied in full; the client never learns it.
        drop(next.run(request).await);
    }
    match fault {
        faults::Fault::Error => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "injected fault: the server failed {} handling this request (the mock API runs with an error rate); retry it, a POST with the same Idempotency-Key or X-Attachment-Name",
                if fate.before { "before" } else { "after" }
            ),
        )
        .into_response(),
        faults::Fault::Drop => Response::new(Body::new(DroppedAnswer)),
        faults::Fault::Hang => {
            // No answer until the server stops; then the connection closes without one.
            let mut released = state.hangs_released.subscribe();
            let _ = released.wait_for(|&released| released).await;
            Response::new(Body::new(DroppedAnswer))
        }
    }
}

/// The identity of a request for fault injection (see [`crate::faults`]): method and path,
/// plus the headers that name what a POST creates; an attachment POST names its ticket by the
/// old id, since new ids depend on the order of creation.
fn identity(state: &AppState, route: Route, request: &Request) -> u64 {
    let method = request.method().as_str().as_bytes();
    let path = request.uri().path();
    let header = |name: &str| request.headers().get(name).map(HeaderValue::as_bytes);
    match route {
        Route::PostTicket => faults::request_key(method, path.as_bytes(), header("idempotency-key"), None),
        Route::PostAttachment => {
            let old_id = path
                .strip_prefix("/new/tickets/")
                .and_then(|rest| rest.strip_suffix("/attachments"))
                .and_then(|id| id.parse::<u64>().ok())
                .and_then(|id| state.store().tickets.get(&id).map(|ticket| ticket.old_id));
            let resource = match old_id {
                Some(old_id) => format!("attachments of old ticket {old_id}"),
                None => path.to_owned(),
            };
            faults::request_key(method, resource.as_bytes(), None, header("x-attachment-name"))
        }
        _ => faults::request_key(method, path.as_bytes(), None, None),
    }
}

/// The answer to a request refused by the cap (`503`) or the rate limit (`429`), with
/// `Retry-After` (whole seconds, at least 1) and `Retry-After-Ms` (precise).
fn refused(refusal: Refusal, route_latency: Duration) -> Response {
    let (status, wait, message) = match refusal {
        Refusal::OverCapacity => (
            StatusCode::SERVICE_UNAVAILABLE,
            route_latency,
            "the mock API is at its cap of concurrent requests (max_concurrent); nothing was applied, retry after Retry-After seconds (Retry-After-Ms milliseconds)",
        ),
        Refusal::RateLimited { wait } => (
            StatusCode::TOO_MANY_REQUESTS,
            wait,
            "rate limit exceeded; nothing was applied, retry after Retry-After seconds (Retry-After-Ms milliseconds)",
        ),
    };
    let millis = wait.as_micros().div_ceil(1000).max(1);
    let seconds = wait.as_micros().div_ceil(1_000_000).max(1);
    let mut response = ApiError::new(status, message).into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(u64::try_from(seconds).unwrap_or(u64::MAX)));
    headers.insert(RETRY_AFTER_MS, HeaderValue::from(u64::try_from(millis).unwrap_or(u64::MAX)));
    response
}

/// The body of a dropped answer: it fails on its first poll, before hyper has flushed the
/// answer's head, so hyper closes the connection with nothing written (the client sees the
/// connection closed, with no status line).
struct DroppedAnswer;

impl HttpBody for DroppedAnswer {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(Some(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "injected fault: connection dropped",
        ))))
    }
}

async fn require_token(State(state): State<Shared>, request: Request, next: Next) -> Response {
    match check_bearer(request.headers(), state.config.token.as_bytes()) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            tracing::debug!(path = %request.uri().path(), reason = %error.message, "rejected request");
            drain(request.into_body(), DRAIN_LIMIT).await;
            error.into_response()
        }
    }
}

fn check_bearer(headers: &HeaderMap, token: &[u8]) -> Result<(), ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("missing Authorization header; send `Authorization: Bearer <token>`")
    })?;
    let value = value.as_bytes();
    let (scheme, credentials) = match value.iter().position(|&b| b == b' ') {
        Some(space) => (&value[..space], &value[space + 1..]),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(ApiError::unauthorized(
            "the Authorization header must use the Bearer scheme: `Authorization: Bearer <token>`",
        ));
    }
    if !constant_time_eq(credentials.trim_ascii(), token) {
        return Err(ApiError::unauthorized(
            "invalid bearer token; send the token the mock API was started with",
        ));
    }
    Ok(())
}

/// Compares without stopping at the first difference (only the length leaks through timing).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Parses an id from the path, naming `what` in the error.
fn parse_id(raw: Result<Path<String>, PathRejection>, what: &str) -> Result<u64, ApiError> {
    let Path(raw) = raw.map_err(|e| ApiError::bad_request(format!("invalid {what} in the path: {e}")))?;
    raw.parse().map_err(|_| {
        ApiError::bad_request(format!("{what} must be an unsigned decimal integer, got {raw:?}"))
    })
}

async fn health(State(state): State<Shared>) -> Json<serde_json::Value> {
    let latency_us: serde_json::Map<String, serde_json::Value> = Route::ALL
        .iter()
        .map(|&route| {
            let micros = state.config.applied_latency(route).as_micros();
            (route.key().to_owned(), json!(u64::try_from(micros).unwrap_or(u64::MAX)))
        })
        .collect();
    let faults = &state.config.faults;
    let point = match faults.point {
        FaultPoint::Before => "before",
        FaultPoint::After => "after",
        FaultPoint::Either => "either",
    };
    let rate_limit =
        faults.rate_limit.map(|limit| json!({ "per_second": limit.per_second, "burst": limit.burst }));
    Json(json!({
        "status": "ok",
        "seed": state.config.seed,
        "time_scale": state.config.time_scale,
        "latency_us": latency_us,
        "body_limit": state.config.body_limit,
        "faults": {
            "error_rate": faults.error_rate,
            "drop_rate": faults.drop_rate,
            "hang_rate": faults.hang_rate,
            "slow_rate": faults.slow_rate,
            "slow_factor": faults.slow_factor,
            "point": point,
            "max_per_request": faults.max_per_request,
            "rate_limit": rate_limit,
            "max_concurrent": faults.max_concurrent,
        },
        "injected": state.injector.injected(),
        "in_flight": state.injector.in_flight(),
    }))
}

async fn item(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(id, "item id")?;
    let item = state
        .dataset
        .item(id)
        .ok_or_else(|| ApiError::not_found(format!("no item {id}; items exist for ids 1..={ITEM_ID_MAX}")))?;
    Ok(Json(item).into_response())
}

async fn queue_tickets(State(state): State<Shared>, Path(queue): Path<String>) -> Result<Response, ApiError> {
    let listing = state.dataset.queue_listing(&queue).ok_or_else(|| {
        ApiError::not_found(format!("unknown queue {queue:?}; the queues are {}", QUEUES.join(", ")))
    })?;
    Ok(Json(listing).into_response())
}

fn unknown_ticket(id: u64) -> ApiError {
    ApiError::not_found(format!(
        "no ticket {id} in the old system; take ids from GET /old/queues/{{queue}}/tickets"
    ))
}

async fn ticket(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(id, "ticket id")?;
    let ticket = state.dataset.ticket(id).ok_or_else(|| unknown_ticket(id))?;
    Ok(Json(ticket).into_response())
}

async fn attachment_list(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(id, "ticket id")?;
    let list = state.dataset.attachments(id).ok_or_else(|| unknown_ticket(id))?;
    Ok(Json(list).into_response())
}

async fn attachment_download(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(id, "attachment id")?;
    let bytes = state.dataset.attachment_bytes(id).ok_or_else(|| {
        ApiError::not_found(format!("no attachment {id}; take ids from GET /old/tickets/{{id}}/attachments"))
    })?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))], bytes)
        .into_response())
}

fn idempotency_key(headers: &HeaderMap) -> Result<u64, ApiError> {
    let value = headers.get("idempotency-key").ok_or_else(|| {
        ApiError::bad_request(
            "missing Idempotency-Key header; send the old ticket's id, e.g. `Idempotency-Key: 10001`",
        )
    })?;
    let text = value.to_str().unwrap_or("").trim();
    text.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "Idempotency-Key must be the old ticket's id as an unsigned decimal integer, got {:?}",
            String::from_utf8_lossy(value.as_bytes())
        ))
    })
}

async fn post_ticket(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body, state.config.body_limit).await?;
    let key = idempotency_key(&headers)?;
    let ticket: Ticket = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be the ticket's JSON exactly as GET /old/tickets/{{id}} returned it \
             (fields id, subject, body, requester, created_at, status): {e}"
        ))
    })?;
    if ticket.id != key {
        return Err(ApiError::bad_request(format!(
            "Idempotency-Key ({key}) must equal the ticket's old id in the body ({})",
            ticket.id
        )));
    }
    let digest = checksum::ticket_digest(key, &ticket);
    let (created, id) = state.store().create_ticket(key, digest);
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "id": id }))).into_response())
}

fn attachment_name(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers.get("x-attachment-name").ok_or_else(|| {
        ApiError::bad_request(
            "missing X-Attachment-Name header; send the attachment's name from GET /old/tickets/{id}/attachments",
        )
    })?;
    let name = std::str::from_utf8(value.as_bytes())
        .map_err(|_| ApiError::bad_request("X-Attachment-Name must be UTF-8 text"))?;
    if name.is_empty() || name.len() > MAX_ATTACHMENT_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "X-Attachment-Name must be 1 to {MAX_ATTACHMENT_NAME} bytes without control characters"
        )));
    }
    Ok(name.to_owned())
}

async fn post_attachment(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // The body first: an answer that left it unread would close the connection.
    let body = read_body(body, state.config.body_limit).await?;
    let ticket_id = parse_id(id, "new ticket id")?;
    let name = attachment_name(&headers)?;
    let unknown = || {
        ApiError::not_found(format!(
            "no ticket {ticket_id} in the new system; use the id that POST /new/tickets returned"
        ))
    };
    // Look the old id up, hash outside the lock, then insert.
    let old_id = state.store().tickets.get(&ticket_id).map(|t| t.old_id).ok_or_else(unknown)?;
    let digest = checksum::attachment_digest(old_id, &name, &body);
    let size = u64::try_from(body.len()).unwrap_or(u64::MAX);
    let (created, stored) =
        state.store().add_attachment(ticket_id, &name, size, digest).ok_or_else(unknown)?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let answer = json!({
        "id": stored.id,
        "ticket_id": ticket_id,
        "name": name,
        "size": stored.size,
    });
    Ok((status, Json(answer)).into_response())
}

async fn summary(State(state): State<Shared>) -> Response {
    let summary = state.store().summary.summary();
    Json(summary).into_response()
}

async fn not_found(uri: Uri, body: Body) -> ApiError {
    drain(body, DRAIN_LIMIT).await;
    ApiError::not_found(format!("no route {}; the routes are listed in the mock API contract", uri.path()))
}

async fn method_not_allowed(body: Body) -> ApiError {
    drain(body, DRAIN_LIMIT).await;
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route; check GET vs POST in the mock API contract",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert!(check_bearer(&h, b"tok").is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer tok"));
        assert!(check_bearer(&h, b"tok").is_ok());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer tok"));
        assert!(check_bearer(&h, b"tok").is_ok());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic tok"));
        assert!(check_bearer(&h, b"tok").is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert!(check_bearer(&h, b"tok").is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer tok2"));
        assert!(check_bearer(&h, b"tok").is_err());
    }
}
