//! The simulator's HTTP/1.1 server: the WorkSpaces Web restJson1 routes, the service's error
//! shapes, fault injection, and the `/_sim/*` control API.
//!
//! Wire format, as the AWS SDKs read it:
//! - Errors: the status code, header `x-amzn-ErrorType: <Name>` and a JSON body with at least
//!   `message`. The SDKs take the error name from that header (falling back to `code` /
//!   `__type` in the body).
//! - `ThrottlingException` carries `Retry-After: <seconds>`, which the SDKs expose as
//!   `retryAfterSeconds` (the Rust SDK's `retry_after_seconds()`).
//! - Timestamps are epoch seconds as JSON numbers, with milliseconds as the fraction.
//! - Every answer carries `x-amzn-RequestId`.
//!
//! `POST /` is STS or Organizations ([`crate::rpc`]). With several accounts
//! ([`crate::SimConfig::accounts`]) each WorkSpaces Web call sees only the portals of its
//! caller's account (the access key id of its SigV4 credential scope); a call with credentials
//! issued by AssumeRole after they expired gets `403 ExpiredTokenException`.
//!
//! Faults that break the wire format on purpose: a dropped connection (the request is read,
//! then the connection closes with no answer at all) and corrupted ListSessions bodies.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::accounts::signed_access_key;
use crate::data::{Portal, RecordView, Sess, SessionQuery, StatusFilter, World};
use crate::faults::{Corruption, Injected, Oddity};
use crate::rng::{mix64, parse_uuid, uuid_string};
use crate::token::{scope_hash, PageToken, TokenKind};
use crate::wire::{percent_decode, Body, EXPIRED_MESSAGE};
use crate::{ActivityRequest, AdvanceRequest, Faults, Inner, RoleRequest, SimStats, TokenMode};

/// Largest `maxResults` the service accepts.
const MAX_RESULTS: i64 = 100;
/// `maxResults` when the request has none.
const DEFAULT_MAX_RESULTS: usize = 20;

/// Resolves once the simulator is told to shut down.
async fn stopped(mut rx: watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            // No sender left: nobody can ask for a shutdown any more.
            std::future::pending::<()>().await;
        }
    }
}

/// Accepts connections until shutdown; each connection is served on its own task.
pub(crate) async fn serve(
    listener: TcpListener,
    inner: Arc<Inner>,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = stopped(shutdown.clone()) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "simulator accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let inner = inner.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(inner.clone(), req));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = stopped(shutdown) => {}
            }
        });
    }
}

/// The service's answer to hyper when a call is to be dropped: hyper then closes the
/// connection without writing a response.
#[derive(Debug)]
struct DroppedConnection;

impl std::fmt::Display for DroppedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DroppedConnection {}

async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DroppedConnection> {
    let seq = inner.request_seq.fetch_add(1, Ordering::Relaxed);
    let request_id = uuid_string(
        (u128::from(mix64(inner.secret ^ seq)) << 64)
            | u128::from(mix64(
                seq.wrapping_add(inner.secret).rotate_left(23) ^ 0x5EED,
            )),
    );
    let mut resp = if req.uri().path().starts_with("/_sim/") {
        control(&inner, req).await
    } else if req.method() == Method::POST && req.uri().path() == "/" {
        crate::rpc::handle(&inner, req, &request_id).await
    } else {
        api(&inner, req).await.ok_or(DroppedConnection)?
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-amzn-requestid"), v);
    }
    Ok(resp)
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

// ---------------------------------------------------------------------------------------
// Errors

/// An error answer in the service's shape.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    detail: Detail,
    retry_after_secs: Option<u64>,
}

