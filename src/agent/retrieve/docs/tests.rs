use super::*;
use crate::agent::provider::SlotValue;

use std::fs;
use std::time::Duration;

const INVENTORY: &str = "\
id,project,locality,zone,bedrooms,price,status,property_type,carpet_area_sqft
P001,Prestige Lakeside Habitat,Whitefield,East Bangalore,3,1.18 crore,ready to move,apartment,1650
P002,Brigade Cornerstone,Whitefield,East Bangalore,2,0.85 crore,under construction,apartment,1180
P003,Sobha Dream Acres,Panathur,East Bangalore,3,1.35 crore,ready to move,apartment,1590
P004,Godrej Woodsman Estate,Hebbal,North Bangalore,3,1.6 crore,under construction,apartment,1900
P005,Purva Westend,Hosur Road,South Bangalore,2,72 lakh,ready to move,apartment,1100
P006,Prestige Park Grove,Whitefield,East Bangalore,4,2.1 crore,under construction,villa,2600
P007,\"Mahindra Eden, Phase 2\",Kanakapura Road,South Bangalore,3,\"1,05,00,000\",ready to move,apartment,1500
";

const POLICIES: &str = "\
# Policies

These policies apply to every project we sell.

## Site visits

Site visits are free. Visiting hours are 10 am to 6 pm, every day including Sundays.
Please carry a photo ID. A relationship manager meets you at the sales office.

## Cancellation policy

You can cancel or reschedule a site visit up to 2 hours before the slot at no charge.
After a unit is reserved, cancellation within 15 days refunds the token amount in full;
after 15 days a cancellation fee of 1% of the unit price applies.

## Token amount

A token amount of 2 lakh reserves a unit for 15 days. It is adjusted against the
booking amount and paid by cheque, card or bank transfer.
";

const PRICING: &str = "\
Pricing notes
=============

Prices are all-inclusive unless noted.

## Whitefield

Ready-to-move 3 BHK apartments in Whitefield range from 1.1 to 1.4 crore.
Prices include one covered car park.

## Payment plans

Under-construction projects offer a 20:80 plan: 20% on booking, 80% on possession.

```text
# not a heading: inside a code block
```

## Taxes and charges

GST is 5% on under-construction units and nil on ready-to-move units.
Stamp duty and registration add about 6.6% to the agreement value.
";

const FAQ: &str = r#"[
  {"question": "Is there a metro nearby?",
   "answer": "Yes, Kadugodi metro station is 2 km from Prestige Lakeside Habitat."},
  {"question": "Do you charge brokerage?",
   "answer": "No, buyers pay no brokerage.", "tags": ["fees", "brokerage"]}
]
"#;

struct Kb {
    dir: tempfile::TempDir,
}

impl Kb {
    fn new() -> Kb {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("inventory.csv"), INVENTORY).unwrap();
        fs::write(dir.path().join("policies.md"), POLICIES).unwrap();
        fs::write(dir.path().join("pricing.md"), PRICING).unwrap();
        fs::write(dir.path().join("faq.json"), FAQ).unwrap();
        Kb { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn files(&self) -> Vec<PathBuf> {
        ["inventory.csv", "policies.md", "pricing.md", "faq.json"]
            .iter()
            .map(|f| self.path(f))
            .collect()
    }

    fn source(&self) -> DocumentSource {
        DocumentSource::load("knowledge", &self.files()).unwrap()
    }
}

fn query(text: &str) -> Query {
    Query {
        text: text.to_owned(),
        limit: 5,
        ..Query::default()
    }
}

fn ids(docs: &[Document]) -> Vec<&str> {
    docs.iter().map(|d| d.id.as_str()).collect()
}

/// Writes `contents` and moves the modification time on, so the change is
/// seen even on file systems with coarse timestamps.
fn rewrite(path: &Path, contents: &str, bump: u64) {
    fs::write(path, contents).unwrap();
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(bump))
        .unwrap();
}

