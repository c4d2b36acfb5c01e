use super::*;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode as Status, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

const TOKEN: &str = "Bearer test-token";
const SLOTS: [&str; 3] = ["10:00", "11:00", "12:00"];

/// A tiny external CRM.
#[derive(Default)]
struct Fake {
    contacts: Mutex<HashMap<String, Contact>>,
    calls: Mutex<Vec<CallRecord>>,
    /// (idempotency key, confirmation)
    bookings: Mutex<Vec<(String, BookingConfirmation)>>,
    fail_with: Mutex<Option<Status>>,
    delay: Mutex<Duration>,
    /// `Idempotency-Key` of each contact PUT and call POST ("" = none).
    write_keys: Mutex<Vec<String>>,
}

fn note_key(fake: &Fake, headers: &HeaderMap) {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    fake.write_keys.lock().unwrap().push(key.to_owned());
}

type Shared = State<Arc<Fake>>;

fn error(status: Status, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn gate(fake: &Fake, headers: &HeaderMap) -> Result<(), Response> {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(TOKEN) {
        return Err(error(Status::UNAUTHORIZED, "bad token"));
    }
    if headers.get("accept").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return Err(error(Status::NOT_ACCEPTABLE, "json only"));
    }
    let delay = *fake.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = *fake.fail_with.lock().unwrap() {
        return Err(error(status, "down for maintenance"));
    }
    Ok(())
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

async fn get_contact(
    State(fake): Shared,
    Path(phone): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&fake, &headers).await {
        return r;
    }
    match fake.contacts.lock().unwrap().get(&phone) {
        Some(c) => Json(c.clone()).into_response(),
        None => error(Status::NOT_FOUND, "no such contact"),
    }
}

async fn put_contact(
    State(fake): Shared,
    Path(phone): Path<String>,
    headers: HeaderMap,
    Json(mut contact): Json<Contact>,
) -> Response {
    if let Err(r) = gate(&fake, &headers).await {
        return r;
    }
    assert_eq!(phone, contact.phone);
    note_key(&fake, &headers);
    contact.updated_at = "2026-01-01T00:00:00Z".into();
    fake.contacts.lock().unwrap().insert(phone, contact.clone());
    Json(contact).into_response()
}

async fn get_calls(
    State(fake): Shared,
    Path(phone): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Err(r) = gate(&fake, &headers).await {
        return r;
    }
    let limit: usize = query_param(&uri, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10);
    let mut calls: Vec<CallRecord> = fake
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.phone == phone)
        .cloned()
        .collect();
    calls.sort_by(|a, b| b.started_at.cmp(&a.started_at));
    calls.truncate(limit);
    Json(calls).into_response()
}

async fn post_call(
    State(fake): Shared,
    headers: HeaderMap,
    Json(call): Json<CallRecord>,
) -> Response {
    if let Err(r) = gate(&fake, &headers).await {
        return r;
    }
    note_key(&fake, &headers);
    fake.calls.lock().unwrap().push(call);
    Status::NO_CONTENT.into_response()
}

async fn post_booking(State(fake): Shared, headers: HeaderMap, Json(b): Json<Booking>) -> Response {
    if let Err(r) = gate(&fake, &headers).await {
        return r;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if key != b.idempotency_key {
        return error(
            Status::BAD_REQUEST,
            "Idempotency-Key header missing or different",
        );
    }
    if b.date.len() != 10 {
        return error(Status::UNPROCESSABLE_ENTITY, "date must be YYYY-MM-DD");
    }
    let mut bookings = fake.bookings.lock().unwrap();
    if let Some((_, c)) = bookings.iter().find(|(k, _)| *k == key) {
        return (Status::OK, Json(c.clone())).into_response();
    }
    if bookings
        .iter()
        .any(|(_, c)| c.property_id == b.property_id && c.date == b.date && c.slot == b.slot)
    {
        return error(Status::CONFLICT, "slot already booked");
    }
    let confirmation = BookingConfirmation {
        booking_id: format!("EXT-{}", bookings.len() + 1),
        phone: b.phone,
        name: b.name,
        property_id: b.property_id,
        date: b.date,
        slot: b.slot,
        status: "confirmed".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
    };
    bookings.push((key.to_owned(), confirmation.clone()));
    (Status::CREATED, Json(confirmation)).into_response()
}

async fn get_bookings(
    State(fake): Shared,
    Path(phone): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&fake, &headers).await {
        return r;
    }
    let bookings: Vec<BookingConfirmation> = fake
        .bookings
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, c)| c.phone == phone)
        .map(|(_, c)| c.clone())
        .collect();
    Json(bookings).into_response()
}