/// The modeled members an error carries besides `message`.
#[derive(Debug)]
enum Detail {
    None,
    /// `ResourceNotFoundException`: `resourceId`, `resourceType`.
    Resource {
        id: String,
        kind: &'static str,
    },
    /// `ValidationException`: `reason` and one entry of `fieldList`.
    Field {
        name: &'static str,
        message: String,
    },
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: Detail::None,
            retry_after_secs: None,
        }
    }

    /// A `ValidationException` about one request field.
    fn field(name: &'static str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError {
            detail: Detail::Field {
                name,
                message: message.clone(),
            },
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                format!("1 validation error detected: {message}"),
            )
        }
    }

    fn bad_token() -> ApiError {
        ApiError::field(
            "nextToken",
            "The pagination token is invalid or expired. Start again without a nextToken.",
        )
    }

    fn not_found(kind: &'static str, id: &str) -> ApiError {
        let label = if kind == "portal" {
            "Portal"
        } else {
            "Session"
        };
        ApiError {
            detail: Detail::Resource {
                id: id.to_owned(),
                kind,
            },
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                format!("{label} {id} not found."),
            )
        }
    }

    fn throttled(retry_after_secs: u64) -> ApiError {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException",
                "Rate exceeded",
            )
        }
    }

    fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            "An internal error occurred. Try again.",
        )
    }

    fn expired_token() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "ExpiredTokenException",
            EXPIRED_MESSAGE,
        )
    }

    fn access_denied(portal_id: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            format!("User is not authorized to perform this action on portal {portal_id}"),
        )
    }

    fn list_portals_denied(account: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            format!(
                "User in account {account} is not authorized to perform: workspaces-web:ListPortals"
            ),
        )
    }

    fn unknown_operation(method: &Method, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!("No operation matches {method} {path}"),
        )
    }

    fn into_response(self) -> Response<Body> {
        let mut body = String::from("{\"message\":");
        push_json_str(&mut body, &self.message);
        match &self.detail {
            Detail::None => {}
            Detail::Resource { id, kind } => {
                body.push_str(",\"resourceId\":");
                push_json_str(&mut body, id);
                body.push_str(",\"resourceType\":");
                push_json_str(&mut body, kind);
            }
            Detail::Field { name, message } => {
                body.push_str(",\"reason\":\"fieldValidationFailed\",\"fieldList\":[{\"name\":");
                push_json_str(&mut body, name);
                body.push_str(",\"message\":");
                push_json_str(&mut body, message);
                body.push_str("}]");
            }
        }
        body.push('}');
        let mut resp = json_response(self.status, body);
        let headers = resp.headers_mut();
        headers.insert(
            HeaderName::from_static("x-amzn-errortype"),
            HeaderValue::from_static(self.code),
        );
        if let Some(secs) = self.retry_after_secs {
            headers.insert(hyper::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

// ---------------------------------------------------------------------------------------
// JSON output

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Epoch milliseconds as epoch seconds with a three-digit fraction: `1764150000.123`.
fn push_timestamp(out: &mut String, ms: i64) {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    let _ = write!(out, "{sign}{}.{:03}", abs / 1000, abs % 1000);
}

/// One session object. `corrupt` breaks it on purpose (except `BadJson`, which the caller
/// applies to the whole body); `odd` serves this one session oddly (see
/// [`Faults::odd_sessions`](crate::Faults::odd_sessions)).
fn push_session(
    out: &mut String,
    world: &World,
    p: &Portal,
    s: &Sess,
    with_ips: bool,
    corrupt: Option<Corruption>,
    odd: Option<Oddity>,
) {
    // Members are comma-prefixed; the leading one is dropped at the end.
    let start = out.len();
    out.push('{');
    if corrupt != Some(Corruption::MissingPortalArn) {
        out.push_str(",\"portalArn\":");
        if odd == Some(Oddity::ForeignPortalArn) {
            push_json_str(out, &foreign_arn(world, p));
        } else {
            push_json_str(out, &p.arn);
        }
    }
    if corrupt != Some(Corruption::MissingSessionId) {
        out.push_str(",\"sessionId\":\"");
        out.push_str(&uuid_string(s.id));
        out.push('"');
    }
    if let Some(user) = world.username(s) {
        out.push_str(",\"username\":");
        push_json_str(out, user);
    }
    if with_ips {
        out.push_str(",\"clientIpAddresses\":[");
        for (i, ip) in s.client_ips().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(out, &ip);
        }
        out.push(']');
    }
    out.push_str(",\"status\":\"");
    out.push_str(if corrupt == Some(Corruption::UnknownStatus) {
        "Hibernating"
    } else if odd == Some(Oddity::UnknownStatus) {
        "Pending"
    } else {
        s.status()
    });
    out.push('"');
    if corrupt != Some(Corruption::MissingStartTime) && odd != Some(Oddity::MissingStartTime) {
        out.push_str(",\"startTime\":");
        push_timestamp(out, s.start_ms);
    }
    if let Some(end) = s.end_ms {
        out.push_str(",\"endTime\":");
        push_timestamp(out, end);
    }
    out.push('}');
    // `status` is always there, so a member follows the brace.
    out.remove(start + 1);
}

/// The ARN of a portal other than `p`: the next portal's (the first's after the last), or, in
/// a world of one portal, `p`'s with another id.
fn foreign_arn(world: &World, p: &Portal) -> String {
    let n = world.portals.len();
    let pos = world.portals.iter().position(|q| q.id == p.id).unwrap_or(0);
    match (1..n).map(|k| &world.portals[(pos + k) % n]).next() {
        Some(q) => q.arn.clone(),
        None => p.arn.replace(&p.id, "0dd0dd00-0000-4000-8000-000000000000"),
    }
}

// ---------------------------------------------------------------------------------------
// Requests

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let (Some(k), Some(v)) = (percent_decode(k, true), percent_decode(v, true)) else {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    "The query string is not valid percent-encoded UTF-8.",
                ));
            };
            pairs.push((k, v));
        }
        Ok(Query(pairs))
    }

    /// The first value of `name`, like the service.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Portal and session ids: exactly 36 characters of `[a-zA-Z0-9-]`.