#[test]
fn loads_markdown_sections_csv_rows_and_json_objects() {
    let kb = Kb::new();
    let source = kb.source();
    let docs = source.documents();
    // 7 rows, 4 policy sections, 4 pricing sections, 2 FAQ entries.
    assert_eq!(docs.len(), 17, "{:#?}", ids(&docs));
    assert!(docs.iter().all(|d| d.source == "knowledge"));

    let prestige = docs.iter().find(|d| d.id == "inventory.csv#P001").unwrap();
    assert_eq!(prestige.title, "Prestige Lakeside Habitat");
    assert_eq!(
        prestige.text,
        "Prestige Lakeside Habitat, Whitefield, East Bangalore, 3 BHK, 1.18 crore, \
         ready to move, apartment, carpet area sqft 1650"
    );
    assert_eq!(prestige.fields["locality"], "Whitefield");
    assert_eq!(prestige.fields["bedrooms"], "3");
    let eden = docs.iter().find(|d| d.id == "inventory.csv#P007").unwrap();
    assert_eq!(eden.title, "Mahindra Eden, Phase 2");
    assert!(eden.text.contains("3 BHK, 1.05 crore"), "{}", eden.text);

    let cancel = docs
        .iter()
        .find(|d| d.id == "policies.md#cancellation-policy")
        .unwrap();
    assert_eq!(cancel.title, "Policies > Cancellation policy");
    assert!(cancel.text.starts_with("You can cancel"));
    assert_eq!(cancel.fields["line"], "10");
    // Setext H1, and a `#` line in a code block is no heading.
    let plans = docs
        .iter()
        .find(|d| d.id == "pricing.md#payment-plans")
        .unwrap();
    assert_eq!(plans.title, "Pricing notes > Payment plans");
    assert!(plans.text.contains("# not a heading"));
    assert!(docs.iter().any(|d| d.id == "pricing.md#pricing-notes"));

    let brokerage = docs.iter().find(|d| d.id == "faq.json#1").unwrap();
    assert_eq!(brokerage.title, "Do you charge brokerage?");
    assert_eq!(brokerage.fields["tags"], "fees, brokerage");
    assert!(brokerage.text.contains("buyers pay no brokerage"));

    // Version: RFC 3339 modification time and content hash.
    let version = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ#[0-9a-f]{8}$").unwrap();
    assert!(version.is_match(&prestige.version), "{}", prestige.version);
    assert_ne!(prestige.version, cancel.version);

    // A directory loads the same files.
    let dir = DocumentSource::load("knowledge", &[kb.dir.path().to_owned()]).unwrap();
    assert_eq!(dir.len(), 17);
}

#[test]
fn bm25_ranks_the_right_section_first() {
    let kb = Kb::new();
    let source = kb.source();
    let cases = [
        (
            "what is the cancellation policy",
            "policies.md#cancellation-policy",
        ),
        ("how much is the token amount", "policies.md#token-amount"),
        ("what are the site visit timings", "policies.md#site-visits"),
        (
            "is GST charged, what about stamp duty and registration",
            "pricing.md#taxes-and-charges",
        ),
        ("do you have a payment plan", "pricing.md#payment-plans"),
        ("is there a metro station nearby", "faq.json#0"),
        ("do I pay brokerage", "faq.json#1"),
        ("tell me about Sobha Dream Acres", "inventory.csv#P003"),
    ];
    for (text, want) in cases {
        let docs = source.search(&query(text));
        assert_eq!(
            docs.first().map(|d| d.id.as_str()),
            Some(want),
            "{text}: {:?}",
            ids(&docs)
        );
        assert!(docs.windows(2).all(|w| w[0].score >= w[1].score));
    }
    assert!(source.search(&query("zzz qqq")).is_empty());
}

