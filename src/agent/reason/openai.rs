//! A reasoner backed by an OpenAI-compatible chat-completions endpoint
//! (OpenAI and other hosted APIs, vLLM, llama.cpp's server, Ollama's
//! `/v1`), streaming its reply as server-sent events.
//!
//! [`OpenAiReasoner::reason`] spawns a task that POSTs
//! `{base_url}/chat/completions` with `"stream": true` and turns the stream
//! into [`ReasonEvent`]s as it arrives:
//!
//! - `choices[0].delta.content` (and `refusal`) → [`ReasonEvent::Token`],
//!   one per non-empty piece, as soon as it is read;
//! - `choices[0].delta.tool_calls[]` fragments are put together by `index`
//!   (the `id` and `function.name` of the first fragment, the
//!   `function.arguments` pieces concatenated) and each complete call becomes
//!   one [`ReasonEvent::ToolCall`] when the choice finishes, in index order,
//!   with its arguments parsed as JSON (unparseable → [`AgentError::Engine`]);
//! - `finish_reason` → [`ReasonEvent::Done`]: `stop` → `Stop`, `tool_calls`
//!   (or the legacy `function_call`) → `ToolCalls`, `length` → `Length`,
//!   anything else (`content_filter`) → `Stop`, logged; a server that says
//!   `stop` (or nothing) after tool calls gets `ToolCalls`, since the calls
//!   are what the pipeline must act on;
//! - `data: [DONE]` ends the stream (with `Done` if no `finish_reason` came).
//!
//! The reader takes the bytes as the network hands them: lines and JSON
//! objects split anywhere, `\n`, `\r\n` or `\r` line ends, `:` comments and
//! keep-alives, `event:` fields, empty deltas, role-only deltas, `usage`
//! chunks with empty or null `choices`, and `reasoning_content` (ignored:
//! hidden reasoning is not to be spoken). A server that ignores
//! `"stream": true` and answers one `application/json` completion is read
//! too.
//!
//! Errors (the stream then ends with one `Err`): no connection, HTTP 5xx or
//! 429, or a stream cut before its end → [`AgentError::Unavailable`]; any
//! other 4xx, an error object inside the stream, or output that cannot be
//! understood → [`AgentError::Engine`] with the server's message; nothing
//! from the model (text, a tool-call fragment or a finish) within the first
//! token deadline, or no finish within the total timeout →
//! [`AgentError::Timeout`]. Dropping the [`ReasonStream`] cancels: the task
//! stops reading and drops the connection.
//!
//! # Messages and tool calls on the wire
//!
//! A provider [`Message`] has only a role and a text, so the two messages of
//! a tool round trip carry JSON in their text, which this module decodes:
//!
//! - an assistant message that asked for tools has as content the JSON
//!   object `{"content": "optional text", "tool_calls": [ToolCall, ...]}`
//!   (a [`ToolCall`] serialized as is); it is sent as an assistant message
//!   with OpenAI `tool_calls` (arguments as a JSON string). Build it with
//!   [`assistant_tool_calls_message`];
//! - a tool message has as content a serialized [`ToolResult`]
//!   (`{"call_id": ..., "content": ..., "sync": ...}`); it is sent as
//!   `{"role": "tool", "tool_call_id": call_id, "content": ...}` whose
//!   content is the result's `content` (a JSON string as is, anything else
//!   as JSON text), or `{"result": content, "sync": "queued"}` as JSON text
//!   when the result has a sync state. Build it with [`tool_result_message`].
//!   A tool message whose text is not such an object answers the next
//!   unanswered call of the last assistant tool-call message, or, if there
//!   is none, is sent as a user message `Tool result: <text>` (OpenAI
//!   refuses a tool message without a call to answer).
//!
//! Every other message is sent as `{"role", "content"}`. The request's
//! `intent`, `slots` and `retrieval` are not sent: the turn logic renders
//! what the model should see into the messages. Tools are offered in the
//! function-calling format, `{"type": "function", "function": {"name",
//! "description", "parameters"}}`, and only when there are some.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::agent::provider::{
    AgentError, FinishReason, Message, REASON_STREAM_CAPACITY, ReasonEvent, ReasonRequest,
    ReasonStream, Reasoner, Role, ToolCall, ToolResult, ToolSpec,
};

/// Provider name, in logs and errors.
const PROVIDER: &str = "openai";
/// The most of an error body that is read.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The most of a whole (non-streamed) JSON completion that is read.
const MAX_JSON_BODY: usize = 8 * 1024 * 1024;
/// The longest line or event of the stream (a guard against a server that
/// never ends a line).
const MAX_EVENT: usize = 4 * 1024 * 1024;
/// How long an error body may take to arrive.
const ERROR_BODY_WAIT: Duration = Duration::from_secs(2);
/// How long the rest of a stream (usage, `[DONE]`) is read after `Done`,
/// so that the connection can be reused.
const DRAIN_WAIT: Duration = Duration::from_secs(1);
/// How much of a server's text goes into an error message.
const MAX_QUOTE: usize = 300;

/// Settings of an [`OpenAiReasoner`].
#[derive(Clone)]
pub struct OpenAiConfig {
    /// The API root, with its version: `https://api.openai.com/v1`,
    /// `http://127.0.0.1:8080/v1` (llama.cpp), `http://127.0.0.1:11434/v1`
    /// (Ollama), `http://127.0.0.1:8000/v1` (vLLM). `/chat/completions` is
    /// appended.
    pub base_url: String,
    /// The model name sent in each request (local servers that serve one
    /// model accept any).
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set and not empty.
    pub api_key: Option<String>,
    /// The longest a TCP (and TLS) connection may take.
    pub connect_timeout: Duration,
    /// The longest the first output may take, from the call of `reason`,
    /// when the request has no `first_token_deadline` (zero).
    pub first_token_timeout: Duration,
    /// The longest a whole reply may take, from the call of `reason`.
    pub total_timeout: Duration,
    /// Sampling temperature; the server's default when `None`.
    pub temperature: Option<f32>,
    /// `max_tokens` of the reply; the server's default when `None`.
    pub max_tokens: Option<u32>,
    /// More headers on every request (e.g. `OpenAI-Organization`, a
    /// gateway's routing header).
    pub extra_headers: Vec<(String, String)>,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            base_url: "http://127.0.0.1:8080/v1".to_owned(),
            model: String::new(),
            api_key: None,
            connect_timeout: Duration::from_secs(2),
            first_token_timeout: Duration::from_secs(3),
            total_timeout: Duration::from_secs(30),
            temperature: None,
            max_tokens: None,
            extra_headers: Vec::new(),
        }
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("first_token_timeout", &self.first_token_timeout)
            .field("total_timeout", &self.total_timeout)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field(
                "extra_headers",
                &self
                    .extra_headers
                    .iter()
                    .map(|(n, _)| n)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A [`Reasoner`] that streams from an OpenAI-compatible chat-completions
/// endpoint. Cheap to share: one HTTP client (and connection pool) serves
/// every call.
pub struct OpenAiReasoner {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
    config: OpenAiConfig,
}

impl fmt::Debug for OpenAiReasoner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiReasoner")
            .field("url", &self.inner.url)
            .field("config", &self.inner.config)
            .finish()
    }
}

impl OpenAiReasoner {
    /// Builds the reasoner and its HTTP client. Fails with
    /// [`AgentError::Config`] on a base URL that is not `http(s)://…`, a
    /// header that cannot be sent, or a zero timeout.
    pub fn new(config: OpenAiConfig) -> Result<Self, AgentError> {
        let base = config.base_url.trim().trim_end_matches('/');
        let parsed = reqwest::Url::parse(base)
            .map_err(|e| AgentError::config(PROVIDER, format!("base_url {base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(AgentError::config(
                PROVIDER,
                format!("base_url {base:?}: not http or https"),
            ));
        }
        for (what, d) in [
            ("connect_timeout", config.connect_timeout),
            ("first_token_timeout", config.first_token_timeout),
            ("total_timeout", config.total_timeout),
        ] {
            if d.is_zero() {
                return Err(AgentError::config(PROVIDER, format!("{what} is zero")));
            }
        }

        let mut headers = HeaderMap::new();
        if let Some(key) = config.api_key.as_deref().filter(|k| !k.is_empty()) {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| AgentError::config(PROVIDER, "api_key is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        for (name, value) in &config.extra_headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| AgentError::config(PROVIDER, format!("bad header name {name:?}")))?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                AgentError::config(PROVIDER, format!("bad value for header {name}"))
            })?;
            headers.append(name, value);
        }

        // reqwest is built without a default crypto provider: install ring
        // once per process (an error means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| AgentError::config(PROVIDER, format!("HTTP client: {}", chain(&e))))?;

