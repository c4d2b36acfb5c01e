//! A fake external CRM for tests against the binary: the REST shape of
//! `src/agent/crm/http.rs`, served by axum on 127.0.0.1 from its own
//! tokio runtime, that can be switched down (every request answered 503)
//! and up, and counts every write it gets by kind and idempotency key.
//! Also: an agent definition pointed at it, and a reader of the outbox
//! file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// One write request as the fake CRM answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// `booking`, `call` or `contact`.
    pub kind: &'static str,
    /// Its `Idempotency-Key` header ("" when none).
    pub key: String,
    /// The status it got.
    pub status: u16,
}

/// What the fake CRM holds and has seen.
#[derive(Default)]
pub struct CrmState {
    down: AtomicBool,
    writes: Mutex<Vec<Write>>,
    /// Confirmations by idempotency key.
    bookings: Mutex<HashMap<String, Value>>,
    calls: Mutex<Vec<Value>>,
    contacts: Mutex<HashMap<String, Value>>,
}

/// The fake CRM; stops when dropped.
pub struct FakeCrm {
    /// Base URL, e.g. `http://127.0.0.1:41234/api`.
    pub url: String,
    state: Arc<CrmState>,
    rt: Option<tokio::runtime::Runtime>,
}

type Shared = State<Arc<CrmState>>;

fn key_of(headers: &HeaderMap) -> String {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "down for maintenance"})),
    )
        .into_response()
}

impl CrmState {
    fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Notes a write; `None` when it is to be answered 503.
    fn write(&self, kind: &'static str, headers: &HeaderMap) -> Option<String> {
        let key = key_of(headers);
        let down = self.is_down();
        self.writes.lock().unwrap().push(Write {
            kind,
            key: key.clone(),
            status: if down { 503 } else { 200 },
        });
        (!down).then_some(key)
    }
}

async fn get_contact(State(s): Shared, UrlPath(phone): UrlPath<String>) -> Response {
    if s.is_down() {
        return unavailable();
    }
    match s.contacts.lock().unwrap().get(&phone) {
        Some(c) => Json(c.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such contact"})),
        )
            .into_response(),
    }
}

async fn put_contact(
    State(s): Shared,
    UrlPath(phone): UrlPath<String>,
    headers: HeaderMap,
    Json(mut contact): Json<Value>,
) -> Response {
    if s.write("contact", &headers).is_none() {
        return unavailable();
    }
    contact["updated_at"] = json!("2026-01-01T00:00:00Z");
    s.contacts.lock().unwrap().insert(phone, contact.clone());
    Json(contact).into_response()
}

async fn empty_list(State(s): Shared) -> Response {
    if s.is_down() {
        return unavailable();
    }
    Json(json!([])).into_response()
}

async fn post_call(State(s): Shared, headers: HeaderMap, Json(call): Json<Value>) -> Response {
    if s.write("call", &headers).is_none() {
        return unavailable();
    }
    s.calls.lock().unwrap().push(call);
    StatusCode::NO_CONTENT.into_response()
}

async fn post_booking(State(s): Shared, headers: HeaderMap, Json(b): Json<Value>) -> Response {
    let Some(key) = s.write("booking", &headers) else {
        return unavailable();
    };
    let mut bookings = s.bookings.lock().unwrap();
    let n = bookings.len() + 1;
    let confirmation = bookings.entry(key).or_insert_with(|| {
        json!({
            "booking_id": format!("EXT-{n}"),
            "phone": b["phone"],
            "name": b["name"],
            "property_id": b["property_id"],
            "date": b["date"],
            "slot": b["slot"],
            "status": "confirmed",
            "created_at": "2026-01-01T00:00:00Z",
        })
    });
    Json(confirmation.clone()).into_response()
}

async fn availability(State(s): Shared) -> Response {
    if s.is_down() {
        return unavailable();
    }
    Json(json!([{"start": "11:00", "end": "12:00"}])).into_response()
}