fn check_id(name: &'static str, value: &str) -> Result<(), ApiError> {
    let ok = value.len() == 36
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        return Ok(());
    }
    let shown: String = value.chars().take(64).collect();
    Err(ApiError::field(
        name,
        format!(
            "Value '{shown}' at '{name}' failed to satisfy constraint: Member must have length \
             36 and satisfy regular expression pattern: [a-zA-Z0-9\\-]+"
        ),
    ))
}

fn max_results(q: &Query) -> Result<usize, ApiError> {
    let Some(raw) = q.get("maxResults") else {
        return Ok(DEFAULT_MAX_RESULTS);
    };
    let shown: String = raw.chars().take(32).collect();
    let n: i64 = raw.parse().map_err(|_| {
        ApiError::field(
            "maxResults",
            format!("Value '{shown}' at 'maxResults' failed to satisfy constraint: Member must be an integer"),
        )
    })?;
    if n < 1 {
        return Err(ApiError::field(
            "maxResults",
            format!("Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to 1"),
        ));
    }
    if n > MAX_RESULTS {
        return Err(ApiError::field(
            "maxResults",
            format!("Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to {MAX_RESULTS}"),
        ));
    }
    Ok(n as usize)
}

fn enum_value<'a>(
    q: &'a Query,
    name: &'static str,
    allowed: &[&'static str],
) -> Result<Option<&'a str>, ApiError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v)),
        Some(v) => {
            let shown: String = v.chars().take(64).collect();
            Err(ApiError::field(
                name,
                format!(
                    "Value '{shown}' at '{name}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                    allowed.join(", ")
                ),
            ))
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Inner {
    pub(crate) fn issue_token(
        &self,
        kind: TokenKind,
        descending: bool,
        mode: TokenMode,
        last: (i64, u128),
        scope: u64,
    ) -> String {
        PageToken {
            kind,
            descending,
            mode,
            epoch: self.epoch.load(Ordering::SeqCst),
            issued_wall_ms: wall_ms(),
            last_start_ms: last.0,
            last_id: last.1,
            scope,
        }
        .encode(self.secret)
    }

    /// The position a token names, if this simulator issued it for exactly this request shape
    /// and token mode, and it has not expired.
    pub(crate) fn check_token(
        &self,
        text: &str,
        kind: TokenKind,
        descending: bool,
        mode: TokenMode,
        scope: u64,
    ) -> Result<PageToken, ApiError> {
        let t = PageToken::decode(text, self.secret).ok_or_else(ApiError::bad_token)?;
        let expired = self
            .token_ttl
            .is_some_and(|ttl| wall_ms().saturating_sub(t.issued_wall_ms) > ttl.as_millis() as u64);
        if t.kind != kind
            || t.descending != descending
            || t.mode != mode
            || t.scope != scope
            || t.epoch != self.epoch.load(Ordering::SeqCst)
            || expired
        {
            return Err(ApiError::bad_token());
        }
        Ok(t)
    }
}

enum Op {
    ListPortals,
    ListSessions {
        portal_id: String,
    },
    GetSession {
        portal_id: String,
        session_id: String,
    },
}

fn route(method: &Method, path: &str) -> Option<Op> {
    if method != Method::GET {
        return None;
    }
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let label = |s: &str| percent_decode(s, false);
    match segments.as_slice() {
        ["portals"] => Some(Op::ListPortals),
        ["portals", p, "sessions"] => Some(Op::ListSessions {
            portal_id: label(p)?,
        }),
        ["portals", p, "sessions", s] => Some(Op::GetSession {
            portal_id: label(p)?,
            session_id: label(s)?,
        }),
        _ => None,
    }
}

/// One API call; `None` = drop the connection without answering.
async fn api(inner: &Inner, req: Request<Incoming>) -> Option<Response<Body>> {
    let Some(op) = route(req.method(), req.uri().path()) else {
        return Some(ApiError::unknown_operation(req.method(), req.uri().path()).into_response());
    };
    {
        let mut stats = inner.stats();
        match &op {
            Op::ListPortals => stats.list_portals_calls += 1,
            Op::ListSessions { portal_id } => {
                stats.list_sessions_calls += 1;
                *stats
                    .list_sessions_by_portal
                    .entry(portal_id.clone())
                    .or_default() += 1;
            }
            Op::GetSession { .. } => stats.get_session_calls += 1,
        }
    }
    let access_key = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(signed_access_key);
    let caller = inner.caller(access_key);
    if caller.expired {
        let mut stats = inner.stats();
        stats.expired_credentials += 1;
        stats.client_errors += 1;
        return Some(ApiError::expired_token().into_response());
    }
    let account = caller.account.as_str();
    let (injected, latency_ms, retry_after) = {
        let mut faults = inner.fault_state();
        let injected = faults.decide(Instant::now());
        (
            injected,
            faults.faults.latency_ms,
            faults.faults.retry_after_secs,
        )
    };
    if latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    }
    let region = signed_region(&req);
    let result = match injected {
        Injected::Drop => {
            // Read the whole request first, as a server that dies after receiving it would.
            let _ = req.into_body().collect().await;
            inner.stats().dropped += 1;
            return None;
        }
        Injected::Throttle => Err(ApiError::throttled(retry_after)),
        Injected::ServerError => Err(ApiError::internal()),
        Injected::Nothing => Query::parse(req.uri().query()).and_then(|q| match &op {
            Op::ListPortals => list_portals(inner, &q, region.as_deref(), account),
            Op::ListSessions { portal_id } => {
                reachable(inner, portal_id, region.as_deref(), account)
                    .and_then(|()| list_sessions(inner, portal_id, &q))
            }
            Op::GetSession {
                portal_id,
                session_id,
            } => reachable(inner, portal_id, region.as_deref(), account)
                .and_then(|()| get_session(inner, portal_id, session_id)),
        }),
    };
    Some(match result {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => {
            {
                let mut stats = inner.stats();
                match e.status.as_u16() {
                    429 => stats.throttled += 1,
                    500..=599 => stats.server_errors += 1,
                    _ => stats.client_errors += 1,
                }
            }
            e.into_response()
        }
    })
}