        Ok(OpenAiReasoner {
            inner: Arc::new(Inner {
                client,
                url: format!("{base}/chat/completions"),
                headers,
                config,
            }),
        })
    }

    /// The settings it was built with.
    #[cfg(test)]
    pub fn config(&self) -> &OpenAiConfig {
        &self.inner.config
    }

    /// The URL it posts to.
    pub fn endpoint(&self) -> &str {
        &self.inner.url
    }
}

impl Reasoner for OpenAiReasoner {
    fn name(&self) -> &str {
        PROVIDER
    }

    /// Starts the request on a new tokio task (so it must be called inside
    /// a tokio runtime). Both deadlines count from this call.
    fn reason(&self, request: ReasonRequest) -> ReasonStream {
        let (tx, rx) = mpsc::channel(REASON_STREAM_CAPACITY);
        let inner = self.inner.clone();
        let started = Instant::now();
        let first = if request.first_token_deadline.is_zero() {
            inner.config.first_token_timeout
        } else {
            request.first_token_deadline
        };
        let clock = Clock {
            started,
            first_token: started + first,
            first_token_ms: first.as_millis(),
            total: started + inner.config.total_timeout,
            total_ms: inner.config.total_timeout.as_millis(),
        };
        let body = request_body(&inner.config, &request);
        tokio::spawn(async move {
            match converse(&inner, &body, &clock, &tx).await {
                Ok(()) => {}
                Err(AgentError::Cancelled) => {
                    tracing::debug!(provider = PROVIDER, "reasoning cancelled");
                }
                Err(e) => {
                    tracing::warn!(provider = PROVIDER, error = %e, "reasoning failed");
                    let _ = tx.send(Err(e)).await;
                }
            }
        });
        rx
    }
}

/// The text of an assistant message that asked for tools, as this module
/// sends it (see the module documentation): `{"content": text, "tool_calls":
/// [...]}`, without `content` when `text` is empty.
pub fn assistant_tool_calls_message(text: &str, calls: &[ToolCall]) -> Message {
    let mut object = serde_json::Map::new();
    if !text.is_empty() {
        object.insert("content".to_owned(), Value::String(text.to_owned()));
    }
    object.insert("tool_calls".to_owned(), json!(calls));
    Message {
        role: Role::Assistant,
        content: Value::Object(object).to_string(),
    }
}

/// A tool result as a message: a [`Role::Tool`] message whose text is the
/// serialized [`ToolResult`] (see the module documentation).
pub fn tool_result_message(result: &ToolResult) -> Message {
    Message {
        role: Role::Tool,
        content: json!(result).to_string(),
    }
}

// --- the request ---------------------------------------------------------

/// The JSON body of a chat-completions request.
fn request_body(config: &OpenAiConfig, request: &ReasonRequest) -> Value {
    let mut body = json!({
        "model": config.model,
        "messages": wire_messages(&request.messages),
        "stream": true,
    });
    if let Some(t) = config.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(n) = config.max_tokens {
        body["max_tokens"] = json!(n);
    }
    if !request.tools.is_empty() {
        body["tools"] = request.tools.iter().map(wire_tool).collect();
    }
    body
}

fn wire_tool(tool: &ToolSpec) -> Value {
    json!({
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    })
}

/// The messages in OpenAI's format (see the module documentation).
fn wire_messages(messages: &[Message]) -> Vec<Value> {
    // The calls of the last assistant tool-call message not answered yet.
    let mut unanswered: VecDeque<String> = VecDeque::new();
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let wire = match m.role {
            Role::System => json!({"role": "system", "content": m.content}),
            Role::User => json!({"role": "user", "content": m.content}),
            Role::Assistant => match decode_assistant_tool_calls(&m.content) {
                Some((text, calls)) => {
                    unanswered = calls.iter().map(|c| c.id.clone()).collect();
                    json!({
                        "role": "assistant",
                        "content": text,
                        "tool_calls": calls.iter().map(|c| json!({
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments.to_string()},
                        })).collect::<Vec<_>>(),
                    })
                }
                None => json!({"role": "assistant", "content": m.content}),
            },
            Role::Tool => match decode_tool_result(&m.content) {
                Some((id, content)) => {
                    unanswered.retain(|u| *u != id);
                    json!({"role": "tool", "tool_call_id": id, "content": content})
                }
                None => match unanswered.pop_front() {
                    Some(id) => json!({"role": "tool", "tool_call_id": id, "content": m.content}),
                    None => {
                        json!({"role": "user", "content": format!("Tool result: {}", m.content)})
                    }
                },
            },
        };
        out.push(wire);
    }
    out
}

/// `{"content"?: string, "tool_calls": [ToolCall...]}` → (text, calls).
fn decode_assistant_tool_calls(text: &str) -> Option<(Option<String>, Vec<ToolCall>)> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let Value::Object(mut object) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    if object.keys().any(|k| k != "content" && k != "tool_calls") {
        return None;
    }
    let calls: Vec<ToolCall> = serde_json::from_value(object.remove("tool_calls")?).ok()?;
    if calls.is_empty() {
        return None;
    }
    let content = match object.remove("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s).filter(|s| !s.is_empty()),
        Some(_) => return None,
    };
    Some((content, calls))
}

/// A serialized [`ToolResult`] → (call id, content for the wire).
fn decode_tool_result(text: &str) -> Option<(String, String)> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let Value::Object(mut object) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let id = match object
        .remove("call_id")
        .or_else(|| object.remove("tool_call_id"))?
    {
        Value::String(id) if !id.is_empty() => id,
        _ => return None,
    };
    let content = object.remove("content").unwrap_or(Value::Null);
    let content = match object.remove("sync") {
        None | Some(Value::Null) => match content {
            Value::String(s) => s,
            other => other.to_string(),
        },
        Some(sync) => json!({"result": content, "sync": sync}).to_string(),
    };
    Some((id, content))
}

// --- the exchange --------------------------------------------------------

/// The deadlines of one request.
struct Clock {
    started: Instant,
    first_token: Instant,
    first_token_ms: u128,
    total: Instant,
    total_ms: u128,
}

impl Clock {
    /// Runs `work` until the deadline that applies (the first-token one
    /// until the model has said something), or until the receiver is
    /// dropped ([`AgentError::Cancelled`]).
    async fn bounded<T>(
        &self,
        tx: &mpsc::Sender<Result<ReasonEvent, AgentError>>,
        heard: bool,
        work: impl Future<Output = T>,
    ) -> Result<T, AgentError> {
        let first = !heard && self.first_token < self.total;
        let deadline = if first { self.first_token } else { self.total };
        tokio::select! {
            biased;
            _ = tx.closed() => Err(AgentError::Cancelled),
            r = tokio::time::timeout_at(deadline, work) => r.map_err(|_| {
                AgentError::Timeout(if first {
                    format!("{PROVIDER} first token ({} ms)", self.first_token_ms)
                } else {
                    format!("{PROVIDER} reply ({} ms)", self.total_ms)
                })
            }),
        }
    }
}

async fn emit(
    tx: &mpsc::Sender<Result<ReasonEvent, AgentError>>,
    event: ReasonEvent,
) -> Result<(), AgentError> {
    tx.send(Ok(event)).await.map_err(|_| AgentError::Cancelled)
}