impl FakeCrm {
    /// Starts the fake CRM on 127.0.0.1 (a kernel-chosen port), up.
    pub fn start() -> FakeCrm {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the fake CRM");
        let state = Arc::new(CrmState::default());
        let app = Router::new()
            .route("/api/contacts/{phone}", get(get_contact).put(put_contact))
            .route("/api/contacts/{phone}/calls", get(empty_list))
            .route("/api/contacts/{phone}/bookings", get(empty_list))
            .route("/api/calls", post(post_call))
            .route("/api/bookings", post(post_booking))
            .route("/api/availability", get(availability))
            .with_state(Arc::clone(&state));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the fake CRM");
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
        FakeCrm {
            url: format!("http://{addr}/api"),
            state,
            rt: Some(rt),
        }
    }

    /// Answers every request 503 (`true`) or serves (`false`).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Every write request so far.
    pub fn writes(&self) -> Vec<Write> {
        self.state.writes.lock().unwrap().clone()
    }

    /// Writes of `kind` answered 2xx.
    pub fn delivered(&self, kind: &str) -> Vec<Write> {
        self.writes()
            .into_iter()
            .filter(|w| w.kind == kind && w.status < 300)
            .collect()
    }

    /// Writes of `kind` answered 503.
    pub fn refused(&self, kind: &str) -> usize {
        self.writes()
            .iter()
            .filter(|w| w.kind == kind && w.status == 503)
            .count()
    }

    /// Idempotency keys of the writes of `kind` answered 2xx, with how
    /// many times each arrived.
    pub fn delivered_keys(&self, kind: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for w in self.delivered(kind) {
            *out.entry(w.key).or_insert(0) += 1;
        }
        out
    }

    /// The call records received, as JSON.
    pub fn calls(&self) -> Vec<Value> {
        self.state.calls.lock().unwrap().clone()
    }

    /// The booking confirmations, by key.
    pub fn bookings(&self) -> HashMap<String, Value> {
        self.state.bookings.lock().unwrap().clone()
    }
}

impl Drop for FakeCrm {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Points the default agent of a copied dialplan directory at the fake CRM
/// (REST connector) with its outbox in the copy's `var/`, retrying quickly
/// (from 300 ms, at most 2 s apart). Returns the agent's `var/` directory.
pub fn use_fake_crm(plans: &Path, crm_url: &str) -> PathBuf {
    let agent = plans.join("agents/realestate");
    let path = agent.join("agent.toml");
    let text = std::fs::read_to_string(&path).expect("agent definition");
    let mut replaced = (false, false);
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("sqlite =") {
                replaced.0 = true;
                format!("http = {{ base_url = \"{crm_url}\", timeout_ms = 1000 }}")
            } else if l.trim_start().starts_with("outbox =") {
                replaced.1 = true;
                "outbox = { path = \"var/outbox.sqlite\", first_retry_ms = 300, max_retry_s = 2, \
                 give_up_s = 600, attempt_ms = 1000 }"
                    .to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert_eq!(
        replaced,
        (true, true),
        "agent.toml has no `sqlite =` or `outbox =` line in [crm]"
    );
    std::fs::write(&path, lines.join("\n") + "\n").expect("write agent definition");
    agent.join("var")
}

/// One row of the outbox file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// The idempotency key.
    pub key: String,
    /// `booking`, `call` or `contact`.
    pub kind: String,
    /// `pending`, `delivered`, `rejected` or `dead`.
    pub state: String,
    /// Delivery attempts made.
    pub attempts: u32,
}

/// The rows of the outbox file (none when it does not exist yet).
pub fn outbox_rows(path: &Path) -> Vec<OutboxRow> {
    if !path.exists() {
        return Vec::new();
    }
    let db = rusqlite::Connection::open(path).expect("open the outbox file");
    db.busy_timeout(std::time::Duration::from_secs(2)).unwrap();
    let mut stmt = db
        .prepare("SELECT key, kind, state, attempts FROM outbox ORDER BY key")
        .expect("the outbox table");
    stmt.query_map([], |r| {
        Ok(OutboxRow {
            key: r.get(0)?,
            kind: r.get(1)?,
            state: r.get(2)?,
            attempts: r.get(3)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}