/// The region a request was signed for: `Credential=KEY/DATE/REGION/SERVICE/aws4_request`.
fn signed_region(req: &Request<Incoming>) -> Option<String> {
    let auth = req.headers().get("authorization")?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    let cred = cred.split([',', ' ']).next()?;
    cred.split('/').nth(2).map(str::to_string)
}

/// The region of a portal, from its ARN.
fn arn_region(arn: &str) -> &str {
    arn.split(':').nth(3).unwrap_or_default()
}

/// With several regions configured, a portal is found only through its own region's endpoint;
/// with several accounts, only by callers of its account. Otherwise it is not found, as if
/// it did not exist.
fn reachable(
    inner: &Inner,
    portal_id: &str,
    region: Option<&str>,
    account: &str,
) -> Result<(), ApiError> {
    let w = inner.world();
    let Some(p) = w.portal(portal_id) else {
        return Ok(());
    };
    let other_region = !w.cfg.regions.is_empty() && region.is_some_and(|r| arn_region(&p.arn) != r);
    if other_region || !w.in_account(p, account) {
        return Err(ApiError::not_found("portal", portal_id));
    }
    Ok(())
}

fn list_portals(
    inner: &Inner,
    q: &Query,
    region: Option<&str>,
    account: &str,
) -> Result<String, ApiError> {
    if inner.fault_state().listing_denied(account) {
        return Err(ApiError::list_portals_denied(account));
    }
    let max = max_results(q)?;
    // With several accounts a token lists the portals of the account it was issued to.
    let scope = if inner.world().cfg.accounts.is_empty() {
        scope_hash(&["ListPortals"])
    } else {
        scope_hash(&["ListPortals", account])
    };
    // Portal tokens are positions in the (append-only) portal list in either mode.
    let mode = inner.world().cfg.token_mode;
    let start = match q.get("nextToken") {
        None => 0,
        Some(t) => {
            let t = inner.check_token(t, TokenKind::Portals, false, mode, scope)?;
            usize::try_from(t.last_start_ms).map_err(|_| ApiError::bad_token())? + 1
        }
    };
    let w = inner.world();
    let mine: Vec<_> = w
        .portals
        .iter()
        .filter(|p| w.cfg.regions.is_empty() || region.is_none_or(|r| arn_region(&p.arn) == r))
        .filter(|p| w.in_account(p, account) && w.exists(p))
        .collect();
    let mut out = String::from("{\"portals\":[");
    let end = (start + max).min(mine.len());
    for (i, p) in mine.iter().enumerate().take(end).skip(start) {
        if i > start {
            out.push(',');
        }
        out.push_str("{\"portalArn\":");
        push_json_str(&mut out, &p.arn);
        out.push_str(",\"displayName\":");
        push_json_str(&mut out, &p.display_name);
        let _ = write!(
            out,
            ",\"portalStatus\":\"Active\",\"browserType\":\"Chrome\",\"rendererType\":\"AppStream\",\
             \"authenticationType\":\"Standard\",\"instanceType\":\"standard.regular\",\
             \"maxConcurrentSessions\":25,\"portalEndpoint\":\"{}.workspaces-web.com\",\"creationDate\":",
            &p.id.replace('-', "")[..20],
        );
        push_timestamp(&mut out, p.created_ms);
        out.push('}');
    }
    out.push(']');
    if end < mine.len() && end > start {
        out.push_str(",\"nextToken\":");
        let token = inner.issue_token(TokenKind::Portals, false, mode, (end as i64 - 1, 0), scope);
        push_json_str(&mut out, &token);
    }
    out.push('}');
    Ok(out)
}

