//! Local knowledge files: Markdown, CSV and JSON next to the agent
//! definition, loaded into memory and searched with BM25 plus structured
//! filters.
//!
//! - **Markdown** is split into sections at headings (ATX `#`… and setext
//!   underlines; headings inside fenced code blocks do not count). Each
//!   non-empty section is a [`Document`] whose title is the heading path
//!   (`Policies > Cancellation policy`) and whose id is `file#slug`
//!   (`policies.md#cancellation-policy`; repeated slugs get `-2`, `-3`).
//!   An unclosed code fence or an empty heading is an error.
//! - **CSV** (RFC 4180: quoted fields, `""` escapes, newlines in quotes; a
//!   header row) gives one document per row. Column names are normalised to
//!   lowercase `snake_case` and become the document's `fields`; the id is
//!   `file#<value of an id column>` (`id`, `unit_id`, `property_id`...) or
//!   `file#row-<line>`; the title is the `name`/`project`/`title` column; the
//!   text is a readable rendering of the values, e.g. `Prestige Lakeside
//!   Habitat, Whitefield, East Bangalore, 3 BHK, 1.18 crore, ready to move`
//!   (a bare bedroom count becomes `3 BHK`, a bare price in a price column
//!   `1.18 crore`, another bare number `carpet area sqft 1650`).
//! - **JSON**: an array of objects gives one document per object, an object
//!   one document. Nested keys flatten to `parent.child`, arrays of scalars
//!   to comma-separated text. Ids and titles as for CSV.
//!
//! A document's `version` is its file's modification time (RFC 3339, UTC)
//! and a short content hash: `2026-04-20T10:15:02Z#3f9a1c0e`.
//!
//! The source as a whole ([`Retriever::freshness`]) has a `version` that is
//! a hash of every file's name and contents (16 hex digits; it changes
//! when any content changes and only then) and an `updated_at` that is the
//! newest modification time of its files. A file rewritten with the same
//! contents keeps the version but moves `updated_at`: whoever exports the
//! data has confirmed it is current.
//!
//! ## Why a small in-memory BM25 and not tantivy
//!
//! An agent's knowledge is a knowledge base, not a corpus: a few policy
//! pages, a pricing note and an inventory of tens to hundreds of rows. An
//! inverted index over that fits in a few hundred kilobytes, builds in
//! about a millisecond and answers in microseconds, so it is rebuilt from
//! the files on every load and reload: there is no on-disk index to create,
//! version, lock, migrate or get out of step with the files, and no
//! segment merging or writer threads. tantivy would bring all of that (and
//! its dependency tree) to save nothing measurable at this size.
//!
//! ## Reloading
//!
//! [`DocumentSource::reload_if_changed`] stats every file (and re-lists
//! directories) and only reads files whose modification time or size
//! changed; it rebuilds the index when a content hash differs or files came
//! or went. A reload that fails leaves the previous index serving.
//! [`DocumentSource::with_auto_reload`] makes searches run that check at
//! most once per interval.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::agent::provider::{AgentError, BoxFuture, Document, Freshness, Query, Retriever};

use super::bm25::Bm25Index;
use super::filter::{self, FilterTest, format_money, leading_number, parse_money};
use super::{rfc3339_utc, stable_hash};

/// Documents returned when a query sets no limit.
pub const DEFAULT_LIMIT: usize = 5;

/// Weight of a document's title against its text in the index.
const TITLE_WEIGHT: f32 = 2.0;

/// Score multiplier per structured filter a row satisfies (1 + 0.5 × n).
const FILTER_BOOST: f32 = 0.5;

/// Column (or JSON key) names that identify a row, in order of preference.
const ID_COLUMNS: &[&str] = &[
    "id",
    "unit_id",
    "property_id",
    "project_id",
    "listing_id",
    "code",
    "sku",
];

/// Column names that title a row, in order of preference.
const TITLE_COLUMNS: &[&str] = &[
    "name",
    "project",
    "project_name",
    "property",
    "property_name",
    "title",
    "question",
];