#[test]
fn slots_filter_inventory_rows() {
    let kb = Kb::new();
    let source = kb.source();
    let mut q = query("three bedroom Whitefield under 1.2 crore");
    q.slots.insert("bedrooms".into(), SlotValue::Number(3.0));
    q.slots
        .insert("budget".into(), SlotValue::Money(12_000_000.0));
    q.slots
        .insert("location".into(), SlotValue::Text("Whitefield".into()));
    let docs = source.search(&q);
    assert_eq!(docs[0].id, "inventory.csv#P001", "{:?}", ids(&docs));
    for excluded in ["P002", "P003", "P004", "P006"] {
        assert!(
            !docs.iter().any(|d| d.id.ends_with(excluded)),
            "{excluded}: {:?}",
            ids(&docs)
        );
    }
    // Markdown is not filtered: the Whitefield pricing note still comes.
    assert!(docs.iter().any(|d| d.id == "pricing.md#whitefield"));

    // Budget alone: Sobha (1.35 crore) is over 1.2 crore + 10 %.
    let mut q = query("3 BHK ready to move East Bangalore");
    q.slots
        .insert("budget".into(), SlotValue::Money(12_000_000.0));
    q.slots
        .insert("location".into(), SlotValue::Text("East Bangalore".into()));
    let docs = source.search(&q);
    assert_eq!(docs[0].id, "inventory.csv#P001", "{:?}", ids(&docs));
    assert!(!docs.iter().any(|d| d.id.ends_with("P003")));
    // A 1.5 crore budget lets Sobha in.
    q.slots
        .insert("budget".into(), SlotValue::Money(15_000_000.0));
    let docs = source.search(&q);
    assert!(
        docs.iter().any(|d| d.id.ends_with("P003")),
        "{:?}",
        ids(&docs)
    );

    // Nothing in the words matches: the structured matches answer.
    let mut q = query("what options do you have");
    q.slots
        .insert("property_type".into(), SlotValue::Text("villa".into()));
    assert_eq!(ids(&source.search(&q)), ["inventory.csv#P006"]);

    // Remembered slots do not drown a policy question.
    let mut q = query("what is the cancellation policy");
    q.slots.insert("bedrooms".into(), SlotValue::Number(3.0));
    q.slots
        .insert("location".into(), SlotValue::Text("Whitefield".into()));
    assert_eq!(source.search(&q)[0].id, "policies.md#cancellation-policy");
}

fn load_one(name: &str, contents: &[u8]) -> LoadError {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, contents).unwrap();
    let err = DocumentSource::load("kb", std::slice::from_ref(&path)).unwrap_err();
    assert_eq!(err.file, path);
    assert!(
        err.to_string().starts_with(&path.display().to_string()),
        "{err}"
    );
    err
}

#[test]
fn parse_errors_name_file_and_line() {
    let err = load_one(
        "inventory.csv",
        b"id,project,price\nP1,A,1 crore\nP2,B\nP3,C,2 crore\n",
    );
    assert_eq!(err.line, Some(3));
    assert!(err.message.contains("2 fields"), "{err}");
    assert!(err.to_string().contains("inventory.csv:3: "), "{err}");

    let err = load_one("inventory.csv", b"id,project\nP1,\"Prestige\nP2,Brigade\n");
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("never closed"), "{err}");

    let err = load_one("inventory.csv", b"id,project,id\nP1,A,B\n");
    assert_eq!(
        (err.line, err.message.contains("duplicate")),
        (Some(1), true),
        "{err}"
    );

    let err = load_one("inventory.csv", b"");
    assert_eq!(err.line, Some(1));

    let err = load_one("faq.json", b"[\n  {\"q\": \"a\"},\n  {\"q\": \"b\",}\n]\n");
    assert_eq!(err.line, Some(3), "{err}");

    let err = load_one("faq.json", b"[\n  {\"q\": \"a\"},\n\n  \"loose\"\n]\n");
    assert_eq!(err.line, Some(4), "{err}");
    assert!(err.message.contains("element 2"), "{err}");

    let err = load_one("faq.json", b"42");
    assert_eq!(err.line, Some(1));

    let err = load_one(
        "policies.md",
        b"# Policies\n\nText.\n\n```\ncode\n## not a heading\n",
    );
    assert_eq!(err.line, Some(5), "{err}");
    assert!(err.message.contains("never closed"));

    let err = load_one("policies.md", b"# Policies\n\nText.\n\n##\n\nMore.\n");
    assert_eq!((err.line, err.message.as_str()), (Some(5), "empty heading"));

    let err = load_one("policies.md", b"# Policies\nok\n\xff\xfe bad\n");
    assert_eq!(
        (err.line, err.message.as_str()),
        (Some(3), "not valid UTF-8")
    );

    let err = load_one("notes.txt", b"hello");
    assert_eq!(err.line, None);

    let missing = DocumentSource::load("kb", &[PathBuf::from("/nonexistent/kb.md")]).unwrap_err();
    assert!(missing.message.contains("cannot read"), "{missing}");
}