/// One request, from the POST to `Done` (or an error).
async fn converse(
    inner: &Inner,
    body: &Value,
    clock: &Clock,
    tx: &mpsc::Sender<Result<ReasonEvent, AgentError>>,
) -> Result<(), AgentError> {
    let request = inner
        .client
        .post(&inner.url)
        .headers(inner.headers.clone())
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .json(body)
        .send();
    let mut response = clock.bounded(tx, false, request).await?.map_err(|e| {
        AgentError::unavailable(PROVIDER, format!("POST {}: {}", inner.url, chain(&e)))
    })?;

    let status = response.status();
    if !status.is_success() {
        let text = tokio::time::timeout(ERROR_BODY_WAIT, read_body(&mut response, MAX_ERROR_BODY))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        return Err(status_error(status, &text));
    }

    let mut assembler = Assembler::default();
    let mut events = Vec::new();
    let json_reply = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if json_reply {
        // The server ignored "stream": one whole completion.
        let text = clock
            .bounded(tx, false, read_body(&mut response, MAX_JSON_BODY))
            .await??;
        assembler.on_data(&text, &mut events)?;
        if !assembler.done {
            assembler.finish(None, &mut events)?;
        }
        for event in events.drain(..) {
            emit(tx, event).await?;
        }
        log_end(clock, &assembler);
        return Ok(());
    }

    let mut parser = SseParser::default();
    let mut heard_at = None;
    'read: loop {
        let heard = assembler.heard;
        let chunk = clock
            .bounded(tx, heard, response.chunk())
            .await?
            .map_err(|e| {
                AgentError::unavailable(PROVIDER, format!("stream broken: {}", chain(&e)))
            })?;
        let eof = chunk.is_none();
        if let Some(bytes) = &chunk {
            parser.push(bytes);
        }
        while let Some(event) = parser.next_event(eof)? {
            assembler.on_event(&event, &mut events)?;
            if heard_at.is_none() && assembler.heard {
                heard_at = Some(clock.started.elapsed());
            }
            for event in events.drain(..) {
                emit(tx, event).await?;
            }
            if assembler.done {
                break 'read;
            }
        }
        if eof {
            return Err(AgentError::unavailable(
                PROVIDER,
                "the stream ended before the reply was finished",
            ));
        }
    }
    if let Some(t) = heard_at {
        tracing::debug!(
            provider = PROVIDER,
            first_token_ms = t.as_millis() as u64,
            "first output"
        );
    }

    // Done is out. Read the rest (a usage chunk, [DONE]) for the logs and so
    // that the connection can go back to the pool; give up quickly.
    if !assembler.ended {
        let until = Instant::now() + DRAIN_WAIT;
        let drain = async {
            loop {
                // What is left of the last read first.
                while let Ok(Some(event)) = parser.next_event(false) {
                    if assembler.on_event(&event, &mut events).is_err() || assembler.ended {
                        return;
                    }
                }
                match response.chunk().await {
                    Ok(Some(bytes)) => parser.push(&bytes),
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout_at(until.min(clock.total), drain).await;
    }
    log_end(clock, &assembler);
    Ok(())
}

fn log_end(clock: &Clock, assembler: &Assembler) {
    let usage = assembler
        .usage
        .as_ref()
        .map(|u| u.to_string())
        .unwrap_or_default();
    tracing::debug!(
        provider = PROVIDER,
        elapsed_ms = clock.started.elapsed().as_millis() as u64,
        usage = %usage,
        "reply finished"
    );
}

/// Reads a body up to `limit` bytes (the rest is dropped), as text.
async fn read_body(response: &mut reqwest::Response, limit: usize) -> Result<String, AgentError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        AgentError::unavailable(PROVIDER, format!("reading the body: {}", chain(&e)))
    })? {
        let room = limit.saturating_sub(bytes.len());
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if bytes.len() >= limit {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The error for a non-success status.
fn status_error(status: reqwest::StatusCode, body: &str) -> AgentError {
    let message = error_message(body)
        .or_else(|| status.canonical_reason().map(str::to_owned))
        .unwrap_or_default();
    let reason = format!("HTTP {}: {message}", status.as_u16());
    if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
        AgentError::engine(PROVIDER, reason)
    } else {
        // 5xx, 429 (overloaded or rate limited: try again later or fall
        // back), and anything odd (an unfollowed redirect).
        AgentError::unavailable(PROVIDER, reason)
    }
}

/// The message of an error body: OpenAI's `{"error": {"message"}}`,
/// Ollama's `{"error": "..."}`, FastAPI's `{"detail"}`, `{"message"}`, or
/// the text itself.
fn error_message(body: &str) -> Option<String> {
    let body = body.trim();
    if body.is_empty() {
        return None;
    }
    match serde_json::from_str::<Value>(body) {
        Ok(v) => Some(describe_error(&v)),
        Err(_) => Some(quote(body)),
    }
}

/// The message of an error value (an `error` member or a whole body).
fn describe_error(v: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    let message = match v {
        Value::Object(o) => o
            .get("error")
            .map(|e| match e {
                Value::Object(_) => describe_error(e),
                other => text(other).unwrap_or_default(),
            })
            .or_else(|| o.get("message").and_then(text))
            .or_else(|| o.get("detail").and_then(text))
            .unwrap_or_else(|| v.to_string()),
        other => text(other).unwrap_or_default(),
    };
    quote(&message)
}

/// `text`, cut to [`MAX_QUOTE`] characters.
fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// An error and its causes, `: `-separated (reqwest's own text omits the
/// useful part, e.g. "connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

// --- server-sent events --------------------------------------------------

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseEvent {
    /// The `event:` field, if any.
    event: Option<String>,
    /// The `data:` lines, joined by `\n`.
    data: String,
}

/// An incremental server-sent-events reader (the WHATWG event-stream
/// format): bytes in, events out, whatever the boundaries of the reads.
#[derive(Debug, Default)]
struct SseParser {
    buf: Vec<u8>,
    /// Bytes at the start of `buf` known to hold no line end.
    scanned: usize,
    /// The BOM check is done.
    started: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event. At `eof`, a last line without its end and
    /// an event without its blank line are taken too.
    fn next_event(&mut self, eof: bool) -> Result<Option<SseEvent>, AgentError> {
        loop {
            let Some(line) = self.next_line(eof) else {
                if self.buf.len() > MAX_EVENT || self.data.len() > MAX_EVENT {
                    return Err(AgentError::engine(PROVIDER, "a stream event over 4 MiB"));
                }
                if eof && self.has_data {
                    return Ok(Some(self.dispatch()));
                }
                return Ok(None);
            };
            if let Some(event) = self.on_line(&line) {
                return Ok(Some(event));
            }
        }
    }

    fn next_line(&mut self, eof: bool) -> Option<String> {
        let found = self.buf[self.scanned..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map(|p| p + self.scanned);
        let (end, skip) = match found {
            Some(p) if self.buf[p] == b'\n' => (p, 1),
            Some(p) => match self.buf.get(p + 1) {
                Some(b'\n') => (p, 2),
                Some(_) => (p, 1),
                // A `\r` last: its `\n` may be in the next read.
                None if eof => (p, 1),
                None => {
                    self.scanned = p;
                    return None;
                }
            },
            None if eof && !self.buf.is_empty() => (self.buf.len(), 0),
            None => {
                self.scanned = self.buf.len();
                return None;
            }
        };
        let mut line = &self.buf[..end];
        if !self.started {
            self.started = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        // Line ends never fall inside a UTF-8 sequence, so a whole line
        // decodes even when a character was split between reads.
        let line = String::from_utf8_lossy(line).into_owned();
        self.buf.drain(..end + skip);
        self.scanned = 0;
        Some(line)
    }

    fn on_line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.has_data.then(|| self.dispatch());
        }
        if line.starts_with(':') {
            return None; // a comment or keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                // Chat-completion chunks are one JSON object on one line:
                // hand it over now rather than at the blank line, so that a
                // server that leaves out blank lines still streams.
                if !self.has_data
                    && (value.trim() == "[DONE]"
                        || serde_json::from_str::<serde::de::IgnoredAny>(value).is_ok())
                {
                    self.data.push_str(value);
                    self.has_data = true;
                    return Some(self.dispatch());
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            _ => {} // id, retry, unknown fields
        }
        None
    }

    fn dispatch(&mut self) -> SseEvent {
        self.has_data = false;
        SseEvent {
            event: self.event.take(),
            data: std::mem::take(&mut self.data),
        }
    }
}

// --- chat-completion chunks ----------------------------------------------

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    usage: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    index: Option<u64>,
    /// A streamed piece.
    #[serde(default)]
    delta: Option<Delta>,
    /// A whole message (non-streamed completions).
    #[serde(default)]
    message: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Debug, Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    /// A piece of the JSON text (some servers send a whole object).
    #[serde(default)]
    arguments: Option<Value>,
}

/// A tool call being put together.
#[derive(Debug, Default)]
struct PartialCall {
    index: usize,
    id: String,
    name: String,
    arguments: String,
}

/// Turns chunks into events; owns the tool calls being put together.
#[derive(Debug, Default)]
struct Assembler {
    calls: Vec<PartialCall>,
    /// The model said something (text, a tool-call piece, a finish): the
    /// first-token deadline no longer applies.
    heard: bool,
    /// `Done` was produced.
    done: bool,
    /// `[DONE]` was read.
    ended: bool,
    /// The last `usage` seen.
    usage: Option<Value>,
}

impl Assembler {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<ReasonEvent>) -> Result<(), AgentError> {
        if event.event.as_deref() == Some("error") {
            let message = error_message(&event.data).unwrap_or_else(|| "error event".to_owned());
            return Err(AgentError::engine(PROVIDER, message));
        }
        self.on_data(&event.data, out)
    }

    fn on_data(&mut self, data: &str, out: &mut Vec<ReasonEvent>) -> Result<(), AgentError> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            self.ended = true;
            if !self.done {
                self.finish(None, out)?;
            }
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            AgentError::engine(
                PROVIDER,
                format!("unreadable stream chunk ({e}): {}", quote(data)),
            )
        })?;
        self.on_chunk(chunk, out)
    }

    fn on_chunk(&mut self, chunk: Chunk, out: &mut Vec<ReasonEvent>) -> Result<(), AgentError> {
        if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
            return Err(AgentError::engine(PROVIDER, describe_error(&error)));
        }
        if let Some(usage) = chunk.usage.filter(|u| !u.is_null()) {
            self.usage = Some(usage);
        }
        if self.done {
            return Ok(());
        }
        let Some(choice) = chunk
            .choices
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.index.unwrap_or(0) == 0)
        else {
            return Ok(()); // a usage chunk, a keep-alive chunk
        };
        if let Some(delta) = choice.delta.or(choice.message) {
            for text in [delta.content, delta.refusal].into_iter().flatten() {
                if !text.is_empty() {
                    self.heard = true;
                    out.push(ReasonEvent::Token(text));
                }
            }
            for (position, piece) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                self.heard = true;
                self.merge(position, piece);
            }
        }
        if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
            self.finish(Some(&reason), out)?;
        }
        Ok(())
    }

    /// Adds a tool-call fragment to the call it belongs to.
    fn merge(&mut self, position: usize, piece: ToolCallDelta) {
        let id = piece.id.filter(|id| !id.is_empty());
        let slot = match piece.index {
            Some(index) => self
                .calls
                .iter()
                .position(|c| c.index == index)
                .unwrap_or_else(|| {
                    self.calls.push(PartialCall {
                        index,
                        ..PartialCall::default()
                    });
                    self.calls.len() - 1
                }),
            // Servers that leave out `index`: a new id starts a call; a
            // fragment without one continues the last call, unless it is
            // not the first of its chunk (a chunk of whole calls).
            None => {
                let next = self.calls.iter().map(|c| c.index + 1).max().unwrap_or(0);
                let existing = match &id {
                    Some(id) => self.calls.iter().position(|c| c.id == *id),
                    None if position == 0 => self.calls.len().checked_sub(1),
                    None => self.calls.iter().position(|c| c.index == position),
                };
                existing.unwrap_or_else(|| {
                    self.calls.push(PartialCall {
                        index: next,
                        ..PartialCall::default()
                    });
                    self.calls.len() - 1
                })
            }
        };
        let call = &mut self.calls[slot];
        if call.id.is_empty() {
            if let Some(id) = id {
                call.id = id;
            }
        }
        if let Some(function) = piece.function {
            if let Some(name) = function.name.filter(|n| !n.is_empty()) {
                // Some servers repeat the whole name in every fragment.
                if call.name.is_empty() {
                    call.name = name;
                } else if call.name != name {
                    call.name.push_str(&name);
                }
            }
            match function.arguments {
                Some(Value::String(s)) => call.arguments.push_str(&s),
                Some(Value::Null) | None => {}
                Some(whole) => call.arguments = whole.to_string(),
            }
        }
    }

    /// Ends the choice: the tool calls, then `Done`.
    fn finish(
        &mut self,
        reason: Option<&str>,
        out: &mut Vec<ReasonEvent>,
    ) -> Result<(), AgentError> {
        self.done = true;
        self.heard = true;
        let mut calls = std::mem::take(&mut self.calls);
        calls.sort_by_key(|c| c.index);
        let had_calls = !calls.is_empty();
        for call in calls {
            out.push(ReasonEvent::ToolCall(complete(call)?));
        }
        let finish = match reason {
            Some("length") => FinishReason::Length,
            Some("tool_calls" | "function_call") if !had_calls => {
                return Err(AgentError::engine(
                    PROVIDER,
                    "finish_reason tool_calls without any tool call",
                ));
            }
            _ if had_calls => FinishReason::ToolCalls,
            Some("stop") | None => FinishReason::Stop,
            Some(other) => {
                tracing::warn!(provider = PROVIDER, finish_reason = other, "unusual finish");
                FinishReason::Stop
            }
        };
        out.push(ReasonEvent::Done(finish));
        Ok(())
    }
}