/// A knowledge file that cannot be loaded: which file, which line (for
/// parse errors) and what is wrong. Displays as `path:line: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// The file.
    pub file: PathBuf,
    /// The line (1-based), when the problem is at one.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl LoadError {
    fn new(file: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        LoadError {
            file: file.to_owned(),
            line,
            message: message.into(),
        }
    }
}

/// What a file was when it was last read.
#[derive(Debug, Clone, PartialEq)]
struct FileStamp {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
    hash: u64,
}

/// A file's path, modification time and size.
type FileStat = (PathBuf, Option<SystemTime>, u64);

/// What reloading compares against.
#[derive(Debug)]
struct ReloadState {
    /// The files of the index in service.
    stamps: Vec<FileStamp>,
    /// The files as they were when a reload last failed, and why.
    broken: Option<(Vec<FileStat>, LoadError)>,
}

/// The searchable state, swapped whole on reload.
#[derive(Debug, Default)]
struct Snapshot {
    docs: Vec<Document>,
    index: Bm25Index,
}

/// Knowledge files searched as one retrieval source.
#[derive(Debug)]
pub struct DocumentSource {
    name: String,
    inputs: Vec<PathBuf>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Version and update time of the files in service.
    freshness: RwLock<Freshness>,
    /// Held for the whole of a reload (one reloader at a time).
    reload: Mutex<ReloadState>,
    auto_reload: Option<(Duration, Mutex<Instant>)>,
}

impl DocumentSource {
    /// Loads `paths` (files, or directories whose `.md`, `.markdown`,
    /// `.csv` and `.json` files are taken, recursively, in name order) as
    /// the source `name`.
    pub fn load(name: &str, paths: &[PathBuf]) -> Result<DocumentSource, LoadError> {
        let files = expand(paths)?;
        let (snapshot, stamps) = build(name, &files)?;
        Ok(DocumentSource {
            name: name.to_owned(),
            inputs: paths.to_vec(),
            snapshot: RwLock::new(Arc::new(snapshot)),
            freshness: RwLock::new(freshness_of(&stamps)),
            reload: Mutex::new(ReloadState {
                stamps,
                broken: None,
            }),
            auto_reload: None,
        })
    }

    /// Makes searches check for edited files at most once per `every`
    /// (errors are logged and the previous index keeps serving).
    pub fn with_auto_reload(mut self, every: Duration) -> Self {
        self.auto_reload = Some((every, Mutex::new(Instant::now())));
        self
    }

    /// Number of documents loaded.
    pub fn len(&self) -> usize {
        self.current().docs.len()
    }

    /// True when the files hold no documents.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All documents (score 0), in file order.
    pub fn documents(&self) -> Vec<Document> {
        self.current().docs.clone()
    }

    /// Re-reads the files if any changed on disk (see the module doc).
    /// Returns whether the index was rebuilt. On error the previous index
    /// stays in service.
    pub fn reload_if_changed(&self) -> Result<bool, LoadError> {
        let mut state = self.reload.lock().unwrap_or_else(|e| e.into_inner());
        let files = expand(&self.inputs)?;
        let stats = files
            .iter()
            .map(|path| {
                let meta = std::fs::metadata(path)
                    .map_err(|e| LoadError::new(path, None, format!("cannot read: {e}")))?;
                Ok((path.clone(), meta.modified().ok(), meta.len()))
            })
            .collect::<Result<Vec<FileStat>, LoadError>>()?;
        // Still broken as last time: the same error, without re-reading.
        if let Some((broken, error)) = &state.broken
            && *broken == stats
        {
            return Err(error.clone());
        }
        let same_set = files.len() == state.stamps.len()
            && files
                .iter()
                .zip(state.stamps.iter())
                .all(|(f, s)| *f == s.path);
        let mut changed = !same_set;
        let mut touched = false;
        if same_set {
            for (stamp, (path, modified, len)) in state.stamps.iter_mut().zip(&stats) {
                if *modified == stamp.modified && *len == stamp.len {
                    continue;
                }
                let bytes = std::fs::read(path)
                    .map_err(|e| LoadError::new(path, None, format!("cannot read: {e}")))?;
                if stable_hash(&[&bytes]) != stamp.hash {
                    changed = true;
                    break;
                }
                // Touched, not changed.
                (stamp.modified, stamp.len) = (*modified, *len);
                touched = true;
            }
        }
        if !changed {
            if touched {
                *self.freshness.write().unwrap_or_else(|e| e.into_inner()) =
                    freshness_of(&state.stamps);
            }
            state.broken = None;
            return Ok(false);
        }
        match build(&self.name, &files) {
            Ok((snapshot, stamps)) => {
                *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
                *self.freshness.write().unwrap_or_else(|e| e.into_inner()) = freshness_of(&stamps);
                state.stamps = stamps;
                state.broken = None;
                tracing::info!(source = %self.name, files = files.len(), "knowledge reloaded");
                Ok(true)
            }
            Err(e) => {
                state.broken = Some((stats, e.clone()));
                Err(e)
            }
        }
    }