#[test]
fn reload_picks_up_edited_files_and_keeps_serving_on_errors() {
    let kb = Kb::new();
    let source = kb.source();
    assert!(!source.reload_if_changed().unwrap());
    let before = source.search(&query("cancellation policy"))[0]
        .version
        .clone();

    // Edit: a new section appears, the version changes.
    let edited = format!("{POLICIES}\n## Pets\n\nPets are welcome on site visits if leashed.\n");
    rewrite(&kb.path("policies.md"), &edited, 2);
    assert!(source.reload_if_changed().unwrap());
    assert_eq!(
        source.search(&query("can I bring my dog or pets"))[0].id,
        "policies.md#pets"
    );
    let after = source.search(&query("cancellation policy"))[0]
        .version
        .clone();
    assert_ne!(before, after);
    assert!(!source.reload_if_changed().unwrap());

    // Touched without a change: no rebuild.
    rewrite(&kb.path("policies.md"), &edited, 4);
    assert!(!source.reload_if_changed().unwrap());

    // A broken edit: error, the loaded version keeps serving.
    rewrite(&kb.path("inventory.csv"), "id,project\nP1\n", 6);
    let err = source.reload_if_changed().unwrap_err();
    assert_eq!(err.line, Some(2));
    assert_eq!(source.reload_if_changed().unwrap_err(), err);
    assert_eq!(
        source.search(&query("Sobha Dream Acres"))[0].id,
        "inventory.csv#P003"
    );
    // Fixed: reloaded.
    rewrite(
        &kb.path("inventory.csv"),
        "id,project\nP9,Embassy Springs\n",
        8,
    );
    assert!(source.reload_if_changed().unwrap());
    assert_eq!(
        source.search(&query("Embassy Springs"))[0].id,
        "inventory.csv#P9"
    );
    assert!(source.search(&query("Sobha Dream Acres")).is_empty());

    // A directory source sees new files.
    let dir_source = DocumentSource::load("kb", &[kb.dir.path().to_owned()]).unwrap();
    fs::write(
        kb.path("parking.md"),
        "# Parking\n\nEvery unit has one covered car park.\n",
    )
    .unwrap();
    assert!(dir_source.reload_if_changed().unwrap());
    assert_eq!(
        dir_source.search(&query("covered parking"))[0].id,
        "parking.md#parking"
    );
}

#[tokio::test]
async fn auto_reload_runs_from_searches() {
    let kb = Kb::new();
    let source = kb.source().with_auto_reload(Duration::ZERO);
    rewrite(
        &kb.path("pricing.md"),
        "# Pricing\n\nFloor rise is 50 rupees per sqft per floor.\n",
        2,
    );
    let docs = source.retrieve(&query("floor rise charges")).await.unwrap();
    assert_eq!(docs[0].id, "pricing.md#pricing");
}

