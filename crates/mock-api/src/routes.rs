//! The HTTP surface: the axum router, bearer-token auth, per-route latency, the handlers and
//! the new system's in-memory store (created tickets and attachments, the running summary).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::checksum::{self, Accumulator};
use crate::config::{Config, Route};
use crate::data::{Dataset, ITEM_ID_MAX, QUEUES, Ticket};
use crate::error::Error;
use crate::timer::Timer;

/// Ids the new system gives to created tickets start here (far from every old id).
const FIRST_NEW_TICKET_ID: u64 = 5_000_001;
/// Ids the new system gives to uploaded attachments start here.
const FIRST_NEW_ATTACHMENT_ID: u64 = 7_000_001;
/// Longest accepted `X-Attachment-Name`, in bytes.
const MAX_ATTACHMENT_NAME: usize = 255;
/// Name of the latency timer's thread (at most 15 bytes, so Linux shows it whole).
const TIMER_THREAD: &str = "mock-api-timer";

type Shared = Arc<AppState>;

struct AppState {
    config: Config,
    dataset: Dataset,
    store: Mutex<Store>,
    /// The precise timer of the latencies; `None` when every applied latency is zero. Its
    /// thread stops when the last clone of the state (router or request) is dropped.
    timer: Option<Timer>,
}

impl AppState {
    /// Waits the applied latency of `route` without blocking other requests, on the precise
    /// timer (microsecond latencies; tokio's timer would round up to whole milliseconds).
    async fn delay(&self, route: Route) {
        let latency = self.config.applied_latency(route);
        if latency.is_zero() {
            return;
        }
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
pub(crate) fn build(config: Config) -> Result<Router, Error> {
    let body_limit = config.body_limit;
    let needs_timer = Route::ALL.iter().any(|&route| !config.applied_latency(route).is_zero());
    let timer = if needs_timer { Some(Timer::new(TIMER_THREAD).map_err(Error::Runtime)?) } else { None };
    let state = Arc::new(AppState {
        dataset: Dataset::new(config.seed),
        config,
        store: Mutex::new(Store::default()),
        timer,
    });
    let protected = Router::new()
        .route("/api/items/{id}", get(item))
        .route("/old/queues/{queue}/tickets", get(queue_tickets))
        .route("/old/tickets/{id}", get(ticket))
        .route("/old/tickets/{id}/attachments", get(attachment_list))
        .route("/old/attachments/{id}", get(attachment_download))
        .route("/new/tickets", post(post_ticket))
        .route("/new/tickets/summary", get(summary))
        .route("/new/tickets/{id}/attachments", post(post_attachment))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Ok(Router::new()
        .route("/health", get(health))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state))
}

async fn require_token(State(state): State<Shared>, request: Request, next: Next) -> Response {
    match check_bearer(request.headers(), state.config.token.as_bytes()) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            tracing::debug!(path = %request.uri().path(), reason = %error.message, "rejected request");
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

fn body_error(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than the server's limit of {limit} bytes; send a smaller body or start the server with a larger body_limit"
            ),
        )
    } else {
        ApiError::bad_request(format!("could not read the request body: {}", rejection.body_text()))
    }
}

async fn health(State(state): State<Shared>) -> Json<serde_json::Value> {
    state.delay(Route::Health).await;
    let latency_us: serde_json::Map<String, serde_json::Value> = Route::ALL
        .iter()
        .map(|&route| {
            let micros = state.config.applied_latency(route).as_micros();
            (route.key().to_owned(), json!(u64::try_from(micros).unwrap_or(u64::MAX)))
        })
        .collect();
    Json(json!({
        "status": "ok",
        "seed": state.config.seed,
        "time_scale": state.config.time_scale,
        "latency_us": latency_us,
    }))
}

async fn item(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    state.delay(Route::Items).await;
    let id = parse_id(id, "item id")?;
    let item = state
        .dataset
        .item(id)
        .ok_or_else(|| ApiError::not_found(format!("no item {id}; items exist for ids 1..={ITEM_ID_MAX}")))?;
    Ok(Json(item).into_response())
}

async fn queue_tickets(State(state): State<Shared>, Path(queue): Path<String>) -> Result<Response, ApiError> {
    state.delay(Route::QueueTickets).await;
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
    state.delay(Route::TicketDetails).await;
    let id = parse_id(id, "ticket id")?;
    let ticket = state.dataset.ticket(id).ok_or_else(|| unknown_ticket(id))?;
    Ok(Json(ticket).into_response())
}

async fn attachment_list(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    state.delay(Route::AttachmentList).await;
    let id = parse_id(id, "ticket id")?;
    let list = state.dataset.attachments(id).ok_or_else(|| unknown_ticket(id))?;
    Ok(Json(list).into_response())
}

async fn attachment_download(
    State(state): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    state.delay(Route::AttachmentDownload).await;
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
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    state.delay(Route::PostTicket).await;
    let body = body.map_err(|e| body_error(e, state.config.body_limit))?;
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
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    state.delay(Route::PostAttachment).await;
    let ticket_id = parse_id(id, "new ticket id")?;
    let name = attachment_name(&headers)?;
    let body = body.map_err(|e| body_error(e, state.config.body_limit))?;
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
    state.delay(Route::Summary).await;
    let summary = state.store().summary.summary();
    Json(summary).into_response()
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {}; the routes are listed in the mock API contract", uri.path()))
}

async fn method_not_allowed() -> ApiError {
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