    /// Searches synchronously (what [`Retriever::retrieve`] does).
    pub fn search(&self, query: &Query) -> Vec<Document> {
        self.maybe_reload();
        let snap = self.current();
        let limit = if query.limit == 0 {
            DEFAULT_LIMIT
        } else {
            query.limit
        };
        let filtering = filter::active(&query.slots);
        let scores = snap.index.scores(&query.text);
        let mut hits: Vec<(f32, usize)> = Vec::new();
        let mut structured: Vec<(f32, usize)> = Vec::new();
        for (i, doc) in snap.docs.iter().enumerate() {
            let matched = if filtering {
                match filter::evaluate(&query.slots, &doc.fields) {
                    Some(m) => m,
                    None => continue,
                }
            } else {
                0
            };
            let score = scores[i] * (1.0 + FILTER_BOOST * matched as f32);
            if score > 0.0 {
                hits.push((score, i));
            } else if matched > 0 {
                structured.push((matched as f32, i));
            }
        }
        // Nothing in the words matched: the structured matches alone answer
        // ("what do you have?" with bedrooms and budget known).
        if hits.is_empty() {
            hits = structured;
        }
        hits.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        hits.truncate(limit);
        hits.into_iter()
            .map(|(score, i)| Document {
                score,
                ..snap.docs[i].clone()
            })
            .collect()
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn maybe_reload(&self) {
        let Some((every, last)) = &self.auto_reload else {
            return;
        };
        {
            let Ok(mut last) = last.try_lock() else {
                return;
            };
            if last.elapsed() < *every {
                return;
            }
            *last = Instant::now();
        }
        if let Err(e) = self.reload_if_changed() {
            tracing::warn!(source = %self.name, error = %e, "knowledge reload failed; keeping the loaded version");
        }
    }
}

impl Retriever for DocumentSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn retrieve<'a>(
        &'a self,
        query: &'a Query,
    ) -> BoxFuture<'a, Result<Vec<Document>, AgentError>> {
        Box::pin(async move { Ok(self.search(query)) })
    }

    fn freshness(&self) -> Option<Freshness> {
        Some(
            self.freshness
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The version (a hash of every file's name and contents) and update time
/// (the newest modification time) of a set of files.
fn freshness_of(stamps: &[FileStamp]) -> Freshness {
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(stamps.len() * 2);
    for stamp in stamps {
        let name = stamp
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        parts.push(name.into_bytes());
        parts.push(stamp.hash.to_le_bytes().to_vec());
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Freshness {
        version: format!("{:016x}", stable_hash(&refs)),
        updated_at: stamps.iter().filter_map(|s| s.modified).max(),
    }
}

/// File kinds by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Markdown,
    Csv,
    Json,
}

fn kind_of(path: &Path) -> Option<Kind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "md" | "markdown" => Some(Kind::Markdown),
        "csv" => Some(Kind::Csv),
        "json" => Some(Kind::Json),
        _ => None,
    }
}

/// Inputs → the files to load, in a stable order.
fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| LoadError::new(dir, None, format!("cannot list: {e}")))?;
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            if path.is_dir() {
                walk(&path, out)?;
            } else if kind_of(&path).is_some() {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut files)?;
        } else if kind_of(input).is_none() {
            return Err(LoadError::new(
                input,
                None,
                "unsupported knowledge file (expected .md, .markdown, .csv or .json)",
            ));
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

/// Reads and indexes `files`.
fn build(source: &str, files: &[PathBuf]) -> Result<(Snapshot, Vec<FileStamp>), LoadError> {
    let mut docs = Vec::new();
    let mut stamps = Vec::with_capacity(files.len());
    for path in files {
        let meta = std::fs::metadata(path)
            .map_err(|e| LoadError::new(path, None, format!("cannot read: {e}")))?;
        let bytes = std::fs::read(path)
            .map_err(|e| LoadError::new(path, None, format!("cannot read: {e}")))?;
        let hash = stable_hash(&[&bytes]);
        let modified = meta.modified().ok();
        let version = format!(
            "{}#{:08x}",
            rfc3339_utc(modified.unwrap_or(SystemTime::UNIX_EPOCH)),
            hash >> 32
        );
        let text = match std::str::from_utf8(&bytes) {
            Ok(text) => text,
            Err(e) => {
                let line = 1 + bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                return Err(LoadError::new(path, Some(line), "not valid UTF-8"));
            }
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let ctx = FileCtx {
            path,
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source,
            version: &version,
        };
        match kind_of(path) {
            Some(Kind::Markdown) => parse_markdown(&ctx, text, &mut docs)?,
            Some(Kind::Csv) => parse_csv(&ctx, text, &mut docs)?,
            Some(Kind::Json) => parse_json(&ctx, text, &mut docs)?,
            None => return Err(LoadError::new(path, None, "unsupported knowledge file")),
        }
        stamps.push(FileStamp {
            path: path.clone(),
            modified,
            len: meta.len(),
            hash,
        });
    }
    let mut index = Bm25Index::new();
    for doc in &docs {
        let extra: String = ID_COLUMNS
            .iter()
            .filter_map(|c| doc.fields.get(*c))
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        index.add(&[(&doc.title, TITLE_WEIGHT), (&doc.text, 1.0), (&extra, 1.0)]);
    }
    Ok((Snapshot { docs, index }, stamps))
}

/// What every parser needs to know about its file.
struct FileCtx<'a> {
    path: &'a Path,
    name: String,
    source: &'a str,
    version: &'a str,
}

impl FileCtx<'_> {
    fn doc(
        &self,
        id: String,
        title: String,
        text: String,
        fields: BTreeMap<String, String>,
    ) -> Document {
        Document {
            source: self.source.to_owned(),
            id,
            title,
            text,
            fields,
            version: self.version.to_owned(),
            score: 0.0,
        }
    }

    fn error(&self, line: usize, message: impl Into<String>) -> LoadError {
        LoadError::new(self.path, Some(line), message)
    }

    fn stem(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// GitHub-style heading anchor: `Cancellation policy` → `cancellation-policy`.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if (c.is_whitespace() || c == '-' || c == '_')
            && !out.ends_with('-')
            && !out.is_empty()
        {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// Column name → `snake_case` key: `Price (Cr)` → `price_cr`.
pub fn normalise_key(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_owned()
}

/// Unique ids within a file.
#[derive(Default)]
struct Ids(HashMap<String, usize>);

impl Ids {
    fn unique(&mut self, id: String) -> String {
        let n = self.0.entry(id.clone()).or_default();
        *n += 1;
        if *n == 1 { id } else { format!("{id}-{n}") }
    }
}

// --- Markdown ------------------------------------------------------------

/// `## Heading ##` → (2, "Heading").
fn atx_heading(line: &str) -> Option<(usize, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let level = rest.len() - rest.trim_start_matches('#').len();
    if !(1..=6).contains(&level) {
        return None;
    }
    let after = &rest[level..];
    if !after.is_empty() && !after.starts_with([' ', '\t']) {
        return None;
    }
    let mut text = after.trim();
    // Optional closing sequence: `## Title ##`.
    let stripped = text.trim_end_matches('#');
    if stripped.len() != text.len() && (stripped.is_empty() || stripped.ends_with([' ', '\t'])) {
        text = stripped.trim_end();
    }
    Some((level, text))
}

/// An opening code fence: (fence char, length).
fn fence_open(line: &str) -> Option<(char, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    for c in ['`', '~'] {
        let n = rest.len() - rest.trim_start_matches(c).len();
        if n >= 3 {
            return Some((c, n));
        }
    }
    None
}

fn fence_closes(line: &str, (c, n): (char, usize)) -> bool {
    let t = line.trim();
    t.len() >= n && t.chars().all(|x| x == c)
}

/// A line that would make the line after it not a setext heading text.
fn is_block_start(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with(['-', '*', '+', '>', '|', '#'])
        || leading_number(t).is_some_and(|_| t.contains(". "))
}

fn parse_markdown(
    ctx: &FileCtx<'_>,
    text: &str,
    docs: &mut Vec<Document>,
) -> Result<(), LoadError> {
    struct Section {
        path: Vec<(usize, String)>,
        line: usize,
        body: Vec<String>,
    }
    let mut ids = Ids::default();
    let mut flush = |section: &Section, docs: &mut Vec<Document>| {
        let body = section.body.join("\n").trim().to_owned();
        if body.is_empty() {
            return;
        }
        let (title, anchor) = match section.path.last() {
            Some((_, heading)) => (
                section
                    .path
                    .iter()
                    .map(|(_, h)| h.as_str())
                    .collect::<Vec<_>>()
                    .join(" > "),
                slug(heading),
            ),
            None => (ctx.stem(), slug(&ctx.stem())),
        };
        let id = ids.unique(format!("{}#{}", ctx.name, anchor));
        let mut fields = BTreeMap::new();
        fields.insert("file".to_owned(), ctx.name.clone());
        fields.insert("line".to_owned(), section.line.to_string());
        docs.push(ctx.doc(id, title, body, fields));
    };

    let mut section = Section {
        path: Vec::new(),
        line: 1,
        body: Vec::new(),
    };
    let mut fence: Option<((char, usize), usize)> = None;
    // The previous line was blank (or a heading: a paragraph may start).
    let mut prev_blank = true;
    // The previous line was a one-line paragraph so far: an underline
    // below it makes it a setext heading.
    let mut prev_para_start = false;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end_matches('\r');
        if let Some((f, _)) = fence {
            if fence_closes(line, f) {
                fence = None;
            }
            section.body.push(line.to_owned());
            (prev_blank, prev_para_start) = (false, false);
            continue;
        }
        if let Some(f) = fence_open(line) {
            fence = Some((f, n));
            section.body.push(line.to_owned());
            (prev_blank, prev_para_start) = (false, false);
            continue;
        }
        let mut heading = atx_heading(line).map(|(l, t)| (l, t.to_owned(), n));
        if heading.is_none() && prev_para_start {
            let t = line.trim();
            let setext = if !t.is_empty() && t.chars().all(|c| c == '=') {
                Some(1)
            } else if t.len() >= 3 && t.chars().all(|c| c == '-') {
                Some(2)
            } else {
                None
            };
            if let Some(level) = setext {
                let text = section.body.pop().unwrap_or_default();
                heading = Some((level, text.trim().to_owned(), n - 1));
            }
        }
        if let Some((level, title, at)) = heading {
            if title.is_empty() {
                return Err(ctx.error(at, "empty heading"));
            }
            flush(&section, docs);
            section.path.retain(|(l, _)| *l < level);
            section.path.push((level, title));
            section.line = at;
            section.body.clear();
            (prev_blank, prev_para_start) = (true, false);
            continue;
        }
        let blank = line.trim().is_empty();
        prev_para_start = !blank && prev_blank && !is_block_start(line);
        prev_blank = blank;
        section.body.push(line.to_owned());
    }
    if let Some((_, at)) = fence {
        return Err(ctx.error(at, "code fence opened here is never closed"));
    }
    flush(&section, docs);
    Ok(())
}

// --- CSV -----------------------------------------------------------------

/// RFC 4180 records with the line each starts on.
fn csv_records(ctx: &FileCtx<'_>, text: &str) -> Result<Vec<(usize, Vec<String>)>, LoadError> {
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut start = 1;
    let mut quoted = false; // inside quotes
    let mut was_quoted = false; // this field had quotes
    let mut quote_line = 0;
    let mut chars = text.chars().peekable();
    let end_record = |record: &mut Vec<String>,
                      field: &mut String,
                      was_quoted: bool,
                      records: &mut Vec<(usize, Vec<String>)>,
                      start: usize| {
        record.push(std::mem::take(field));
        let blank = record.len() == 1 && record[0].trim().is_empty() && !was_quoted;
        let done = std::mem::take(record);
        if !blank {
            records.push((start, done));
        }
    };
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    quoted = false;
                    match chars.peek() {
                        None | Some(',') | Some('\n') | Some('\r') => {}
                        Some(other) => {
                            return Err(ctx.error(
                                line,
                                format!("unexpected {other:?} after a closing quote"),
                            ));
                        }
                    }
                }
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                c => field.push(c),
            }
            continue;
        }
        match c {
            ',' => {
                record.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                end_record(&mut record, &mut field, was_quoted, &mut records, start);
                was_quoted = false;
                line += 1;
                start = line;
            }
            '"' if field.trim().is_empty() => {
                field.clear();
                quoted = true;
                was_quoted = true;
                quote_line = line;
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err(ctx.error(quote_line, "quoted field is never closed"));
    }
    if !field.is_empty() || !record.is_empty() || was_quoted {
        end_record(&mut record, &mut field, was_quoted, &mut records, start);
    }
    Ok(records)
}

