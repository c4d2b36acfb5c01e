//! A REST connector to an external CRM.
//!
//! The external CRM (or an adapter in front of it) serves JSON over HTTP at
//! `base_url` (e.g. `https://crm.example.com/api/voxtrunk`); the bodies are
//! the serde shapes of [`Contact`], [`CallRecord`], [`Booking`],
//! [`BookingConfirmation`] and [`Slot`]. Values in paths are
//! percent-encoded as path segments (`/` → `%2F`, space → `%20`; a `+` is
//! literal in a path and stays), values in queries form-encoded.
//!
//! | call | request | success |
//! |------|---------|---------|
//! | [`find_contact`](Crm::find_contact) | `GET {base}/contacts/{phone}` | `200` Contact; `404` = unknown |
//! | [`upsert_contact`](Crm::upsert_contact) | `PUT {base}/contacts/{phone}`, body Contact; from the outbox also header `Idempotency-Key: contact:<session id>` | `200`/`201` Contact as stored |
//! | [`recent_calls`](Crm::recent_calls) | `GET {base}/contacts/{phone}/calls?limit=N` | `200` `[CallRecord]`, newest first |
//! | [`record_call`](Crm::record_call) | `POST {base}/calls`, body CallRecord; from the outbox also header `Idempotency-Key: call:<session id>` | any `2xx`; a repeated key (or `call_id`) must not record a second call |
//! | [`book_visit`](Crm::book_visit) | `POST {base}/bookings`, header `Idempotency-Key: <key>`, body Booking | `200`/`201` BookingConfirmation; a repeated key must answer the first confirmation |
//! | [`bookings_for`](Crm::bookings_for) | `GET {base}/contacts/{phone}/bookings` | `200` `[BookingConfirmation]` |
//! | [`availability`](Crm::availability) | `GET {base}/availability?property_id=P&date=YYYY-MM-DD` | `200` `[Slot]` (`{"start":"10:00","end":"11:00"}`) |
//!
//! Every request carries the configured auth header (e.g. `Authorization:
//! Bearer …`, marked sensitive so it never reaches logs) and
//! `Accept: application/json`. Errors:
//!
//! | outcome | [`CrmError`] |
//! |---------|--------------|
//! | connect failure, timeout (whole request, [`HttpCrmConfig::timeout`]), `408`, `425`, `429`, `5xx`, other non-2xx, undecodable body | `Unavailable` (retryable) |
//! | `400`, `404` (except a contact lookup), `422` | `Invalid` |
//! | `401`, `403`, `409` (slot taken), other `4xx` | `Rejected` |
//!
//! The message is the body's `error` or `message` field when it is JSON,
//! else the start of the body. Nothing is retried here: a write that
//! failed as `Unavailable` is for the caller (the outbox,
//! `crate::agent::outbox`) to retry with the same idempotency key, so the
//! CRM may see one key several times and must act on it once.

use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderName, HeaderValue};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::{Booking, BookingConfirmation, CallRecord, Contact, Crm, CrmError, Slot};
use crate::agent::provider::BoxFuture;

/// How to reach the external CRM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCrmConfig {
    /// Base URL; paths are appended to it.
    pub base_url: String,
    /// An auth header sent with every request: (name, value), e.g.
    /// (`Authorization`, `Bearer …`) or (`X-Api-Key`, `…`).
    pub auth_header: Option<(String, String)>,
    /// Limit on a whole request, connect to last body byte.
    pub timeout: Duration,
    /// Limit on connecting.
    pub connect_timeout: Duration,
}

impl HttpCrmConfig {
    /// `base_url` with a 3 s request and 1 s connect timeout, no auth.
    pub fn new(base_url: impl Into<String>) -> Self {
        HttpCrmConfig {
            base_url: base_url.into(),
            auth_header: None,
            timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// The REST connector (see the module doc).
#[derive(Debug, Clone)]
pub struct HttpCrm {
    client: Client,
    base: Url,
    auth: Option<(HeaderName, HeaderValue)>,
}

/// What to do with a `404`.
#[derive(Clone, Copy, PartialEq)]
enum NotFound {
    /// It is an answer: nothing there.
    IsNone,
    /// It is an error.
    IsError,
}

impl HttpCrm {
    /// A connector for `config`. Uses the process's rustls crypto provider,
    /// installing ring's when none is installed yet.
    pub fn new(config: &HttpCrmConfig) -> Result<HttpCrm, CrmError> {
        let mut base = Url::parse(&config.base_url)
            .map_err(|e| CrmError::Invalid(format!("CRM base URL {:?}: {e}", config.base_url)))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(CrmError::Invalid(format!(
                "CRM base URL {:?} is not an http(s) URL",
                config.base_url
            )));
        }
        base.set_query(None);
        base.set_fragment(None);
        let auth = match &config.auth_header {
            None => None,
            Some((name, value)) => {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                    CrmError::Invalid(format!("CRM auth header name {name:?}: {e}"))
                })?;
                let mut value = HeaderValue::from_str(value).map_err(|_| {
                    CrmError::Invalid("CRM auth header value is not a valid header value".into())
                })?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| CrmError::Invalid(format!("cannot build the CRM HTTP client: {e}")))?;
        Ok(HttpCrm { client, base, auth })
    }

    /// `{base}/seg/seg?query`.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    fn request(&self, method: reqwest::Method, url: Url) -> RequestBuilder {
        let mut req = self
            .client
            .request(method, url)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some((name, value)) = &self.auth {
            req = req.header(name.clone(), value.clone());
        }
        req
    }

