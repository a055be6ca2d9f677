//! `POST /`: the operations of other services that share the simulator's endpoint, told apart
//! the way their protocols address them.
//!
//! - `X-Amz-Target: AWSOrganizationsV20161128.ListAccounts`: Organizations, JSON 1.1. Errors
//!   are HTTP 400 with `{"__type": NAME, "Message": ...}`; unknown targets get
//!   `UnknownOperationException`.
//! - No target: a form body, awsQuery. `Action=AssumeRole&Version=2011-06-15`: STS. Answers
//!   are XML (`AssumeRoleResponse/AssumeRoleResult`, `ResponseMetadata/RequestId`); errors
//!   `ErrorResponse/Error/{Type, Code, Message}` + `RequestId`; unknown actions get
//!   `400 InvalidAction`, a missing one `400 MissingAction`.
//!
//! Credentials issued by AssumeRole and past their expiration are refused by every API:
//! STS answers `403 ExpiredToken`, Organizations `400 ExpiredTokenException`, both with STS's
//! message "The security token included in the request is expired". Of the faults, only
//! `throttle_rpc_calls` applies to these operations.

use std::fmt::Write as _;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use crate::accounts::{self, signed_access_key, AssumeRoleInput, Caller, StsError};
use crate::token::{scope_hash, TokenKind};
use crate::wire::{percent_decode, Body, EXPIRED_MESSAGE};
use crate::{Inner, TokenMode};

/// The `X-Amz-Target` prefix of Organizations.
const ORGANIZATIONS: &str = "AWSOrganizationsV20161128.";
const STS_VERSION: &str = "2011-06-15";
const STS_NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// ListAccounts `MaxResults` when the request has none, and its largest value.
const ACCOUNTS_MAX_RESULTS: i64 = 20;
/// The most accounts one ListAccounts page holds whatever `MaxResults` says: the service may
/// return fewer than asked, so callers must follow `NextToken`.
pub(crate) const ACCOUNTS_PAGE: usize = 3;

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Answers one `POST /` call.
pub(crate) async fn handle(
    inner: &Inner,
    req: Request<Incoming>,
    request_id: &str,
) -> Response<Body> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let target = header("x-amz-target");
    let access_key = header("authorization")
        .as_deref()
        .and_then(signed_access_key)
        .map(str::to_owned);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return query_error(
                StatusCode::BAD_REQUEST,
                "MalformedInput",
                "The request body could not be read.",
                request_id,
            )
        }
    };
    let caller = inner.caller(access_key.as_deref());
    let throttled = inner.fault_state().throttle_rpc();
    let resp = match target {
        Some(_) if throttled => json_error(
            "TooManyRequestsException",
            "You have sent too many requests in too short a period of time. Try again later.",
            None,
        ),
        None if throttled => query_error(
            StatusCode::BAD_REQUEST,
            "Throttling",
            "Rate exceeded",
            request_id,
        ),
        Some(t) => json_rpc(inner, &t, &body, &caller),
        None => query(inner, &body, &caller, request_id),
    };
    if throttled {
        inner.stats().rpc_throttled += 1;
    }
    if resp.status().is_client_error() {
        inner.stats().client_errors += 1;
    }
    resp
}

// ---------------------------------------------------------------------------------------
// awsQuery: STS

fn push_xml(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

fn query_error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response<Body> {
    let mut out = format!(
        "<ErrorResponse xmlns=\"{STS_NAMESPACE}\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>"
    );
    push_xml(&mut out, code);
    out.push_str("</Code>\n    <Message>");
    push_xml(&mut out, message);
    let _ = write!(
        out,
        "</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n"
    );
    response(status, "text/xml", out)
}

/// Form fields, first value of each name.
fn form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut out = Vec::new();
    for part in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((percent_decode(k, true)?, percent_decode(v, true)?));
    }
    Some(out)
}