fn parse_csv(ctx: &FileCtx<'_>, text: &str, docs: &mut Vec<Document>) -> Result<(), LoadError> {
    let records = csv_records(ctx, text)?;
    let Some((header_line, header)) = records.first() else {
        return Err(ctx.error(1, "empty CSV file (expected a header row)"));
    };
    let mut columns = Vec::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        let key = normalise_key(name);
        if key.is_empty() {
            return Err(ctx.error(*header_line, format!("column {} has no name", i + 1)));
        }
        if columns.contains(&key) {
            return Err(ctx.error(*header_line, format!("duplicate column {name:?}")));
        }
        columns.push(key);
    }
    let mut ids = Ids::default();
    for (line, values) in &records[1..] {
        if values.len() != columns.len() {
            return Err(ctx.error(
                *line,
                format!(
                    "row has {} fields, the header has {}",
                    values.len(),
                    columns.len()
                ),
            ));
        }
        let ordered: Vec<(String, String)> = columns
            .iter()
            .cloned()
            .zip(values.iter().map(|v| v.trim().to_owned()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        docs.push(record_document(ctx, &mut ids, ordered, || {
            format!("row-{line}")
        }));
    }
    Ok(())
}

/// A row or object → a document (id, title, readable text, fields).
fn record_document(
    ctx: &FileCtx<'_>,
    ids: &mut Ids,
    ordered: Vec<(String, String)>,
    fallback_id: impl FnOnce() -> String,
) -> Document {
    let find = |keys: &[&str]| {
        keys.iter().find_map(|k| {
            ordered
                .iter()
                .find(|(c, _)| c == k)
                .map(|(c, v)| (c.clone(), v.clone()))
        })
    };
    let id_col = find(ID_COLUMNS);
    let title_col = find(TITLE_COLUMNS);
    let id = ids.unique(format!(
        "{}#{}",
        ctx.name,
        id_col
            .as_ref()
            .map(|(_, v)| v.clone())
            .unwrap_or_else(fallback_id)
    ));
    let title = title_col
        .as_ref()
        .map(|(_, v)| v.clone())
        .or_else(|| {
            ordered
                .iter()
                .find(|(c, _)| Some(c) != id_col.as_ref().map(|(c, _)| c))
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| id.clone());
    let mut parts = vec![title.clone()];
    for (column, value) in &ordered {
        let skip = Some(column) == id_col.as_ref().map(|(c, _)| c)
            || Some(column) == title_col.as_ref().map(|(c, _)| c);
        if skip || *value == title {
            continue;
        }
        parts.push(render_value(column, value));
    }
    let text = parts.join(", ");
    let fields = ordered.into_iter().collect();
    ctx.doc(id, title, text, fields)
}

/// One value as a caller would say it (see the module doc).
fn render_value(column: &str, value: &str) -> String {
    let bare_number = value.parse::<f64>().is_ok();
    let label = column.replace(['_', '.'], " ");
    match filter::rule_for_column(column).map(|r| r.test) {
        Some(FilterTest::NumberEquals) if bare_number => format!("{value} BHK"),
        // `1,05,00,000`, `₹11800000`, `1.18` in a `price_crore` column.
        Some(FilterTest::MoneyAtMost { .. }) if !value.chars().any(char::is_alphabetic) => {
            parse_money(value, column)
                .map(format_money)
                .unwrap_or_else(|| value.to_owned())
        }
        _ if bare_number => format!("{label} {value}"),
        _ => match value.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" => format!("{label}: yes"),
            "false" | "no" | "n" => format!("{label}: no"),
            _ => value.to_owned(),
        },
    }
}

// --- JSON ----------------------------------------------------------------

/// The line each element of a top-level JSON array starts on.
fn array_element_lines(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut line, mut depth) = (1, 0i32);
    let (mut in_str, mut escaped, mut expecting) = (false, false, false);
    for b in text.bytes() {
        if b == b'\n' {
            line += 1;
        }
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        if expecting && !b.is_ascii_whitespace() {
            if b != b']' {
                out.push(line);
            }
            expecting = false;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth == 1 && b == b'[' {
                    expecting = true;
                }
            }
            b']' | b'}' => depth -= 1,
            b',' if depth == 1 => expecting = true,
            _ => {}
        }
    }
    out
}