    async fn execute(
        &self,
        req: RequestBuilder,
        not_found: NotFound,
    ) -> Result<Option<Response>, CrmError> {
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Some(resp));
        }
        if status == StatusCode::NOT_FOUND && not_found == NotFound::IsNone {
            return Ok(None);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(status_error(status, &body))
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, CrmError> {
        match self.execute(req, NotFound::IsError).await? {
            Some(resp) => decode(resp).await,
            None => Err(CrmError::Invalid("HTTP 404 Not Found".into())),
        }
    }
}

/// The request with an `Idempotency-Key` header, when there is a key.
fn keyed(req: RequestBuilder, key: Option<&str>) -> Result<RequestBuilder, CrmError> {
    let Some(key) = key else {
        return Ok(req);
    };
    let value = HeaderValue::from_str(key)
        .map_err(|_| CrmError::Invalid("idempotency key is not a valid header value".into()))?;
    Ok(req.header("Idempotency-Key", value))
}

impl HttpCrm {
    async fn put_contact(&self, key: Option<&str>, contact: Contact) -> Result<Contact, CrmError> {
        let url = self.url(&["contacts", &contact.phone], &[]);
        let req = keyed(self.request(reqwest::Method::PUT, url), key)?.json(&contact);
        self.json(req).await
    }

    async fn post_call(&self, key: Option<&str>, record: CallRecord) -> Result<(), CrmError> {
        let url = self.url(&["calls"], &[]);
        let req = keyed(self.request(reqwest::Method::POST, url), key)?.json(&record);
        self.execute(req, NotFound::IsError).await.map(|_| ())
    }
}

async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T, CrmError> {
    resp.json()
        .await
        .map_err(|e| CrmError::Unavailable(format!("unreadable CRM response: {e}")))
}

fn transport_error(e: reqwest::Error) -> CrmError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    CrmError::Unavailable(format!("{what}: {e}"))
}

fn status_error(status: StatusCode, body: &str) -> CrmError {
    let detail = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["error", "message", "detail"]
                .iter()
                .find_map(|k| v.get(k).and_then(|m| m.as_str()).map(str::to_owned))
        })
        .unwrap_or_else(|| body.chars().take(200).collect());
    let message = if detail.trim().is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", detail.trim())
    };
    match status.as_u16() {
        400 | 404 | 422 => CrmError::Invalid(message),
        408 | 425 | 429 => CrmError::Unavailable(message),
        401 | 403 | 409 | 410..=499 => CrmError::Rejected(message),
        _ => CrmError::Unavailable(message),
    }
}

impl Crm for HttpCrm {
    fn name(&self) -> &str {
        "http"
    }

    fn find_contact<'a>(
        &'a self,
        phone: &'a str,
    ) -> BoxFuture<'a, Result<Option<Contact>, CrmError>> {
        Box::pin(async move {
            let req = self.request(reqwest::Method::GET, self.url(&["contacts", phone], &[]));
            match self.execute(req, NotFound::IsNone).await? {
                Some(resp) => decode(resp).await.map(Some),
                None => Ok(None),
            }
        })
    }

    fn upsert_contact(&self, contact: Contact) -> BoxFuture<'_, Result<Contact, CrmError>> {
        Box::pin(self.put_contact(None, contact))
    }

    fn upsert_contact_keyed<'a>(
        &'a self,
        key: &'a str,
        contact: Contact,
    ) -> BoxFuture<'a, Result<Contact, CrmError>> {
        Box::pin(self.put_contact(Some(key), contact))
    }

    fn recent_calls<'a>(
        &'a self,
        phone: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CallRecord>, CrmError>> {
        Box::pin(async move {
            let limit = limit.to_string();
            let url = self.url(&["contacts", phone, "calls"], &[("limit", &limit)]);
            self.json(self.request(reqwest::Method::GET, url)).await
        })
    }

    fn record_call(&self, record: CallRecord) -> BoxFuture<'_, Result<(), CrmError>> {
        Box::pin(self.post_call(None, record))
    }

    fn record_call_keyed<'a>(
        &'a self,
        key: &'a str,
        record: CallRecord,
    ) -> BoxFuture<'a, Result<(), CrmError>> {
        Box::pin(self.post_call(Some(key), record))
    }

    fn book_visit(&self, booking: Booking) -> BoxFuture<'_, Result<BookingConfirmation, CrmError>> {
        Box::pin(async move {
            let req = self.request(reqwest::Method::POST, self.url(&["bookings"], &[]));
            let req = keyed(req, Some(&booking.idempotency_key))?.json(&booking);
            self.json(req).await
        })
    }

    fn bookings_for<'a>(
        &'a self,
        phone: &'a str,
    ) -> BoxFuture<'a, Result<Vec<BookingConfirmation>, CrmError>> {
        Box::pin(async move {
            let url = self.url(&["contacts", phone, "bookings"], &[]);
            self.json(self.request(reqwest::Method::GET, url)).await
        })
    }

    fn availability<'a>(
        &'a self,
        property_id: &'a str,
        date: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Slot>, CrmError>> {
        Box::pin(async move {
            let url = self.url(
                &["availability"],
                &[("property_id", property_id), ("date", date)],
            );
            self.json(self.request(reqwest::Method::GET, url)).await
        })
    }
}

#[cfg(test)]
mod tests;