/// A finished tool call, its arguments parsed.
fn complete(call: PartialCall) -> Result<ToolCall, AgentError> {
    if call.name.is_empty() {
        return Err(AgentError::engine(
            PROVIDER,
            format!("tool call {} has no function name", call.index),
        ));
    }
    let text = call.arguments.trim();
    let arguments = if text.is_empty() {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_str::<Value>(text).map_err(|e| {
            AgentError::engine(
                PROVIDER,
                format!(
                    "arguments of tool call {:?} are not JSON ({e}): {}",
                    call.name,
                    quote(text)
                ),
            )
        })?
    };
    // Some models encode the object twice.
    let arguments = match arguments {
        Value::String(inner) => match serde_json::from_str::<Value>(&inner) {
            Ok(object @ Value::Object(_)) => object,
            _ => Value::String(inner),
        },
        other => other,
    };
    if !arguments.is_object() {
        return Err(AgentError::engine(
            PROVIDER,
            format!(
                "arguments of tool call {:?} are not a JSON object: {}",
                call.name,
                quote(text)
            ),
        ));
    }
    let id = if call.id.is_empty() {
        format!("call_{}", call.index)
    } else {
        call.id
    };
    Ok(ToolCall {
        id,
        name: call.name,
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;
    use std::io::BufRead;
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::extract::State;
    use axum::http::HeaderMap as AxumHeaders;
    use axum::response::Response;
    use axum::routing::post;

    use crate::agent::provider::SyncState;
    use serde_json::json;

    // --- helpers ---------------------------------------------------------

    fn data_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/openai")
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = data_dir().join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn token(text: &str) -> ReasonEvent {
        ReasonEvent::Token(text.to_owned())
    }

    fn call(id: &str, name: &str, arguments: Value) -> ReasonEvent {
        ReasonEvent::ToolCall(ToolCall {
            id: id.to_owned(),
            name: name.to_owned(),
            arguments,
        })
    }

    fn tokens(texts: &[&str]) -> Vec<ReasonEvent> {
        texts.iter().map(|t| token(t)).collect()
    }

    /// What a stream gave: its events, then the error that ended it.
    type Outcome = (Vec<ReasonEvent>, Option<AgentError>);

    /// Parses a body offline, fed in the given pieces, as `converse` does.
    fn replay_pieces(pieces: &[&[u8]]) -> Outcome {
        let mut parser = SseParser::default();
        let mut assembler = Assembler::default();
        let mut events = Vec::new();
        let feed = pieces.iter().map(Some).chain([None]);
        for piece in feed {
            let eof = piece.is_none();
            if let Some(p) = piece {
                parser.push(p);
            }
            loop {
                match parser.next_event(eof) {
                    Ok(Some(event)) => {
                        if let Err(e) = assembler.on_event(&event, &mut events) {
                            return (events, Some(e));
                        }
                        if assembler.done {
                            return (events, None);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return (events, Some(e)),
                }
            }
        }
        (
            events,
            Some(AgentError::unavailable(
                PROVIDER,
                "the stream ended before the reply was finished",
            )),
        )
    }

    fn replay_chunked(body: &[u8], size: usize) -> Outcome {
        let pieces: Vec<&[u8]> = body.chunks(size.max(1)).collect();
        replay_pieces(&pieces)
    }

    fn replay(body: &[u8]) -> Outcome {
        replay_pieces(&[body])
    }

    fn is_engine(e: &Option<AgentError>, needle: &str) -> bool {
        matches!(e, Some(AgentError::Engine { reason, .. }) if reason.contains(needle))
    }

    fn is_unavailable(e: &Option<AgentError>, needle: &str) -> bool {
        matches!(e, Some(AgentError::Unavailable { reason, .. }) if reason.contains(needle))
    }

    // --- a scripted server -----------------------------------------------

    /// What the test server answers.
    #[derive(Clone)]
    struct Reply {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
        /// Bytes per body frame (each frame is a read of its own for the
        /// client); 0 for the whole body at once.
        chunk: usize,
        /// Before the status line.
        head_delay: Duration,
        /// Between frames.
        chunk_delay: Duration,
        /// After the body, `: ping` comments every `chunk_delay` forever
        /// instead of the end of the response.
        ping_forever: bool,
    }

    impl Reply {
        fn sse(body: Vec<u8>) -> Self {
            Reply {
                status: 200,
                content_type: "text/event-stream; charset=utf-8",
                body,
                chunk: 0,
                head_delay: Duration::ZERO,
                chunk_delay: Duration::ZERO,
                ping_forever: false,
            }
        }

        fn chunked(mut self, size: usize) -> Self {
            self.chunk = size;
            self
        }
    }

    struct Recorded {
        path: String,
        headers: AxumHeaders,
        body: Value,
    }

    struct ServerState {
        reply: Reply,
        requests: Mutex<Vec<Recorded>>,
        /// The response body (or the handler) was dropped: the client went
        /// away or the response ended.
        dropped: AtomicBool,
    }

    struct DropFlag(Arc<ServerState>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.dropped.store(true, Ordering::SeqCst);
        }
    }

    struct TestServer {
        addr: SocketAddr,
        state: Arc<ServerState>,
    }

    impl TestServer {
        fn base_url(&self) -> String {
            format!("http://{}/v1", self.addr)
        }
    }

    async fn serve(reply: Reply) -> TestServer {
        let state = Arc::new(ServerState {
            reply,
            requests: Mutex::new(Vec::new()),
            dropped: AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestServer { addr, state }
    }

    async fn handle(
        State(state): State<Arc<ServerState>>,
        uri: axum::http::Uri,
        headers: AxumHeaders,
        body: Bytes,
    ) -> Response {
        state.requests.lock().unwrap().push(Recorded {
            path: uri.path().to_owned(),
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let guard = DropFlag(state.clone());
        let reply = state.reply.clone();
        tokio::time::sleep(reply.head_delay).await;
        let size = if reply.chunk == 0 {
            reply.body.len().max(1)
        } else {
            reply.chunk
        };
        let frames: VecDeque<Bytes> = reply
            .body
            .chunks(size)
            .map(Bytes::copy_from_slice)
            .collect();
        let stream = futures_util::stream::unfold(
            (frames, true, guard),
            move |(mut frames, first, guard)| async move {
                if !first && !reply.chunk_delay.is_zero() {
                    tokio::time::sleep(reply.chunk_delay).await;
                }
                let frame = match frames.pop_front() {
                    Some(frame) => frame,
                    None if reply.ping_forever => Bytes::from_static(b": ping\n\n"),
                    None => return None,
                };
                Some((Ok::<_, std::io::Error>(frame), (frames, false, guard)))
            },
        );
        Response::builder()
            .status(reply.status)
            .header("content-type", reply.content_type)
            .body(Body::from_stream(stream))
            .unwrap()
    }

    fn config(base_url: String) -> OpenAiConfig {
        OpenAiConfig {
            base_url,
            model: "test-model".to_owned(),
            connect_timeout: Duration::from_secs(2),
            first_token_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(5),
            ..OpenAiConfig::default()
        }
    }

    fn ask(text: &str) -> ReasonRequest {
        ReasonRequest {
            messages: vec![Message {
                role: Role::User,
                content: text.to_owned(),
            }],
            ..ReasonRequest::default()
        }
    }

    /// Everything a stream gives until it closes (10 s at most).
    async fn collect(mut rx: ReasonStream) -> Outcome {
        let mut events = Vec::new();
        let mut error = None;
        let read = async {
            while let Some(item) = rx.recv().await {
                assert!(error.is_none(), "an item after the error: {item:?}");
                match item {
                    Ok(event) => {
                        assert!(
                            !matches!(events.last(), Some(ReasonEvent::Done(_))),
                            "an event after Done: {event:?}"
                        );
                        events.push(event);
                    }
                    Err(e) => error = Some(e),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the stream did not close within 10 s");
        (events, error)
    }

    /// Serves `reply` and runs one request against it.
    async fn run(reply: Reply, request: ReasonRequest) -> (Outcome, TestServer) {
        let server = serve(reply).await;
        let reasoner = OpenAiReasoner::new(config(server.base_url())).unwrap();
        let outcome = collect(reasoner.reason(request)).await;
        (outcome, server)
    }

    /// Serves a fixture whole and in 1- and 7-byte frames; the outcome must
    /// be the same each time, and the same as the offline replay.
    async fn run_fixture(name: &str) -> Outcome {
        let body = fixture(name);
        let offline = replay(&body);
        for size in [0, 1, 7] {
            let (outcome, _) = run(Reply::sse(body.clone()).chunked(size), ask("hi")).await;
            assert_eq!(outcome, offline, "{name} in frames of {size} bytes");
        }
        offline
    }

    // --- the event-stream reader -----------------------------------------

    fn sse_events(input: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for piece in input {
            parser.push(piece);
            while let Some(e) = parser.next_event(false).unwrap() {
                out.push(e);
            }
        }
        while let Some(e) = parser.next_event(true).unwrap() {
            out.push(e);
        }
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    #[test]
    fn sse_line_ends_comments_fields_and_bom() {
        let input = b"\xEF\xBB\xBF: hello\r\ndata: {\"a\":1}\r\n\r\n: ping\r\rdata:{\"b\":2}\r\rid: 3\nretry: 10\nevent: update\ndata: {\"c\":3}\n\ndata: [DONE]\n\n";
        let want = vec![
            ev(None, "{\"a\":1}"),
            ev(None, "{\"b\":2}"),
            ev(Some("update"), "{\"c\":3}"),
            ev(None, "[DONE]"),
        ];
        assert_eq!(sse_events(&[input]), want);
        // The same, one byte at a time (a `\r` at the end of a read waits
        // for the next one to know whether `\n` follows).
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(sse_events(&bytes), want);
    }

    #[test]
    fn sse_multi_line_data_is_joined_until_the_blank_line() {
        let want = vec![ev(None, "{\"a\":\n 1}"), ev(None, "not json\neither")];
        let lf = "data: {\"a\":\ndata:  1}\n\ndata: not json\ndata: either\n\n";
        let crlf = lf.replace('\n', "\r\n");
        for input in [lf.as_bytes(), crlf.as_bytes()] {
            assert_eq!(sse_events(&[input]), want);
            // A `\r` and its `\n` in different reads are one line end.
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(sse_events(&bytes), want);
        }
    }

    #[test]
    fn sse_without_blank_lines_still_streams_and_eof_flushes() {
        // One JSON object per line and no blank lines: each is an event at
        // once; the last line has no line end at all.
        let mut parser = SseParser::default();
        parser.push(b"data: {\"a\":1}\ndata: {\"b\":2}\ndata: [DONE]");
        assert_eq!(
            parser.next_event(false).unwrap(),
            Some(ev(None, "{\"a\":1}"))
        );
        assert_eq!(
            parser.next_event(false).unwrap(),
            Some(ev(None, "{\"b\":2}"))
        );
        assert_eq!(parser.next_event(false).unwrap(), None);
        assert_eq!(parser.next_event(true).unwrap(), Some(ev(None, "[DONE]")));
        assert_eq!(parser.next_event(true).unwrap(), None);
    }

    #[test]
    fn sse_multibyte_characters_split_between_reads() {
        let input = "data: {\"choices\":[{\"delta\":{\"content\":\"é€🏠\"}}]}\n\n".as_bytes();
        for size in 1..8 {
            let pieces: Vec<&[u8]> = input.chunks(size).collect();
            let events = sse_events(&pieces);
            assert_eq!(events.len(), 1);
            assert!(events[0].data.contains("é€🏠"), "{size}: {:?}", events[0]);
        }
    }

    #[test]
    fn sse_refuses_an_endless_line() {
        let mut parser = SseParser::default();
        let junk = vec![b'x'; MAX_EVENT + 1];
        parser.push(b"data: ");
        parser.push(&junk);
        assert!(matches!(
            parser.next_event(false),
            Err(AgentError::Engine { .. })
        ));
    }

    /// Every fixture gives the same outcome whatever the read boundaries:
    /// every read size from 1 to 64 bytes.
    #[test]
    fn fixtures_parse_the_same_whatever_the_read_boundaries() {
        let mut names: Vec<String> = std::fs::read_dir(data_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sse"))
            .collect();
        names.sort();
        assert!(names.len() >= 10, "fixtures: {names:?}");
        for name in names {
            let body = fixture(&name);
            let whole = replay(&body);
            // Reads of one byte put a boundary at every position; larger
            // ones leave several lines, and parts of lines, in one read.
            for size in 1..=64 {
                assert_eq!(
                    replay_chunked(&body, size),
                    whole,
                    "{name}, reads of {size} bytes"
                );
            }
        }
    }

    // --- chunks to events ------------------------------------------------

    #[test]
    fn unreadable_chunks_and_inconsistent_finishes_are_engine_errors() {
        let (events, error) = replay(b"data: {\"choices\": [\n\n");
        assert!(events.is_empty());
        assert!(is_engine(&error, "unreadable stream chunk"), "{error:?}");

        let body = b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n";
        let (_, error) = replay(body);
        assert!(is_engine(&error, "without any tool call"), "{error:?}");

        let body = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"arguments\":\"{}\"}}]}}]}\n\ndata: [DONE]\n\n";
        let (_, error) = replay(body);
        assert!(is_engine(&error, "no function name"), "{error:?}");

        let body = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"[1,2]\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n";
        let (_, error) = replay(body);
        assert!(is_engine(&error, "not a JSON object"), "{error:?}");

        let (_, error) = replay(b"event: error\ndata: {\"message\":\"overloaded\"}\n\n");
        assert!(is_engine(&error, "overloaded"), "{error:?}");
    }

    #[test]
    fn tolerated_variants_of_tool_calls() {
        // Double-encoded arguments, empty arguments, no id, a repeated name,
        // no finish_reason (only [DONE]), and a second choice (ignored).
        let body = concat!(
            "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other choice\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"hang_up\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"c2\",\"function\":{\"name\":\"note\",\"arguments\":\"\\\"{\\\\\\\"text\\\\\\\": \"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"c2\",\"function\":{\"name\":\"note\",\"arguments\":\"\\\\\\\"hi\\\\\\\"}\\\"\"}}]}}]}\n\n",
            "data: [DONE]\n\n",
        );
        let (events, error) = replay(body.as_bytes());
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                call("call_0", "hang_up", json!({})),
                call("c2", "note", json!({"text": "hi"})),
                ReasonEvent::Done(FinishReason::ToolCalls),
            ]
        );
    }

    // --- recorded and hand-written streams over HTTP --------------------

    #[tokio::test]
    async fn plain_text_answer() {
        let (events, error) = run_fixture("text.sse").await;
        assert_eq!(error, None);
        let mut want = tokens(&[
            "Yes",
            ", we",
            " are",
            " open",
            " on",
            " Saturday",
            " — 9",
            "–",
            "5 🏠",
            ".",
        ]);
        want.push(ReasonEvent::Done(FinishReason::Stop));
        assert_eq!(events, want);
    }

    #[tokio::test]
    async fn tool_call_arguments_in_many_fragments() {
        let (events, error) = run_fixture("tool_call_fragments.sse").await;
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                call(
                    "call_Xk2LM8",
                    "search_listings",
                    json!({"city": "Lyon", "max_price": 250000, "bedrooms": 2, "note": "near a \"métro\" stop"}),
                ),
                ReasonEvent::Done(FinishReason::ToolCalls),
            ]
        );
    }

    #[tokio::test]
    async fn two_parallel_tool_calls_after_some_text() {
        let (events, error) = run_fixture("parallel_tool_calls.sse").await;
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                token("Let me check."),
                call("call_A", "get_weather", json!({"city": "Paris"})),
                call(
                    "call_B",
                    "book_viewing",
                    json!({"listing_id": "L-42", "date": "2026-12-05"})
                ),
                ReasonEvent::Done(FinishReason::ToolCalls),
            ]
        );
    }

    #[tokio::test]
    async fn usage_chunk_with_empty_choices() {
        let (events, error) = run_fixture("usage.sse").await;
        assert_eq!(error, None);
        let mut want = tokens(&["Two", " bedrooms", "."]);
        want.push(ReasonEvent::Done(FinishReason::Stop));
        assert_eq!(events, want);
    }

    #[tokio::test]
    async fn keepalives_comments_crlf_and_empty_deltas() {
        let (events, error) = run_fixture("keepalive.sse").await;
        assert_eq!(error, None);
        let mut want = tokens(&["Parking", " is", " free", "."]);
        want.push(ReasonEvent::Done(FinishReason::Stop));
        assert_eq!(events, want);
    }

    #[tokio::test]
    async fn length_limit() {
        let (events, error) = run_fixture("length.sse").await;
        assert_eq!(error, None);
        let mut want = tokens(&["The listing has", " a large"]);
        want.push(ReasonEvent::Done(FinishReason::Length));
        assert_eq!(events, want);
    }

    #[tokio::test]
    async fn unparseable_tool_arguments() {
        let (events, error) = run_fixture("bad_arguments.sse").await;
        assert!(events.is_empty(), "{events:?}");
        assert!(is_engine(&error, "search_listings"), "{error:?}");
        assert!(is_engine(&error, "{\"city\": Lyon}"), "{error:?}");
    }

    #[tokio::test]
    async fn stream_cut_before_its_end() {
        let (events, error) = run_fixture("truncated.sse").await;
        assert_eq!(events, tokens(&["We have", " three"]));
        assert!(is_unavailable(&error, "ended before"), "{error:?}");
    }

    #[tokio::test]
    async fn error_object_inside_the_stream() {
        let (events, error) = run_fixture("midstream_error.sse").await;
        assert_eq!(events, tokens(&["Sure"]));
        assert!(is_engine(&error, "CUDA out of memory"), "{error:?}");
    }

    #[tokio::test]
    async fn ollama_style_whole_tool_call_without_index() {
        let (events, error) = run_fixture("ollama_tool_call.sse").await;
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                call("call_o1w2", "get_weather", json!({"city": "Toronto"})),
                ReasonEvent::Done(FinishReason::ToolCalls),
            ]
        );
    }

    /// A stream recorded from llama-cpp-python's server with
    /// SmolLM2-135M-Instruct (see the slow test).
    #[tokio::test]
    async fn recorded_llama_cpp_stream() {
        let (events, error) = run_fixture("llama_cpp_stream.sse").await;
        assert_eq!(error, None);
        let mut want = tokens(LLAMA_CPP_TOKENS);
        want.push(ReasonEvent::Done(FinishReason::Length));
        assert_eq!(events, want);
    }

    /// The tokens of `llama_cpp_stream.sse` (48: it hit `max_tokens`).
    const LLAMA_CPP_TOKENS: &[&str] = &[
        "I",
        "'m",
        " sorry",
        " for",
        " any",
        " inconvenience",
        ",",
        " but",
        " as",
        " a",
        " real",
        " estate",
        " agent",
        ",",
        " I",
        " only",
        " work",
        " on",
        " weekends",
        ".",
        " If",
        " you",
        " have",
        " any",
        " scheduling",
        " issues",
        " or",
        " need",
        " to",
        " respond",
        " to",
        " customer",
        " inquiries",
        " during",
        " the",
        " week",
        "days",
        ",",
        " please",
        " let",
        " me",
        " know",
        " so",
        " we",
        " can",
        " accommodate",
        " your",
        " preferences",
    ];

    /// A forced tool call recorded from llama-cpp-python: it repeats the
    /// id and the name in every fragment.
    #[tokio::test]
    async fn recorded_llama_cpp_tool_call() {
        let (events, error) = run_fixture("llama_cpp_tool_call.sse").await;
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                call(
                    "call__0_get_weather_cmpl-238393af-393b-42a7-8f27-e2c52dd6bea4",
                    "get_weather",
                    json!({"city": "Paris"}),
                ),
                ReasonEvent::Done(FinishReason::ToolCalls),
            ]
        );
    }

    #[tokio::test]
    async fn whole_json_completion_when_the_server_does_not_stream() {
        let reply = Reply {
            content_type: "application/json",
            ..Reply::sse(fixture("non_streaming.json"))
        };
        let ((events, error), _) = run(reply, ask("who am I?")).await;
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                token("One moment."),
                call("call_1", "lookup_caller", json!({"phone": "+33612345678"})),
                ReasonEvent::Done(FinishReason::ToolCalls),
            ]
        );
    }

    // --- HTTP errors -------------------------------------------------------

    #[tokio::test]
    async fn http_400_is_an_engine_error_with_the_server_message() {
        let reply = Reply {
            status: 400,
            content_type: "application/json",
            ..Reply::sse(fixture("error_400.json"))
        };
        let ((events, error), _) = run(reply, ask("hi")).await;
        assert!(events.is_empty());
        assert_eq!(
            error,
            Some(AgentError::engine(
                PROVIDER,
                "HTTP 400: Invalid parameter: messages with role 'tool' must be a response \
                 to a preceeding message with 'tool_calls'."
            ))
        );
    }

    #[tokio::test]
    async fn http_503_and_429_are_unavailable() {
        let reply = Reply {
            status: 503,
            content_type: "application/json",
            ..Reply::sse(fixture("error_503.json"))
        };
        let ((events, error), _) = run(reply, ask("hi")).await;
        assert!(events.is_empty());
        assert_eq!(
            error,
            Some(AgentError::unavailable(PROVIDER, "HTTP 503: Loading model"))
        );

        let reply = Reply {
            status: 429,
            content_type: "application/json",
            ..Reply::sse(br#"{"error":"rate limit reached"}"#.to_vec())
        };
        let ((_, error), _) = run(reply, ask("hi")).await;
        assert_eq!(
            error,
            Some(AgentError::unavailable(
                PROVIDER,
                "HTTP 429: rate limit reached"
            ))
        );

        let reply = Reply {
            status: 502,
            content_type: "text/html",
            ..Reply::sse(Vec::new())
        };
        let ((_, error), _) = run(reply, ask("hi")).await;
        assert_eq!(
            error,
            Some(AgentError::unavailable(PROVIDER, "HTTP 502: Bad Gateway"))
        );
    }

    #[tokio::test]
    async fn connection_refused_is_unavailable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let reasoner = OpenAiReasoner::new(config(format!("http://127.0.0.1:{port}/v1"))).unwrap();
        let (events, error) = collect(reasoner.reason(ask("hi"))).await;
        assert!(events.is_empty());
        assert!(is_unavailable(&error, "POST http://127.0.0.1"), "{error:?}");
    }

    // --- deadlines and cancellation --------------------------------------

    /// The server answers at once but says nothing but keep-alives: the
    /// request's deadline (200 ms) wins over the config's (2 s).
    #[tokio::test]
    async fn first_token_deadline_of_the_request() {
        let reply = Reply {
            chunk_delay: Duration::from_millis(20),
            ping_forever: true,
            ..Reply::sse(b": connected\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n".to_vec())
        };
        let request = ReasonRequest {
            first_token_deadline: Duration::from_millis(200),
            ..ask("hi")
        };
        let started = std::time::Instant::now();
        let ((events, error), _) = run(reply, request).await;
        let elapsed = started.elapsed();
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(
            error,
            Some(AgentError::Timeout(
                "openai first token (200 ms)".to_owned()
            ))
        );
        assert!(
            elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(1),
            "{elapsed:?}"
        );
    }

    /// No deadline in the request: the config's applies; the server does
    /// not even send its headers.
    #[tokio::test]
    async fn first_token_deadline_of_the_config() {
        let server = serve(Reply {
            head_delay: Duration::from_secs(30),
            ..Reply::sse(fixture("text.sse"))
        })
        .await;
        let reasoner = OpenAiReasoner::new(OpenAiConfig {
            first_token_timeout: Duration::from_millis(150),
            ..config(server.base_url())
        })
        .unwrap();
        let started = std::time::Instant::now();
        let (events, error) = collect(reasoner.reason(ask("hi"))).await;
        let elapsed = started.elapsed();
        assert!(events.is_empty());
        assert_eq!(
            error,
            Some(AgentError::Timeout(
                "openai first token (150 ms)".to_owned()
            ))
        );
        assert!(
            elapsed >= Duration::from_millis(150) && elapsed < Duration::from_secs(1),
            "{elapsed:?}"
        );
    }

    /// The same on the paused clock: virtual time runs to the deadline
    /// (the server would wait an hour), to the millisecond.
    #[tokio::test(start_paused = true)]
    async fn first_token_deadline_on_virtual_time() {
        let server = serve(Reply {
            head_delay: Duration::from_secs(3600),
            ..Reply::sse(fixture("text.sse"))
        })
        .await;
        let reasoner = OpenAiReasoner::new(OpenAiConfig {
            // Longer than the deadline, so that the clock never jumps to it.
            connect_timeout: Duration::from_secs(600),
            ..config(server.base_url())
        })
        .unwrap();
        let request = ReasonRequest {
            first_token_deadline: Duration::from_millis(1500),
            ..ask("hi")
        };
        let started = Instant::now();
        let (events, error) = collect(reasoner.reason(request)).await;
        assert!(events.is_empty());
        assert_eq!(
            error,
            Some(AgentError::Timeout(
                "openai first token (1500 ms)".to_owned()
            ))
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_millis(1510),
            "{elapsed:?}"
        );
    }

    /// Tokens keep coming, slowly: the total timeout ends the reply.
    #[tokio::test]
    async fn total_timeout() {
        let mut body = String::new();
        for i in 0..200 {
            body.push_str(&format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{i} \"}}}}]}}\n\n"
            ));
        }
        let server = serve(Reply {
            chunk_delay: Duration::from_millis(25),
            ..Reply::sse(body.into_bytes()).chunked(60)
        })
        .await;
        let reasoner = OpenAiReasoner::new(OpenAiConfig {
            total_timeout: Duration::from_millis(300),
            first_token_timeout: Duration::from_millis(250),
            ..config(server.base_url())
        })
        .unwrap();
        let started = std::time::Instant::now();
        let (events, error) = collect(reasoner.reason(ask("hi"))).await;
        let elapsed = started.elapsed();
        assert!(!events.is_empty() && events.len() < 200, "{}", events.len());
        assert!(events.iter().all(|e| matches!(e, ReasonEvent::Token(_))));
        assert_eq!(events[0], token("w0 "));
        assert_eq!(
            error,
            Some(AgentError::Timeout("openai reply (300 ms)".to_owned()))
        );
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(1),
            "{elapsed:?}"
        );
    }

    /// Dropping the stream mid-reply drops the connection: the server's
    /// response body goes away.
    #[tokio::test]
    async fn dropping_the_stream_drops_the_connection() {
        let server = serve(Reply {
            chunk_delay: Duration::from_millis(10),
            ping_forever: true,
            ..Reply::sse(
                b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n"
                    .to_vec(),
            )
        })
        .await;
        let reasoner = OpenAiReasoner::new(config(server.base_url())).unwrap();
        let mut rx = reasoner.reason(ask("hi"));
        assert_eq!(rx.recv().await, Some(Ok(token("Hello"))));
        assert!(!server.state.dropped.load(Ordering::SeqCst));
        drop(rx);
        let gone = async {
            while !server.state.dropped.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(3), gone)
            .await
            .expect("the connection was still open 3 s after the stream was dropped");
    }

    // --- the request -----------------------------------------------------

    #[tokio::test]
    async fn request_body_headers_and_path() {
        let server = serve(Reply::sse(fixture("text.sse"))).await;
        let reasoner = OpenAiReasoner::new(OpenAiConfig {
            api_key: Some("sk-test-123".to_owned()),
            temperature: Some(0.25),
            max_tokens: Some(120),
            extra_headers: vec![("X-Gateway-Route".to_owned(), "voice".to_owned())],
            ..config(format!("{}/", server.base_url()))
        })
        .unwrap();
        assert_eq!(
            reasoner.endpoint(),
            format!("http://{}/v1/chat/completions", server.addr)
        );
        let weather = ToolCall {
            id: "call_A".to_owned(),
            name: "get_weather".to_owned(),
            arguments: json!({"city": "Paris"}),
        };
        let request = ReasonRequest {
            messages: vec![
                Message {
                    role: Role::System,
                    content: "You are Ava.".to_owned(),
                },
                Message {
                    role: Role::User,
                    content: "Weather in Paris?".to_owned(),
                },
                assistant_tool_calls_message("Let me look.", std::slice::from_ref(&weather)),
                tool_result_message(&ToolResult {
                    call_id: "call_A".to_owned(),
                    content: json!({"sky": "clear", "celsius": 21}),
                    sync: None,
                }),
                Message {
                    role: Role::Assistant,
                    content: "It is clear, 21 degrees.".to_owned(),
                },
            ],
            tools: vec![ToolSpec {
                name: "get_weather".to_owned(),
                description: "Current weather in a city".to_owned(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            }],
            intent: Some("weather".to_owned()),
            slots: BTreeMap::new(),
            first_token_deadline: Duration::from_secs(1),
            ..ReasonRequest::default()
        };
        let (events, error) = collect(reasoner.reason(request)).await;
        assert_eq!(error, None);
        assert_eq!(events.last(), Some(&ReasonEvent::Done(FinishReason::Stop)));

        let requests = server.state.requests.lock().unwrap();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.headers["authorization"], "Bearer sk-test-123");
        assert_eq!(r.headers["x-gateway-route"], "voice");
        assert_eq!(r.headers["accept"], "text/event-stream");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(
            r.body,
            json!({
                "model": "test-model",
                "stream": true,
                "temperature": 0.25,
                "max_tokens": 120,
                "messages": [
                    {"role": "system", "content": "You are Ava."},
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": "Let me look.", "tool_calls": [
                        {"id": "call_A", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_A", "content": "{\"celsius\":21,\"sky\":\"clear\"}"},
                    {"role": "assistant", "content": "It is clear, 21 degrees."},
                ],
                "tools": [{"type": "function", "function": {
                    "name": "get_weather",
                    "description": "Current weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                }}],
            })
        );
    }

    #[test]
    fn no_tools_no_key_no_sampling_settings() {
        let body = request_body(&config("http://x/v1".to_owned()), &ask("hi"));
        assert_eq!(
            body,
            json!({"model": "test-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
        );
    }

    #[test]
    fn tool_messages_without_the_encoding() {
        let two = [
            ToolCall {
                id: "a".to_owned(),
                name: "f".to_owned(),
                arguments: json!({}),
            },
            ToolCall {
                id: "b".to_owned(),
                name: "g".to_owned(),
                arguments: json!({"x": 1}),
            },
        ];
        let messages = vec![
            // A tool result before any call: told to the model as user text.
            Message {
                role: Role::Tool,
                content: "orphan".to_owned(),
            },
            assistant_tool_calls_message("", &two),
            // A result with a sync state, then a plain-text one that answers
            // the call still open.
            tool_result_message(&ToolResult {
                call_id: "a".to_owned(),
                content: json!("booked"),
                sync: Some(SyncState::Queued),
            }),
            Message {
                role: Role::Tool,
                content: "plain".to_owned(),
            },
            // JSON that is not the encoding stays assistant text.
            Message {
                role: Role::Assistant,
                content: "{\"tool_calls\": 3}".to_owned(),
            },
        ];
        assert_eq!(
            wire_messages(&messages),
            vec![
                json!({"role": "user", "content": "Tool result: orphan"}),
                json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{\"x\":1}"}},
                ]}),
                json!({"role": "tool", "tool_call_id": "a", "content": "{\"result\":\"booked\",\"sync\":\"queued\"}"}),
                json!({"role": "tool", "tool_call_id": "b", "content": "plain"}),
                json!({"role": "assistant", "content": "{\"tool_calls\": 3}"}),
            ]
        );
    }

    #[test]
    fn bad_configs_are_refused_and_the_key_stays_out_of_debug() {
        let bad =
            |c: OpenAiConfig| matches!(OpenAiReasoner::new(c), Err(AgentError::Config { .. }));
        assert!(bad(config("not a url".to_owned())));
        assert!(bad(config("ftp://host/v1".to_owned())));
        assert!(bad(OpenAiConfig {
            total_timeout: Duration::ZERO,
            ..config("http://h/v1".to_owned())
        }));
        assert!(bad(OpenAiConfig {
            extra_headers: vec![("bad header".to_owned(), "x".to_owned())],
            ..config("http://h/v1".to_owned())
        }));
        let r = OpenAiReasoner::new(OpenAiConfig {
            api_key: Some("sk-secret".to_owned()),
            ..config("https://api.example.com/v1".to_owned())
        })
        .unwrap();
        assert_eq!(r.name(), "openai");
        assert_eq!(r.endpoint(), "https://api.example.com/v1/chat/completions");
        assert!(!format!("{r:?}").contains("sk-secret"));
    }

    // --- a real model ----------------------------------------------------

    /// Stops the server started by `scripts/local-llm.sh start` (its whole
    /// process group), however the test ends.
    struct LocalServer {
        script: PathBuf,
        pid: u32,
    }

    impl Drop for LocalServer {
        fn drop(&mut self) {
            let stopped = std::process::Command::new(&self.script)
                .args(["stop", &self.pid.to_string()])
                .status();
            if !stopped.is_ok_and(|s| s.success()) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", self.pid)])
                    .status();
            }
        }
    }

    fn timed_collect(
        rx: ReasonStream,
    ) -> impl Future<Output = (Vec<(Duration, ReasonEvent)>, Option<AgentError>)> {
        let started = std::time::Instant::now();
        async move {
            let mut rx = rx;
            let mut events = Vec::new();
            let mut error = None;
            while let Some(item) = rx.recv().await {
                match item {
                    Ok(e) => events.push((started.elapsed(), e)),
                    Err(e) => error = Some(e),
                }
            }
            (events, error)
        }
    }

    /// The shape every stream must have: tokens and tool calls, then one
    /// `Done` (`ToolCalls` exactly when there were tool calls).
    fn assert_well_formed(events: &[ReasonEvent]) {
        let Some((ReasonEvent::Done(finish), body)) = events.split_last() else {
            panic!("the stream did not end with Done: {events:?}");
        };
        assert!(
            body.iter()
                .all(|e| matches!(e, ReasonEvent::Token(_) | ReasonEvent::ToolCall(_))),
            "{events:?}"
        );
        let calls = body
            .iter()
            .filter(|e| matches!(e, ReasonEvent::ToolCall(_)))
            .count();
        if calls > 0 {
            assert_eq!(*finish, FinishReason::ToolCalls, "{events:?}");
        } else {
            assert!(!body.is_empty(), "neither text nor a tool call: {events:?}");
        }
    }

    /// The slow test: a real OpenAI-compatible server (llama-cpp-python
    /// with SmolLM2-135M-Instruct, installed by `scripts/local-llm.sh` into
    /// `target/local-llm`: minutes the first time, PyPI needed).
    /// `VOXTRUNK_RECORD_OPENAI=1` also records `llama_cpp_stream.sse` and
    /// `llama_cpp_tool_call.sse` anew (then update `LLAMA_CPP_TOKENS`).
    #[test]
    #[ignore = "slow: builds llama-cpp-python and runs a real model; \
                cargo test --bin voxtrunk slow_openai -- --ignored"]
    fn slow_openai_reasoner_against_local_llama_cpp_server() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local-llm.sh");
        let started = std::time::Instant::now();
        let install = std::process::Command::new(&script)
            .arg("install")
            .output()
            .expect("cannot run scripts/local-llm.sh");
        assert!(
            install.status.success(),
            "scripts/local-llm.sh install failed (is PyPI reachable? are gcc, g++ and cmake \
             installed?):\n{}",
            String::from_utf8_lossy(&install.stderr)
        );
        let installed = started.elapsed();

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut start = std::process::Command::new(&script)
            .args(["start", &port.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cannot run scripts/local-llm.sh start");
        let mut server = None;
        let mut base_url = None;
        for line in std::io::BufReader::new(start.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(pid) = line.strip_prefix("pid=") {
                server = Some(LocalServer {
                    script: script.clone(),
                    pid: pid.parse().unwrap(),
                });
            } else if let Some(url) = line.strip_prefix("base_url=") {
                base_url = Some(url.to_owned());
            }
        }
        let status = start.wait().unwrap();
        let _server = server.expect("scripts/local-llm.sh start printed no pid");
        assert!(status.success(), "scripts/local-llm.sh start failed");
        let base_url = base_url.expect("scripts/local-llm.sh start printed no base_url");
        let ready = started.elapsed();

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let reasoner = OpenAiReasoner::new(OpenAiConfig {
                model: "smollm2-135m-instruct".to_owned(),
                temperature: Some(0.0),
                max_tokens: Some(48),
                first_token_timeout: Duration::from_secs(10),
                total_timeout: Duration::from_secs(60),
                ..config(base_url.clone())
            })
            .unwrap();
            let chat = ReasonRequest {
                messages: vec![
                    Message {
                        role: Role::System,
                        content: "You are a phone assistant for a real estate agency. Answer in one short sentence.".to_owned(),
                    },
                    Message { role: Role::User, content: "Hello, are you open on Saturday?".to_owned() },
                ],
                ..ReasonRequest::default()
            };

            // A short chat, three times: the first token's latency.
            let mut first_tokens = Vec::new();
            for round in 0..3 {
                let (events, error) = timed_collect(reasoner.reason(chat.clone())).await;
                assert_eq!(error, None, "round {round}: {events:?}");
                let plain: Vec<ReasonEvent> = events.iter().map(|(_, e)| e.clone()).collect();
                assert_well_formed(&plain);
                let texts = plain.iter().filter(|e| matches!(e, ReasonEvent::Token(_))).count();
                assert!(texts >= 2, "round {round}: tokens should stream: {plain:?}");
                assert!(matches!(plain.last(), Some(ReasonEvent::Done(FinishReason::Stop | FinishReason::Length))));
                first_tokens.push(events[0].0);
                let text: String = plain
                    .iter()
                    .filter_map(|e| match e {
                        ReasonEvent::Token(t) => Some(t.as_str()),
                        _ => None,
                    })
                    .collect();
                eprintln!(
                    "round {round}: first token {:?}, {} events in {:?}: {text:?}",
                    events[0].0,
                    plain.len(),
                    events.last().unwrap().0
                );
            }

            // A tool on offer and a prompt that invites it. The model is
            // tiny: only the shape of the stream is checked.
            let tools = ReasonRequest {
                messages: vec![
                    Message {
                        role: Role::System,
                        content: "You are a phone assistant. Use the tools when they help.".to_owned(),
                    },
                    Message {
                        role: Role::User,
                        content: "Please book a viewing of listing L-42 for Saturday at 10.".to_owned(),
                    },
                ],
                tools: vec![ToolSpec {
                    name: "book_viewing".to_owned(),
                    description: "Books a viewing of a listing".to_owned(),
                    parameters: json!({
                        "type": "object",
                        "properties": {"listing_id": {"type": "string"}, "when": {"type": "string"}},
                        "required": ["listing_id", "when"],
                    }),
                }],
                ..ReasonRequest::default()
            };
            let (events, error) = timed_collect(reasoner.reason(tools)).await;
            assert_eq!(error, None, "{events:?}");
            let plain: Vec<ReasonEvent> = events.iter().map(|(_, e)| e.clone()).collect();
            assert_well_formed(&plain);
            eprintln!("with a tool: {plain:?}");

            if std::env::var_os("VOXTRUNK_RECORD_OPENAI").is_some() {
                record(&base_url, &reasoner, &chat).await;
            }
        });
        eprintln!(
            "install {installed:?}, server ready {:?}, whole test {:?}",
            ready - installed,
            started.elapsed()
        );
    }

    /// Records the raw bodies of two streams into the fixtures.
    async fn record(base_url: &str, reasoner: &OpenAiReasoner, chat: &ReasonRequest) {
        let client = reqwest::Client::new();
        let url = format!("{base_url}/chat/completions");
        let body = request_body(reasoner.config(), chat);
        let text = client
            .post(&url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        std::fs::write(data_dir().join("llama_cpp_stream.sse"), &text).unwrap();

        let mut forced = request_body(
            reasoner.config(),
            &ReasonRequest {
                messages: vec![Message {
                    role: Role::User,
                    content: "What is the weather in Paris?".to_owned(),
                }],
                tools: vec![ToolSpec {
                    name: "get_weather".to_owned(),
                    description: "Current weather in a city".to_owned(),
                    parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
                }],
                ..ReasonRequest::default()
            },
        );
        forced["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
        let call = client
            .post(&url)
            .json(&forced)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        std::fs::write(data_dir().join("llama_cpp_tool_call.sse"), &call).unwrap();
        eprintln!("recorded llama_cpp_stream.sse and llama_cpp_tool_call.sse");
    }
}