fn list_sessions(inner: &Inner, portal_id: &str, q: &Query) -> Result<String, ApiError> {
    check_id("portalId", portal_id)?;
    let (hidden, corruption, odd) = {
        let faults = inner.fault_state();
        if faults.denied(portal_id) {
            return Err(ApiError::access_denied(portal_id));
        }
        (faults.hidden(), faults.corruption(), faults.odd())
    };
    let max = max_results(q)?;
    let descending = enum_value(q, "sortBy", &["StartTimeAscending", "StartTimeDescending"])?
        != Some("StartTimeAscending");
    let status_raw = enum_value(q, "status", &["Active", "Terminated"])?;
    let status = match status_raw {
        None => StatusFilter::Any,
        Some("Active") => StatusFilter::Active,
        Some(_) => StatusFilter::Terminated,
    };
    // An empty username is no filter; usernames are personal data, so never echoed back.
    let username = q.get("username").filter(|u| !u.is_empty());
    if username.is_some_and(|u| u.chars().count() > 256) {
        return Err(ApiError::field(
            "username",
            "Value at 'username' failed to satisfy constraint: Member must have length less than or equal to 256",
        ));
    }
    let session_id = q.get("sessionId");
    if let Some(id) = session_id {
        check_id("sessionId", id)?;
    }
    if q.get("nextToken") == Some("") {
        return Err(ApiError::bad_token());
    }

    let w = inner.world();
    let portal = w
        .portal(portal_id)
        .ok_or_else(|| ApiError::not_found("portal", portal_id))?;
    let scope = scope_hash(&[
        "ListSessions",
        portal_id,
        username.unwrap_or(""),
        session_id.unwrap_or(""),
        status_raw.unwrap_or(""),
    ]);
    let mode = w.cfg.token_mode;
    let (after, skip) = match q.get("nextToken") {
        None => (None, 0),
        Some(t) => {
            let t = inner.check_token(t, TokenKind::Sessions, descending, mode, scope)?;
            match mode {
                TokenMode::Keyset => (Some((t.last_start_ms, t.last_id)), 0),
                TokenMode::Offset => (
                    None,
                    usize::try_from(t.last_start_ms).map_err(|_| ApiError::bad_token())?,
                ),
            }
        }
    };
    let query = SessionQuery {
        descending,
        user: w.user_filter(username),
        session_id: session_id.map(parse_uuid),
        status,
        after,
        skip,
        max,
    };
    let (page, more) = w.list_sessions(portal, &query, &hidden);

    let mut out = String::with_capacity(64 + page.len() * 240);
    out.push_str("{\"sessions\":[");
    for (i, s) in page.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let corrupt = corruption.filter(|_| i == 0);
        let at = out.len();
        let oddity = odd
            .get(&s.id)
            .copied()
            .filter(|o| *o != Oddity::GetSessionOtherId);
        push_session(&mut out, &w, portal, s, false, corrupt, oddity);
        if corrupt == Some(Corruption::BadJson) {
            // Cut the body off halfway through the first session: invalid JSON, still 200.
            let mut cut = at + (out.len() - at) / 2;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            return Ok(out);
        }
    }
    out.push(']');
    portal.mark_served(page.iter().copied());
    if let (true, Some(last)) = (more, page.last()) {
        out.push_str(",\"nextToken\":");
        let position = match mode {
            TokenMode::Keyset => last.key(),
            TokenMode::Offset => ((skip + page.len()) as i64, 0),
        };
        let token = inner.issue_token(TokenKind::Sessions, descending, mode, position, scope);
        push_json_str(&mut out, &token);
    }
    out.push('}');
    Ok(out)
}