#[test]
fn search_is_fast_for_a_few_hundred_documents() {
    let dir = tempfile::tempdir().unwrap();
    let localities = [
        "Whitefield",
        "Panathur",
        "Hebbal",
        "Sarjapur Road",
        "Electronic City",
        "Yelahanka",
    ];
    let builders = [
        "Prestige",
        "Brigade",
        "Sobha",
        "Godrej",
        "Purva",
        "Mahindra",
        "Embassy",
        "Salarpuria",
    ];
    let mut csv = String::from("id,project,locality,zone,bedrooms,price,status\n");
    for i in 0..400 {
        csv.push_str(&format!(
            "U{i:03},{} {} Tower {},{},Bangalore,{},{:.2} crore,{}\n",
            builders[i % builders.len()],
            ["Lakeside", "Heights", "Park", "Grove", "Enclave"][i % 5],
            i / 40,
            localities[i % localities.len()],
            2 + i % 3,
            0.6 + (i % 17) as f64 * 0.1,
            if i % 2 == 0 {
                "ready to move"
            } else {
                "under construction"
            },
        ));
    }
    fs::write(dir.path().join("inventory.csv"), csv).unwrap();
    let mut md = String::from("# Policies\n\n");
    for i in 0..100 {
        md.push_str(&format!(
            "## Topic {i}\n\nPolicy text about visits, refunds, parking and maintenance number {i}.\n\n"
        ));
    }
    fs::write(dir.path().join("policies.md"), md).unwrap();
    let started = Instant::now();
    let source = DocumentSource::load("kb", &[dir.path().to_owned()]).unwrap();
    let load = started.elapsed();
    assert_eq!(source.len(), 500);

    let mut q = query("three bedroom ready to move in Whitefield under 1.2 crore");
    q.slots.insert("bedrooms".into(), SlotValue::Number(3.0));
    q.slots
        .insert("budget".into(), SlotValue::Money(12_000_000.0));
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        assert!(!source.search(&q).is_empty());
        assert!(
            !source
                .search(&query("what is the refund policy"))
                .is_empty()
        );
    }
    let per_search = started.elapsed() / (2 * rounds);
    println!("500 documents: load {load:?}, {per_search:?} per search");
    assert!(per_search < Duration::from_millis(20), "{per_search:?}");
}

#[test]
fn the_source_version_follows_contents_and_updated_at_the_files() {
    let kb = Kb::new();
    let newest = |source: &DocumentSource| source.freshness().unwrap();
    let source = kb.source();
    let loaded = newest(&source);
    assert_eq!(loaded.version.len(), 16, "{loaded:?}");
    let mtime = |name: &str| fs::metadata(kb.path(name)).unwrap().modified().unwrap();
    let files = ["inventory.csv", "policies.md", "pricing.md", "faq.json"];
    assert_eq!(
        loaded.updated_at,
        files.iter().map(|f| mtime(f)).max(),
        "the newest file's modification time"
    );
    // The same files loaded again: the same version.
    assert_eq!(kb.source().freshness().unwrap().version, loaded.version);

    // Edited and reloaded: a new version, a later update time.
    let edited = format!("{POLICIES}\n## Pets\n\nPets are welcome if leashed.\n");
    rewrite(&kb.path("policies.md"), &edited, 20);
    assert!(source.reload_if_changed().unwrap());
    let reloaded = newest(&source);
    assert_ne!(reloaded.version, loaded.version);
    assert_eq!(reloaded.updated_at, Some(mtime("policies.md")));
    assert!(reloaded.updated_at > loaded.updated_at);

    // Rewritten with the same contents: the version stays, the update time
    // moves (the data is confirmed current).
    rewrite(&kb.path("policies.md"), &edited, 40);
    assert!(!source.reload_if_changed().unwrap());
    let touched = newest(&source);
    assert_eq!(touched.version, reloaded.version);
    assert!(touched.updated_at > reloaded.updated_at);

    // Back to the first contents: the first version again.
    rewrite(&kb.path("policies.md"), POLICIES, 60);
    assert!(source.reload_if_changed().unwrap());
    assert_eq!(newest(&source).version, loaded.version);
}

#[tokio::test]
async fn auto_reload_changes_the_version_seen_by_retrievals() {
    let kb = Kb::new();
    let source = kb.source().with_auto_reload(Duration::ZERO);
    let q = query("cancellation policy");
    source.retrieve(&q).await.unwrap();
    let before = source.freshness().unwrap().version;
    rewrite(
        &kb.path("policies.md"),
        &POLICIES.replace("2 hours before", "4 hours before"),
        5,
    );
    source.retrieve(&q).await.unwrap();
    assert_ne!(source.freshness().unwrap().version, before);
}