async fn get_availability(State(fake): Shared, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(r) = gate(&fake, &headers).await {
        return r;
    }
    let (Some(property), Some(date)) =
        (query_param(&uri, "property_id"), query_param(&uri, "date"))
    else {
        return error(Status::BAD_REQUEST, "property_id and date required");
    };
    let bookings = fake.bookings.lock().unwrap();
    let slots: Vec<Slot> = SLOTS
        .iter()
        .filter(|s| {
            !bookings
                .iter()
                .any(|(_, c)| c.property_id == property && c.date == date && c.slot == **s)
        })
        .map(|s| Slot {
            start: (*s).to_owned(),
            end: format!("{}:00", &s[..2].parse::<u32>().unwrap() + 1),
        })
        .collect();
    Json(slots).into_response()
}

async fn start(fake: Arc<Fake>) -> String {
    let app = Router::new()
        .route("/api/contacts/{phone}", get(get_contact).put(put_contact))
        .route("/api/contacts/{phone}/calls", get(get_calls))
        .route("/api/contacts/{phone}/bookings", get(get_bookings))
        .route("/api/calls", post(post_call))
        .route("/api/bookings", post(post_booking))
        .route("/api/availability", get(get_availability))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/api/")
}

fn client(base: &str, timeout: Duration) -> HttpCrm {
    let _ = rustls::crypto::ring::default_provider().install_default();
    HttpCrm::new(&HttpCrmConfig {
        base_url: base.to_owned(),
        auth_header: Some(("Authorization".into(), TOKEN.into())),
        timeout,
        connect_timeout: Duration::from_secs(1),
    })
    .unwrap()
}

fn booking(key: &str, phone: &str, slot: &str) -> Booking {
    Booking {
        idempotency_key: key.into(),
        phone: phone.into(),
        name: Some("Asha Rao".into()),
        property_id: "P001".into(),
        date: "2099-01-10".into(),
        slot: slot.into(),
        notes: String::new(),
    }
}

#[tokio::test]
async fn talks_to_the_external_crm() {
    let fake = Arc::new(Fake::default());
    let crm = client(&start(fake.clone()).await, Duration::from_secs(2));
    let phone = "+919800000001";

    assert_eq!(crm.find_contact(phone).await.unwrap(), None);
    let stored = crm
        .upsert_contact(Contact {
            phone: phone.into(),
            name: Some("Asha Rao".into()),
            notes: "3 BHK".into(),
            updated_at: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(stored.updated_at, "2026-01-01T00:00:00Z");
    assert_eq!(crm.find_contact(phone).await.unwrap(), Some(stored));

    for (id, at) in [
        ("c1", "2026-01-01T10:00:00Z"),
        ("c2", "2026-01-02T10:00:00Z"),
    ] {
        let call = CallRecord {
            call_id: id.into(),
            phone: phone.into(),
            started_at: at.into(),
            summary: "asked about Whitefield".into(),
        };
        crm.record_call(call).await.unwrap();
    }
    let calls = crm.recent_calls(phone, 1).await.unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].call_id, "c2");

    let first = crm.book_visit(booking("k1", phone, "10:00")).await.unwrap();
    assert_eq!(first.booking_id, "EXT-1");
    let again = crm.book_visit(booking("k1", phone, "10:00")).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(fake.bookings.lock().unwrap().len(), 1);
    assert_eq!(crm.bookings_for(phone).await.unwrap(), [first]);

    let free = crm.availability("P001", "2099-01-10").await.unwrap();
    let starts: Vec<&str> = free.iter().map(|s| s.start.as_str()).collect();
    assert_eq!(starts, ["11:00", "12:00"]);
    assert_eq!(free[0].end, "12:00");
}

