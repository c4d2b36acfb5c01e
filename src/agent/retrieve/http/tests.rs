use super::*;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::get;

use crate::agent::provider::SlotValue;
use crate::agent::retrieve::orchestrator::{RetrievalOrchestrator, SourceConfig};

/// A tiny search service: answers every request with `body` and `status`
/// after `delay`, and keeps the query strings it was sent.
struct Fake {
    status: Mutex<StatusCode>,
    body: Mutex<String>,
    delay: Mutex<Duration>,
    seen: Mutex<Vec<String>>,
}

impl Fake {
    fn new(body: serde_json::Value) -> Arc<Fake> {
        Arc::new(Fake {
            status: Mutex::new(StatusCode::OK),
            body: Mutex::new(body.to_string()),
            delay: Mutex::new(Duration::ZERO),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn answer(&self, status: StatusCode, body: &str) {
        *self.status.lock().unwrap() = status;
        *self.body.lock().unwrap() = body.to_owned();
    }

    fn pairs(&self, n: usize) -> Vec<(String, String)> {
        let seen = self.seen.lock().unwrap();
        let url = Url::parse(&format!("http://x/?{}", seen[n])).unwrap();
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

async fn search(State(fake): State<Arc<Fake>>, uri: Uri) -> AxumResponse {
    fake.seen
        .lock()
        .unwrap()
        .push(uri.query().unwrap_or_default().to_owned());
    let delay = *fake.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = *fake.status.lock().unwrap();
    let body = fake.body.lock().unwrap().clone();
    (status, [("content-type", "application/json")], body).into_response()
}

async fn start(fake: Arc<Fake>) -> String {
    let app = Router::new().route("/search", get(search)).with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/search?tenant=greenfield")
}

fn listings() -> serde_json::Value {
    serde_json::json!({
        "version": "2026-04-20.3",
        "updated_at": "2026-04-20T10:15:02Z",
        "documents": [
            {
                "id": "P001",
                "title": "Lakeview Greens",
                "text": "Lakeview Greens, Whitefield, 3 BHK, 1.15 crore",
                "fields": {
                    "Project": "Lakeview Greens",
                    "locality": "Whitefield",
                    "bedrooms": 3,
                    "ready": true,
                    "amenities": ["pool", "gym"],
                    "address": { "pin code": "560066" },
                    "floor": null
                }
            },
            { "id": "P002", "title": "Lakeview Greens", "text": "2 BHK" },
            { "id": "P003", "title": "Palm Court", "text": "villa" }
        ]
    })
}

fn query(text: &str, limit: usize) -> Query {
    let mut slots = BTreeMap::new();
    slots.insert("bedrooms".to_owned(), SlotValue::Number(3.0));
    slots.insert("location".to_owned(), SlotValue::Text("Whitefield".into()));
    Query {
        text: text.into(),
        intent: Some("search_property".into()),
        slots,
        caller: Some("+919800000001".into()),
        limit,
    }
}

fn source(url: &str, timeout_ms: u64) -> HttpSource {
    HttpSource::new("inventory", url, Duration::from_millis(timeout_ms)).unwrap()
}

#[tokio::test]
async fn documents_come_back_like_file_documents() {
    let fake = Fake::new(listings());
    let url = start(fake.clone()).await;
    let inventory = source(&url, 1000);
    assert_eq!(inventory.freshness(), None);

    let docs = inventory
        .retrieve(&query("3 bhk & more in Whitefield?", 2))
        .await
        .unwrap();
    assert_eq!(docs.len(), 2, "k caps the documents used");
    let top = &docs[0];
    assert_eq!(
        (top.source.as_str(), top.id.as_str(), top.title.as_str()),
        ("inventory", "P001", "Lakeview Greens")
    );
    assert_eq!(top.version, "2026-04-20.3");
    let field = |k: &str| top.fields.get(k).map(String::as_str);
    assert_eq!(field("project"), Some("Lakeview Greens"));
    assert_eq!(field("bedrooms"), Some("3"));
    assert_eq!(field("ready"), Some("true"));
    assert_eq!(field("amenities"), Some("pool, gym"));
    assert_eq!(field("address.pin_code"), Some("560066"));
    assert_eq!(field("floor"), None);
    assert!(docs[0].score > docs[1].score, "the service's order ranks");
    assert!(docs[1].fields.is_empty());

    let pairs = fake.pairs(0);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(
        get("tenant"),
        Some("greenfield"),
        "the URL's own query kept"
    );
    assert_eq!(get("q"), Some("3 bhk & more in Whitefield?"));
    assert_eq!(get("k"), Some("2"));
    assert_eq!(get("intent"), Some("search_property"));
    assert_eq!(get("slot.bedrooms"), Some("3"));
    assert_eq!(get("slot.location"), Some("Whitefield"));
    assert!(!pairs.iter().any(|(_, v)| v.contains("+9198")), "no caller");

    let f = inventory.freshness().unwrap();
    assert_eq!(f.version, "2026-04-20.3");
    assert_eq!(
        f.updated_at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_776_680_102))
    );
}

#[tokio::test]
async fn explicit_scores_rank_and_version_fields_are_optional() {
    let fake = Fake::new(serde_json::json!({
        "documents": [
            { "id": "a", "score": 0.5 },
            { "id": "b", "score": 2.0 }
        ]
    }));
    let url = start(fake).await;
    let inventory = source(&url, 1000);
    let orchestrator = RetrievalOrchestrator::new(vec![SourceConfig {
        retriever: Arc::new(inventory),
        deadline: Duration::from_secs(1),
        cache_ttl: Duration::ZERO,
        essential: true,
    }]);
    let outcome = orchestrator.retrieve(&query("anything", 5)).await;
    let ids: Vec<&str> = outcome
        .retrieval
        .documents
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(ids, ["b", "a"]);
    let r = &outcome.retrieval.sources[0];
    assert!(r.version.is_none() && r.updated_at.is_none() && r.age_s.is_none());
}

#[tokio::test]
async fn failures_are_source_failures() {
    let fake = Fake::new(listings());
    let url = start(fake.clone()).await;
    let inventory = source(&url, 300);
    let q = query("lakeview", 5);

    fake.answer(StatusCode::SERVICE_UNAVAILABLE, "{}");
    let e = inventory.retrieve(&q).await.unwrap_err().to_string();
    assert!(e.contains("503"), "{e}");

    fake.answer(StatusCode::OK, "<html>oops</html>");
    let e = inventory.retrieve(&q).await.unwrap_err().to_string();
    assert!(e.contains("bad response"), "{e}");

    fake.answer(StatusCode::OK, r#"{"results": []}"#);
    let e = inventory.retrieve(&q).await.unwrap_err().to_string();
    assert!(e.contains("documents"), "{e}");

    fake.answer(
        StatusCode::OK,
        r#"{"updated_at": "yesterday", "documents": []}"#,
    );
    let e = inventory.retrieve(&q).await.unwrap_err().to_string();
    assert!(e.contains("RFC 3339"), "{e}");

    fake.answer(StatusCode::OK, &listings().to_string());
    *fake.delay.lock().unwrap() = Duration::from_millis(1000);
    let e = inventory.retrieve(&q).await.unwrap_err().to_string();
    assert!(e.contains("timed out"), "{e}");

    // Nothing listens on a port just freed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let refused = source(&format!("http://127.0.0.1:{port}/search"), 300);
    let e = refused.retrieve(&q).await.unwrap_err().to_string();
    assert!(e.contains("cannot connect"), "{e}");
}

#[tokio::test]
async fn a_failing_service_gets_the_stale_answer_or_a_partial_retrieval() {
    let fake = Fake::new(listings());
    let url = start(fake.clone()).await;
    let orchestrator = RetrievalOrchestrator::new(vec![SourceConfig {
        retriever: Arc::new(source(&url, 150)),
        deadline: Duration::from_millis(150),
        cache_ttl: Duration::ZERO,
        essential: true,
    }])
    .with_max_age("inventory", Duration::from_secs(3600));
    let q = query("lakeview greens", 5);

    let first = orchestrator.retrieve(&q).await;
    let r = &first.retrieval.sources[0];
    assert!(!r.cached && !r.stale && r.hits == 3, "{r:?}");
    assert_eq!(r.version.as_deref(), Some("2026-04-20.3"));
    assert_eq!(r.updated_at.as_deref(), Some("2026-04-20T10:15:02Z"));
    assert!(r.too_old, "April 2026 data is more than an hour old: {r:?}");

    // Slower than the deadline: the cached answer, marked stale.
    *fake.delay.lock().unwrap() = Duration::from_secs(2);
    let second = orchestrator.retrieve(&q).await;
    let r = &second.retrieval.sources[0];
    assert!(r.timed_out && r.cached && r.stale && r.hits == 3, "{r:?}");
    assert!(r.elapsed_ms < 1000.0, "{r:?}");
    assert_eq!(r.version.as_deref(), Some("2026-04-20.3"));
    assert!(!second.retrieval.partial && second.essential_failed.is_empty());
    assert_eq!(
        second.retrieval.documents[0].fields["project"],
        "Lakeview Greens"
    );

    // Another question, nothing cached: partial, the essential source named.
    let third = orchestrator.retrieve(&query("palm court", 5)).await;
    assert!(third.retrieval.partial);
    assert_eq!(third.essential_failed, ["inventory"]);
    assert!(third.retrieval.documents.is_empty());
}