pub(crate) fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                let key = normalise_key(k);
                let key = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            let joined: Vec<String> = items.iter().filter(|v| !v.is_null()).map(scalar).collect();
            if !joined.is_empty() {
                out.push((prefix.to_owned(), joined.join(", ")));
            }
        }
        Value::Array(_) => out.push((prefix.to_owned(), value.to_string())),
        other => {
            let s = scalar(other);
            if !s.trim().is_empty() {
                out.push((prefix.to_owned(), s.trim().to_owned()));
            }
        }
    }
}

fn scalar(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn parse_json(ctx: &FileCtx<'_>, text: &str, docs: &mut Vec<Document>) -> Result<(), LoadError> {
    use serde_json::Value;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C"; the line is ours.
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        ctx.error(
            e.line().max(1),
            format!("{message} (column {})", e.column()),
        )
    })?;
    let mut ids = Ids::default();
    match value {
        Value::Object(_) => {
            let mut ordered = Vec::new();
            flatten("", &value, &mut ordered);
            let stem = ctx.stem();
            docs.push(record_document(ctx, &mut ids, ordered, || stem));
        }
        Value::Array(items) => {
            let lines = array_element_lines(text);
            for (i, item) in items.iter().enumerate() {
                let line = lines.get(i).copied().unwrap_or(1);
                if !item.is_object() {
                    return Err(
                        ctx.error(line, format!("array element {} is not an object", i + 1))
                    );
                }
                let mut ordered = Vec::new();
                flatten("", item, &mut ordered);
                docs.push(record_document(ctx, &mut ids, ordered, || i.to_string()));
            }
        }
        _ => return Err(ctx.error(1, "expected an object or an array of objects")),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