fn query(inner: &Inner, body: &[u8], caller: &Caller, request_id: &str) -> Response<Body> {
    let Some(fields) = form(body) else {
        return query_error(
            StatusCode::BAD_REQUEST,
            "MalformedInput",
            "The request body is not valid percent-encoded UTF-8.",
            request_id,
        );
    };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let Some(action) = get("Action") else {
        return query_error(
            StatusCode::BAD_REQUEST,
            "MissingAction",
            "Missing Action",
            request_id,
        );
    };
    let version = get("Version").unwrap_or_default();
    if action != "AssumeRole" || version != STS_VERSION {
        return query_error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("Could not find operation {action} for version {version}"),
            request_id,
        );
    }
    let input = AssumeRoleInput {
        role_arn: get("RoleArn"),
        role_session_name: get("RoleSessionName"),
        external_id: get("ExternalId"),
        duration_seconds: get("DurationSeconds"),
    };
    {
        let mut stats = inner.stats();
        stats.assume_role_calls += 1;
        if let Some((account, _)) = input.role_arn.as_deref().and_then(accounts::parse_role_arn) {
            *stats
                .assume_role_by_account
                .entry(account.to_owned())
                .or_default() += 1;
        }
    }
    if caller.expired {
        inner.stats().expired_credentials += 1;
        return query_error(
            StatusCode::FORBIDDEN,
            "ExpiredToken",
            EXPIRED_MESSAGE,
            request_id,
        );
    }
    let granted = {
        let w = inner.world();
        inner
            .identities()
            .assume_role(&w.cfg, caller, &input, accounts::wall_ms(), inner.secret)
    };
    let g = match granted {
        Ok(g) => g,
        Err(StsError::Validation(message)) => {
            return query_error(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                &message,
                request_id,
            )
        }
        Err(StsError::AccessDenied { message }) => {
            inner.stats().assume_role_denied += 1;
            return query_error(StatusCode::FORBIDDEN, "AccessDenied", &message, request_id);
        }
    };
    tracing::debug!(account = %g.account, "simulator AssumeRole granted");
    let mut out = format!("<AssumeRoleResponse xmlns=\"{STS_NAMESPACE}\">\n  <AssumeRoleResult>\n");
    out.push_str("    <AssumedRoleUser>\n      <AssumedRoleId>");
    push_xml(&mut out, &g.assumed_role_id);
    out.push_str("</AssumedRoleId>\n      <Arn>");
    push_xml(&mut out, &g.assumed_arn);
    out.push_str("</Arn>\n    </AssumedRoleUser>\n    <Credentials>\n      <AccessKeyId>");
    out.push_str(&g.access_key_id);
    out.push_str("</AccessKeyId>\n      <SecretAccessKey>");
    out.push_str(&g.secret_access_key);
    out.push_str("</SecretAccessKey>\n      <SessionToken>");
    out.push_str(&g.session_token);
    out.push_str("</SessionToken>\n      <Expiration>");
    out.push_str(&accounts::iso8601(g.expires_ms));
    let _ = write!(
        out,
        "</Expiration>\n    </Credentials>\n  </AssumeRoleResult>\n  <ResponseMetadata>\n    \
         <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n</AssumeRoleResponse>\n"
    );
    response(StatusCode::OK, "text/xml", out)
}

// ---------------------------------------------------------------------------------------
// JSON 1.1: Organizations

fn json_error(code: &str, message: &str, reason: Option<&str>) -> Response<Body> {
    let mut body = serde_json::json!({ "__type": code, "Message": message });
    if let Some(r) = reason {
        body["Reason"] = serde_json::Value::from(r);
    }
    response(
        StatusCode::BAD_REQUEST,
        "application/x-amz-json-1.1",
        body.to_string(),
    )
}

fn json_rpc(inner: &Inner, target: &str, body: &[u8], caller: &Caller) -> Response<Body> {
    if target != format!("{ORGANIZATIONS}ListAccounts") {
        return json_error(
            "UnknownOperationException",
            &format!("Unknown operation {target}"),
            None,
        );
    }
    inner.stats().list_accounts_calls += 1;
    if caller.expired {
        inner.stats().expired_credentials += 1;
        return json_error("ExpiredTokenException", EXPIRED_MESSAGE, None);
    }
    let parsed: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => {
                return json_error(
                    "SerializationException",
                    "The request body is not a JSON object.",
                    None,
                )
            }
        }
    };
    list_accounts(inner, &parsed, caller)
}