/// Writes made for the outbox carry its idempotency key as a header;
/// direct writes carry none.
#[tokio::test]
async fn keyed_writes_send_the_idempotency_key() {
    let fake = Arc::new(Fake::default());
    let crm = client(&start(fake.clone()).await, Duration::from_secs(2));
    let contact = Contact {
        phone: "+919800000001".into(),
        name: Some("Ravi".into()),
        notes: String::new(),
        updated_at: String::new(),
    };
    let call = CallRecord {
        call_id: "a1b2@127.0.0.1".into(),
        phone: contact.phone.clone(),
        started_at: "2026-01-01T10:00:00Z".into(),
        summary: String::new(),
    };
    crm.upsert_contact(contact.clone()).await.unwrap();
    crm.upsert_contact_keyed("contact:a1b2@127.0.0.1", contact)
        .await
        .unwrap();
    crm.record_call(call.clone()).await.unwrap();
    crm.record_call_keyed("call:a1b2@127.0.0.1", call.clone())
        .await
        .unwrap();
    assert_eq!(
        *fake.write_keys.lock().unwrap(),
        ["", "contact:a1b2@127.0.0.1", "", "call:a1b2@127.0.0.1"]
    );
    let err = crm.record_call_keyed("bad\nkey", call).await.unwrap_err();
    assert!(matches!(err, CrmError::Invalid(_)), "{err}");
}

#[tokio::test]
async fn statuses_map_to_errors() {
    let fake = Arc::new(Fake::default());
    let base = start(fake.clone()).await;
    let crm = client(&base, Duration::from_secs(2));
    crm.book_visit(booking("k1", "+919800000001", "10:00"))
        .await
        .unwrap();

    // 409: the slot is taken.
    let err = crm
        .book_visit(booking("k2", "+919800000002", "10:00"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CrmError::Rejected(m) if m.contains("409") && m.contains("slot already booked")),
        "{err}"
    );

    // 422: invalid.
    let mut bad = booking("k3", "+919800000002", "11:00");
    bad.date = "10 Jan".into();
    let err = crm.book_visit(bad).await.unwrap_err();
    assert!(matches!(err, CrmError::Invalid(_)), "{err}");

    // 401: a wrong token is rejected, not retried.
    let mut config = HttpCrmConfig::new(base.clone());
    config.auth_header = Some(("Authorization".into(), "Bearer wrong".into()));
    let unauthorised = HttpCrm::new(&config).unwrap();
    let err = unauthorised
        .find_contact("+919800000001")
        .await
        .unwrap_err();
    assert!(matches!(err, CrmError::Rejected(_)), "{err}");

    // 503: unavailable, retryable.
    *fake.fail_with.lock().unwrap() = Some(Status::SERVICE_UNAVAILABLE);
    let err = crm
        .book_visit(booking("k4", "+919800000002", "11:00"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CrmError::Unavailable(m) if m.contains("503")),
        "{err}"
    );
    assert!(err.is_retryable());
    assert!(matches!(
        crm.availability("P001", "2099-01-10").await,
        Err(CrmError::Unavailable(_))
    ));
    assert_eq!(fake.bookings.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_unavailable() {
    let fake = Arc::new(Fake::default());
    *fake.delay.lock().unwrap() = Duration::from_secs(5);
    let crm = client(&start(fake).await, Duration::from_millis(150));
    let started = std::time::Instant::now();
    let err = crm
        .book_visit(booking("k1", "+919800000001", "10:00"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CrmError::Unavailable(m) if m.contains("timed out")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // Nothing listens on a port we just released.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let crm = client(
        &format!("http://127.0.0.1:{port}/api"),
        Duration::from_secs(1),
    );
    let err = crm.find_contact("+919800000001").await.unwrap_err();
    assert!(matches!(err, CrmError::Unavailable(_)), "{err}");
}

#[test]
fn urls_are_built_and_checked() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let crm = HttpCrm::new(&HttpCrmConfig::new("https://crm.example.com/api/v1")).unwrap();
    assert_eq!(
        crm.url(&["contacts", "+91 98000/1"], &[]).as_str(),
        "https://crm.example.com/api/v1/contacts/+91%2098000%2F1"
    );
    let trailing = HttpCrm::new(&HttpCrmConfig::new("https://crm.example.com/api/v1/")).unwrap();
    assert_eq!(
        trailing
            .url(
                &["availability"],
                &[("property_id", "P 1"), ("date", "2099-01-10")]
            )
            .as_str(),
        "https://crm.example.com/api/v1/availability?property_id=P+1&date=2099-01-10"
    );
    assert!(matches!(
        HttpCrm::new(&HttpCrmConfig::new("mailto:x@y")),
        Err(CrmError::Invalid(_))
    ));
    assert!(matches!(
        HttpCrm::new(&HttpCrmConfig::new("not a url")),
        Err(CrmError::Invalid(_))
    ));
    let mut bad_header = HttpCrmConfig::new("https://crm.example.com");
    bad_header.auth_header = Some(("Bad Header".into(), "x".into()));
    assert!(matches!(
        HttpCrm::new(&bad_header),
        Err(CrmError::Invalid(_))
    ));
}