fn get_session(inner: &Inner, portal_id: &str, session_id: &str) -> Result<String, ApiError> {
    check_id("portalId", portal_id)?;
    check_id("sessionId", session_id)?;
    let odd = {
        let faults = inner.fault_state();
        if faults.denied(portal_id) {
            return Err(ApiError::access_denied(portal_id));
        }
        faults.odd()
    };
    let w = inner.world();
    let portal = w
        .portal(portal_id)
        .ok_or_else(|| ApiError::not_found("portal", portal_id))?;
    let mut s = parse_uuid(session_id)
        .and_then(|id| w.visible_session(portal, id))
        .ok_or_else(|| ApiError::not_found("session", session_id))?;
    let mut oddity = odd.get(&s.id).copied();
    if oddity == Some(Oddity::GetSessionOtherId) {
        // A neighbour of the session asked for, served as it is.
        let pos = portal.position(s.id).unwrap_or_default();
        let other = portal
            .sessions
            .get(pos + 1)
            .or_else(|| pos.checked_sub(1).and_then(|i| portal.sessions.get(i)));
        if let Some(other) = other {
            s = other;
        }
        oddity = None;
    }
    let mut out = String::from("{\"session\":");
    push_session(&mut out, &w, portal, s, true, None, oddity);
    out.push('}');
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Control API

fn to_json<T: serde::Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => control_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn control_error(status: StatusCode, message: &str) -> Response<Body> {
    let mut body = String::from("{\"message\":");
    push_json_str(&mut body, message);
    body.push('}');
    json_response(status, body)
}

/// An empty body means all defaults; a malformed one is a 400 with the parse error.
fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| format!("bad JSON body: {e}"))
}