fn list_accounts(inner: &Inner, input: &serde_json::Value, caller: &Caller) -> Response<Body> {
    let (members, home) = {
        let w = inner.world();
        if w.cfg.accounts.is_empty() {
            return json_error(
                "AWSOrganizationsNotInUseException",
                "Your account is not a member of an organization.",
                None,
            );
        }
        (accounts::members(&w.cfg), w.cfg.account_id.clone())
    };
    if caller.account != home {
        return json_error(
            "AccessDeniedException",
            "You don't have permissions to access this resource.",
            None,
        );
    }
    let max = match input.get("MaxResults") {
        None | Some(serde_json::Value::Null) => ACCOUNTS_MAX_RESULTS,
        Some(v) => match v.as_i64() {
            Some(n) if n < 1 => {
                return json_error(
                    "InvalidInputException",
                    "You provided a value that is smaller than the minimum allowed value for MaxResults (1).",
                    Some("MIN_VALUE_EXCEEDED"),
                )
            }
            Some(n) if n > ACCOUNTS_MAX_RESULTS => {
                return json_error(
                    "InvalidInputException",
                    "You provided a value that is larger than the maximum allowed value for MaxResults (20).",
                    Some("MAX_VALUE_EXCEEDED"),
                )
            }
            Some(n) => n,
            None => {
                return json_error(
                    "SerializationException",
                    "MaxResults must be an integer.",
                    None,
                )
            }
        },
    };
    let scope = scope_hash(&["ListAccounts"]);
    let bad_token = || {
        json_error(
            "InvalidInputException",
            "You specified an invalid value for nextToken. You must get the value from the \
             response to a previous call to the API.",
            Some("INVALID_NEXT_TOKEN"),
        )
    };
    let start = match input.get("NextToken") {
        None | Some(serde_json::Value::Null) => 0,
        Some(v) => {
            let Some(text) = v.as_str() else {
                return bad_token();
            };
            match inner.check_token(text, TokenKind::Accounts, false, TokenMode::Keyset, scope) {
                Ok(t) => match usize::try_from(t.last_start_ms) {
                    Ok(i) => i + 1,
                    Err(_) => return bad_token(),
                },
                Err(_) => return bad_token(),
            }
        }
    };
    let end = (start + (max as usize).min(ACCOUNTS_PAGE)).min(members.len());
    let page: Vec<serde_json::Value> = members
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .map(|m| {
            serde_json::json!({
                "Id": m.id,
                "Arn": m.arn,
                "Email": m.email,
                "Name": m.name,
                "Status": m.status,
                "State": m.status,
                "JoinedMethod": "CREATED",
                "JoinedTimestamp": m.joined_secs,
            })
        })
        .collect();
    let mut out = serde_json::json!({ "Accounts": page });
    if end < members.len() {
        let token = inner.issue_token(
            TokenKind::Accounts,
            false,
            TokenMode::Keyset,
            (end as i64 - 1, 0),
            scope,
        );
        out["NextToken"] = serde_json::Value::from(token);
    }
    response(
        StatusCode::OK,
        "application/x-amz-json-1.1",
        out.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_is_escaped() {
        let mut s = String::new();
        push_xml(&mut s, "a<b>&\"c'");
        assert_eq!(s, "a&lt;b&gt;&amp;&quot;c&apos;");
    }

    #[test]
    fn form_bodies_decode() {
        let f = form(b"Action=AssumeRole&RoleSessionName=a%40b+c&Empty=").unwrap();
        assert_eq!(f[1], ("RoleSessionName".to_owned(), "a@b c".to_owned()));
        assert_eq!(f[2], ("Empty".to_owned(), String::new()));
        assert!(form(b"Bad=%zz").is_none());
    }
}
