//! A knowledge source behind HTTP: a search service the agent asks for
//! every query (`kind = "http"` in the agent definition).
//!
//! ## Request
//!
//! `GET {url}?q=<query text>&k=<max documents>` plus, when known,
//! `intent=<intent>` and one `slot.<name>=<value>` per slot
//! (`slot.bedrooms=3&slot.location=Whitefield`). Parameters are appended to
//! any query string the configured URL already has and are
//! percent-encoded. `Accept: application/json`. The whole request (connect,
//! headers, body) must finish within the source's `deadline_ms`.
//!
//! ## Response
//!
//! `200` (any 2xx) with a JSON body:
//!
//! ```json
//! {
//!   "version": "2026-04-20.3",
//!   "updated_at": "2026-04-20T10:15:02Z",
//!   "documents": [
//!     { "id": "P001", "title": "Lakeview Greens", "text": "3 BHK, 1.15 crore",
//!       "fields": { "project": "Lakeview Greens", "bedrooms": 3 },
//!       "score": 7.5 }
//!   ]
//! }
//! ```
//!
//! * `documents` is required; best first. `id` is required; `title`,
//!   `text`, `fields` and `score` are optional. Without scores the order
//!   of the array is the ranking.
//! * `fields` become the document's fields exactly as with CSV and JSON
//!   files: keys in lowercase `snake_case`, numbers and booleans as text,
//!   nested objects as `parent.child`, arrays of scalars comma-separated,
//!   `null` dropped. So `{inventory.project}` in a reply template reads the
//!   same whether `inventory` is a CSV file or this service.
//! * `version` (any string) and `updated_at` (RFC 3339) are optional; when
//!   present they are what the retrieval report and the drift check
//!   (`max_age_s`) use. An `updated_at` that is not RFC 3339 makes the
//!   answer invalid.
//! * At most `k` documents are used; more are ignored.
//!
//! Connection failures, timeouts ([`AgentError::Timeout`], reported as
//! `timed_out` like the orchestrator's own deadline), non-2xx statuses, bodies over
//! [`MAX_BODY_BYTES`] and bodies that are not this JSON are failures of the
//! source: the orchestrator serves its cached answer if it has one, or
//! marks the retrieval partial.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use reqwest::{Client, Url};
use serde::Deserialize;

use crate::agent::provider::{AgentError, BoxFuture, Document, Freshness, Query, Retriever};

use super::docs::{self, DEFAULT_LIMIT};

/// Largest response body accepted.
pub const MAX_BODY_BYTES: usize = 4 << 20;

#[derive(Debug, Deserialize)]
struct Response {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    documents: Vec<ResponseDocument>,
}

#[derive(Debug, Deserialize)]
struct ResponseDocument {
    id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    fields: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    score: Option<f32>,
}

/// A search service over HTTP as a retrieval source (see the module doc).
#[derive(Debug)]
pub struct HttpSource {
    name: String,
    url: Url,
    client: Client,
    last: Mutex<Option<Freshness>>,
}

impl HttpSource {
    /// The source `name` asking `url`, each request bounded by `timeout`.
    ///
    /// # Errors
    /// A URL that is not `http://` or `https://`, or a client that cannot
    /// be built.
    pub fn new(name: &str, url: &str, timeout: Duration) -> Result<HttpSource, AgentError> {
        let url = Url::parse(url).map_err(|e| AgentError::config(name, format!("url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(AgentError::config(
                name,
                format!("url: {url} is not http:// or https://"),
            ));
        }
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| AgentError::config(name, format!("http client: {e}")))?;
        Ok(HttpSource {
            name: name.to_owned(),
            url,
            client,
            last: Mutex::new(None),
        })
    }

    /// The URL asked for `query`.
    fn request_url(&self, query: &Query) -> Url {
        let mut url = self.url.clone();
        {
            let limit = if query.limit == 0 {
                DEFAULT_LIMIT
            } else {
                query.limit
            };
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("q", &query.text);
            pairs.append_pair("k", &limit.to_string());
            if let Some(intent) = &query.intent {
                pairs.append_pair("intent", intent);
            }
            for (name, value) in &query.slots {
                pairs.append_pair(&format!("slot.{name}"), &value.as_text());
            }
        }
        url
    }

    async fn ask(&self, query: &Query) -> Result<Vec<Document>, AgentError> {
        let fail = |what: String| AgentError::unavailable(&self.name, what);
        let response = self
            .client
            .get(self.request_url(query))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.error(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}")));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(fail("response body too large".into()));
        }
        let body = response.bytes().await.map_err(|e| self.error(&e))?;
        if body.len() > MAX_BODY_BYTES {
            return Err(fail("response body too large".into()));
        }
        let parsed: Response =
            serde_json::from_slice(&body).map_err(|e| fail(format!("bad response: {e}")))?;
        let updated_at =
            match &parsed.updated_at {
                Some(t) => Some(parse_rfc3339(t).ok_or_else(|| {
                    fail(format!("bad response: updated_at {t:?} is not RFC 3339"))
                })?),
                None => None,
            };
        let version = parsed.version.clone().unwrap_or_default();
        let freshness = (parsed.version.is_some() || updated_at.is_some()).then(|| Freshness {
            version: version.clone(),
            updated_at,
        });
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = freshness;
        Ok(self.documents(parsed, &version, query.limit))
    }

    /// A request failure: [`AgentError::Timeout`] past the deadline, else
    /// the service is unavailable.
    fn error(&self, e: &reqwest::Error) -> AgentError {
        if e.is_timeout() {
            AgentError::Timeout(self.name.clone())
        } else {
            AgentError::unavailable(&self.name, describe(e))
        }
    }

    fn documents(&self, parsed: Response, version: &str, limit: usize) -> Vec<Document> {
        let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
        let n = parsed.documents.len().min(limit);
        parsed
            .documents
            .into_iter()
            .take(n)
            .enumerate()
            .map(|(rank, d)| {
                let mut flat = Vec::new();
                docs::flatten("", &serde_json::Value::Object(d.fields), &mut flat);
                let fields: BTreeMap<String, String> = flat.into_iter().collect();
                Document {
                    source: self.name.clone(),
                    id: d.id,
                    title: d.title,
                    text: d.text,
                    fields,
                    version: version.to_owned(),
                    // Without scores, the service's order is the ranking.
                    score: d.score.unwrap_or((n - rank) as f32),
                }
            })
            .collect()
    }
}

impl Retriever for HttpSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn retrieve<'a>(
        &'a self,
        query: &'a Query,
    ) -> BoxFuture<'a, Result<Vec<Document>, AgentError>> {
        Box::pin(self.ask(query))
    }

    fn freshness(&self) -> Option<Freshness> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What went wrong with a request, in a few words.
fn describe(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "cannot connect".into()
    } else if e.is_decode() || e.is_body() {
        format!("bad response body: {e}")
    } else {
        e.to_string()
    }
}

/// RFC 3339 → a system time.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc3339(s.trim()).ok()?;
    let secs = t.timestamp();
    let nanos = t.timestamp_subsec_nanos();
    if secs >= 0 {
        Some(SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nanos))
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .map(|t| t + Duration::from_nanos(u64::from(nanos)))
    }
}

#[cfg(test)]
mod tests;