/// `/_sim/*`: inspect and steer the simulator from outside the process. Not counted in the
/// stats and never subject to faults.
async fn control(inner: &Inner, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return control_error(StatusCode::BAD_REQUEST, &format!("reading body: {e}")),
    };
    match (method, path.as_str()) {
        (Method::GET, "/_sim/record") => to_json(&inner.world().record()),
        (Method::GET, "/_sim/listable") => to_json(&inner.world().record_of(RecordView::Listable)),
        (Method::GET, "/_sim/ever-listable") => {
            to_json(&inner.world().record_of(RecordView::EverListable))
        }
        (Method::GET, "/_sim/served") => to_json(&inner.world().record_of(RecordView::Served)),
        (Method::GET, "/_sim/info") => to_json(&inner.info()),
        (Method::GET, "/_sim/stats") => to_json(&*inner.stats()),
        (Method::POST, "/_sim/reset-stats") => {
            *inner.stats() = SimStats::default();
            to_json(&serde_json::json!({}))
        }
        (Method::GET, "/_sim/faults") => to_json(&inner.fault_state().faults),
        (Method::POST, "/_sim/faults") => {
            match parse_body::<Faults>(&body).and_then(|f| f.validate().map(|()| f)) {
                Ok(f) => {
                    inner.set_faults(f.clone());
                    to_json(&f)
                }
                Err(msg) => control_error(StatusCode::BAD_REQUEST, &msg),
            }
        }
        (Method::POST, "/_sim/expire-tokens") => {
            let epoch = inner.epoch.fetch_add(1, Ordering::SeqCst) + 1;
            to_json(&serde_json::json!({ "tokenEpoch": epoch }))
        }
        (Method::POST, "/_sim/activity") => match parse_body::<ActivityRequest>(&body) {
            Ok(a) => match inner.activity(&a) {
                Ok(result) => to_json(&result),
                Err(e) => control_error(StatusCode::NOT_FOUND, &format!("{e:#}")),
            },
            Err(msg) => control_error(StatusCode::BAD_REQUEST, &msg),
        },
        (Method::POST, "/_sim/advance") => match parse_body::<AdvanceRequest>(&body) {
            Ok(a) if a.seconds.is_finite() && a.seconds >= 0.0 => {
                inner.world_mut().clock.advance((a.seconds * 1000.0) as i64);
                to_json(&inner.info())
            }
            Ok(a) => control_error(
                StatusCode::BAD_REQUEST,
                &format!("seconds must be a number >= 0, got {}", a.seconds),
            ),
            Err(msg) => control_error(StatusCode::BAD_REQUEST, &msg),
        },
        (Method::POST, "/_sim/deny-role" | "/_sim/allow-role") => {
            match parse_body::<RoleRequest>(&body) {
                Ok(r) if crate::accounts::is_account_id(&r.account) => {
                    if path == "/_sim/deny-role" {
                        inner.identities().deny(&r.account);
                    } else {
                        inner.identities().allow(&r.account);
                    }
                    to_json(&inner.info())
                }
                Ok(r) => control_error(
                    StatusCode::BAD_REQUEST,
                    &format!("account must be 12 digits, got {:?}", r.account),
                ),
                Err(msg) => control_error(StatusCode::BAD_REQUEST, &msg),
            }
        }
        (Method::POST, "/_sim/portals") => {
            let id = inner.world_mut().add_portal();
            to_json(&serde_json::json!({ "portalId": id }))
        }
        (method, path) => control_error(
            StatusCode::NOT_FOUND,
            &format!("no control endpoint {method} {path}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_millisecond_fractions() {
        let mut s = String::new();
        push_timestamp(&mut s, 1_764_150_000_123);
        s.push(' ');
        push_timestamp(&mut s, 1_764_150_000_005);
        s.push(' ');
        push_timestamp(&mut s, -1_500);
        assert_eq!(s, "1764150000.123 1764150000.005 -1.500");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let v: String = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn ids_must_be_36_safe_characters() {
        assert!(check_id("portalId", "0123456789abcdef0123456789abcdef-ABC").is_ok());
        assert!(check_id("portalId", "short").is_err());
        assert!(check_id("portalId", "0123456789abcdef0123456789abcdef_ABC").is_err());
    }

    #[test]
    fn routes() {
        assert!(matches!(
            route(&Method::GET, "/portals"),
            Some(Op::ListPortals)
        ));
        assert!(matches!(
            route(&Method::GET, "/portals/abc/sessions"),
            Some(Op::ListSessions { portal_id }) if portal_id == "abc"
        ));
        assert!(matches!(
            route(&Method::GET, "/portals/a/sessions/b"),
            Some(Op::GetSession { portal_id, session_id }) if portal_id == "a" && session_id == "b"
        ));
        assert!(route(&Method::POST, "/portals").is_none());
        assert!(route(&Method::GET, "/portals/a").is_none());
        assert!(route(&Method::GET, "/nothing").is_none());
    }
}
