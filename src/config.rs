//! Server configuration: a TOML file (optional), overridden by the command
//! line, over built-in defaults.
//!
//! Every value is validated while it is deserialized, so an error carries
//! the exact place it came from: `file:line:column: field: what is wrong`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use voxtrunk_sip::sdp::{AudioCodec, CodecPreference};

/// A configuration or dialplan error with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Dotted field path (`sip.listen`, `route[2].file`), when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about a whole file.
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            line: None,
            column: None,
            field: None,
            message: message.into(),
        }
    }

    /// An error at a byte offset of `source`.
    pub fn at(
        file: &Path,
        source: &str,
        offset: usize,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_col(source, offset);
        ConfigError {
            file: file.to_owned(),
            line: Some(line),
            column: Some(column),
            field: field.or_else(|| key_path_at(source, offset)),
            message: message.into(),
        }
    }

    /// Converts a TOML deserialization error.
    pub fn from_toml(file: &Path, source: &str, e: &toml::de::Error) -> Self {
        match e.span() {
            Some(span) => ConfigError::at(
                file,
                source,
                span.start,
                None,
                e.message().trim().to_owned(),
            ),
            None => ConfigError::file(file, e.message().trim().to_owned()),
        }
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

/// The dotted key that the line at `offset` belongs to: the last `[table]`
/// or `[[array]]` header before it plus the key on that line.
fn key_path_at(source: &str, offset: usize) -> Option<String> {
    let offset = offset.min(source.len());
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[offset..]
        .find('\n')
        .map_or(source.len(), |i| offset + i);
    let line = source[line_start..line_end].trim();
    let mut table = None;
    for l in source[..line_start].lines().rev() {
        let l = l.trim();
        if l.starts_with('[') {
            table = Some(l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
            break;
        }
    }
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().to_owned())
        .filter(|k| !k.starts_with('['));
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

/// An inclusive UDP port range for RTP, `LOW-HIGH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port (even).
    pub low: u16,
    /// Last port.
    pub high: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("expected LOW-HIGH, got {s:?}"))?;
        let parse = |x: &str| {
            x.trim()
                .parse::<u16>()
                .map_err(|_| format!("{x:?} is not a port number"))
        };
        let (low, high) = (parse(a)?, parse(b)?);
        if low < 1024 || high <= low {
            return Err(format!(
                "range {low}-{high} must satisfy 1024 <= LOW < HIGH"
            ));
        }
        if high - low < 3 {
            return Err("the range must hold at least two RTP/RTCP port pairs".into());
        }
        Ok(PortRange { low, high })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A codec name as written in config (`PCMU`, `PCMA`, `G722`, `opus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecName(pub AudioCodec);

impl<'de> Deserialize<'de> for CodecName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let c = match s.to_ascii_lowercase().as_str() {
            "pcmu" => AudioCodec::Pcmu,
            "pcma" => AudioCodec::Pcma,
            "g722" => AudioCodec::G722,
            "opus" => AudioCodec::Opus,
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "unknown codec {s:?}, expected one of PCMU, PCMA, G722, opus"
                )));
            }
        };
        Ok(CodecName(c))
    }
}

/// `[sip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// UDP and TCP listen address.
    pub listen: SocketAddr,
    /// Host written in Via and Contact (defaults to the listen address, or
    /// the primary interface address when listening on 0.0.0.0).
    pub advertise: Option<IpAddr>,
    /// RFC 3261 T1 in milliseconds.
    pub t1_ms: u64,
    /// T2 in milliseconds.
    pub t2_ms: u64,
    /// T4 in milliseconds.
    pub t4_ms: u64,
    /// Largest SIP message accepted (bigger gets 513).
    pub max_message_bytes: usize,
    /// Server / User-Agent header.
    pub user_agent: String,
    /// Send in-dialog requests along the flow the INVITE came on.
    pub in_dialog_to_source: bool,
    /// Close idle TCP connections after this many seconds.
    pub tcp_idle_timeout_s: u64,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: "0.0.0.0:5060".parse().expect("literal address"),
            advertise: None,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            max_message_bytes: 65_535,
            user_agent: format!("voxtrunk/{}", env!("CARGO_PKG_VERSION")),
            in_dialog_to_source: false,
            tcp_idle_timeout_s: 300,
        }
    }
}

/// Which codec wins when several are common.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    /// The first codec of the offer that we support.
    Offerer,
    /// The first codec of our list that the offer has.
    Local,
}

/// `[rtp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtpConfig {
    /// Port range, `LOW-HIGH`.
    pub ports: PortRange,
    /// Address written in SDP `c=` (defaults like `sip.advertise`).
    pub advertise: Option<IpAddr>,
    /// End calls after this many seconds without RTP; 0 disables.
    pub inactivity_timeout_s: u64,
    /// Codecs in local preference order.
    pub codecs: Vec<CodecName>,
    /// Codec choice rule.
    pub prefer: Prefer,
    /// Send RTP to where the peer's RTP comes from.
    pub symmetric: bool,
    /// Send encoded silence when there is nothing to play.
    pub send_silence: bool,
    /// Upper bound of the adaptive jitter buffer, ms.
    pub jitter_max_ms: u32,
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            ports: PortRange {
                low: 10_000,
                high: 20_000,
            },
            advertise: None,
            inactivity_timeout_s: 30,
            codecs: vec![
                CodecName(AudioCodec::Pcmu),
                CodecName(AudioCodec::Pcma),
                CodecName(AudioCodec::G722),
                CodecName(AudioCodec::Opus),
            ],
            prefer: Prefer::Offerer,
            symmetric: true,
            send_silence: true,
            jitter_max_ms: 200,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// HTTP listen address for /healthz, /metrics, /calls; off when unset.
    pub listen: Option<SocketAddr>,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Concurrent calls before new INVITEs get 503.
    pub max_calls: usize,
    /// New calls per second (sliding one-second window) before new
    /// INVITEs get 503; 0: no limit.
    pub max_cps: u32,
    /// Retry-After seconds on 503.
    pub retry_after_s: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_calls: 2000,
            max_cps: 0,
            retry_after_s: 5,
        }
    }
}

/// `[inference]`: the worker pools of the speech engines and reasoners,
/// and the utilization admission keeps them under.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceConfig {
    /// Speech-recognition threads (default: the machine's cores).
    pub stt_workers: Option<usize>,
    /// Utterances recognised at once (each holds a decoder, ~7 MB, for as
    /// long as the caller speaks); an agent's `[stt] decoders` defaults to it.
    pub stt_streams: usize,
    /// Speech-synthesis threads (default: the machine's cores).
    pub tts_workers: Option<usize>,
    /// Reasoning requests at once.
    pub reason_workers: usize,
    /// Jobs that may wait per pool; more are refused.
    pub max_queue: usize,
    /// Utilization new agent calls may bring a pool (or the cores) to, 0–1.
    pub target_utilization: f64,
    /// Queue wait (ms) past which new agent calls are refused.
    pub max_wait_ms: u64,
    /// Seconds an agent call is left out of the measurements after it is
    /// admitted (its greeting plays first).
    pub settle_s: u64,
    /// Agent calls admitted per `settle_s` while a call's share of the
    /// pools is not known yet.
    pub warmup_calls: usize,
    /// Starting share of each pool one agent call takes, in slots (the
    /// figures `voxtrunk_pool_call_share` shows on an earlier run).
    pub call_share: std::collections::BTreeMap<String, f64>,
    /// Where the learnt shares are kept across restarts (relative to the
    /// config file); read at start-up before `call_share`.
    pub shares_file: Option<PathBuf>,
    /// Whether the pools' load decides on new agent calls (false: only
    /// `[limits]` do, as when measuring where the machine gives out).
    pub admission: bool,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            stt_workers: None,
            stt_streams: 8,
            tts_workers: None,
            reason_workers: 8,
            max_queue: 256,
            target_utilization: 0.75,
            max_wait_ms: 150,
            settle_s: 10,
            warmup_calls: 8,
            call_share: Default::default(),
            shares_file: None,
            admission: true,
        }
    }
}

impl InferenceConfig {
    /// The pools' settings on a machine with `cores` cores, starting from
    /// `call_share`.
    pub fn settings(&self, cores: usize) -> crate::inference::InferenceSettings {
        let call_share = crate::inference::Inference::POOL_NAMES
            .iter()
            .filter_map(|&n| self.call_share.get(n).map(|&v| (n, v)))
            .collect();
        crate::inference::InferenceSettings {
            stt_workers: self.stt_workers.unwrap_or(cores),
            stt_streams: self.stt_streams,
            tts_workers: self.tts_workers.unwrap_or(cores),
            reason_workers: self.reason_workers,
            max_queue: self.max_queue,
            target_utilization: self.target_utilization,
            max_wait_ms: self.max_wait_ms as f64,
            cores,
            settle: Duration::from_secs(self.settle_s),
            warmup_calls: self.warmup_calls,
            call_share,
            admission: self.admission,
        }
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long live calls may go on after SIGTERM before they get BYE.
    pub drain_timeout_s: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout_s: 30,
        }
    }
}

/// `[[trunk]]`: a named set of source networks (carriers, PBXs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Name used by dialplan routes.
    pub name: String,
    /// Source networks, CIDR.
    pub sources: Vec<ipnet::IpNet>,
    /// Concurrent calls from this trunk before its INVITEs get 503.
    #[serde(default)]
    pub max_calls: Option<usize>,
    /// New calls per second from this trunk before its INVITEs get 503.
    #[serde(default)]
    pub max_cps: Option<u32>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// SIP settings.
    pub sip: SipConfig,
    /// RTP settings.
    pub rtp: RtpConfig,
    /// Admin HTTP.
    pub admin: AdminConfig,
    /// Admission limits.
    pub limits: LimitsConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Inference pools and AI-aware admission.
    pub inference: InferenceConfig,
    /// Trunks.
    pub trunk: Vec<TrunkConfig>,
    /// Dialplan directory (relative to the config file).
    pub dialplans: Option<PathBuf>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))?;
        let mut c: Config =
            toml::from_str(&source).map_err(|e| ConfigError::from_toml(path, &source, &e))?;
        if let Some(d) = &c.dialplans {
            if d.is_relative() {
                c.dialplans = Some(path.parent().unwrap_or(Path::new(".")).join(d));
            }
        }
        if let Some(f) = &c.inference.shares_file {
            if f.is_relative() {
                c.inference.shares_file = Some(path.parent().unwrap_or(Path::new(".")).join(f));
            }
        }
        c.validate(path, &source)?;
        Ok(c)
    }

    fn validate(&self, path: &Path, source: &str) -> Result<(), ConfigError> {
        let at = |key: &str, msg: String| {
            let offset = source.find(key).unwrap_or(0);
            ConfigError::at(path, source, offset, Some(key.to_owned()), msg)
        };
        if self.sip.t1_ms == 0 || self.sip.t2_ms < self.sip.t1_ms || self.sip.t4_ms == 0 {
            return Err(at(
                "t1_ms",
                "timers must satisfy 0 < t1_ms <= t2_ms and t4_ms > 0".into(),
            ));
        }
        if self.rtp.codecs.is_empty() {
            return Err(at("codecs", "at least one codec must be enabled".into()));
        }
        if !(20..=1000).contains(&self.rtp.jitter_max_ms) {
            return Err(at("jitter_max_ms", "must be from 20 to 1000".into()));
        }
        if self.sip.max_message_bytes < 1024 {
            return Err(at("max_message_bytes", "must be at least 1024".into()));
        }
        // The field is named from the table the key is in.
        let at_key = |key: &str, msg: String| {
            let offset = source.find(key).unwrap_or(0);
            ConfigError::at(path, source, offset, None, msg)
        };
        let inf = &self.inference;
        if !(inf.target_utilization > 0.0 && inf.target_utilization <= 1.0) {
            return Err(at_key(
                "target_utilization",
                "must be above 0 and at most 1".into(),
            ));
        }
        for (key, n) in [
            ("stt_workers", inf.stt_workers),
            ("stt_streams", Some(inf.stt_streams)),
            ("tts_workers", inf.tts_workers),
            ("reason_workers", Some(inf.reason_workers)),
            ("max_queue", Some(inf.max_queue)),
        ] {
            if n.is_some_and(|n| !(1..=1024).contains(&n)) {
                return Err(at_key(key, "must be from 1 to 1024".into()));
            }
        }
        if inf.warmup_calls == 0 {
            return Err(at_key("warmup_calls", "must be at least 1".into()));
        }
        if !(1..=600).contains(&inf.settle_s) {
            return Err(at_key("settle_s", "must be from 1 to 600".into()));
        }
        for (pool, share) in &inf.call_share {
            // The key inside `call_share` (inline table or its own table).
            let at = |msg: String| {
                let from = source.find("call_share").unwrap_or(0);
                let offset = source[from..]
                    .find(pool.as_str())
                    .map_or(from, |o| from + o);
                let field = format!("inference.call_share.{pool}");
                ConfigError::at(path, source, offset, Some(field), msg)
            };
            if !crate::inference::Inference::POOL_NAMES.contains(&pool.as_str()) {
                return Err(at(format!(
                    "no pool named {pool:?} (the pools: {})",
                    crate::inference::Inference::POOL_NAMES.join(", ")
                )));
            }
            if !(share.is_finite() && *share >= 0.0) {
                return Err(at("must be a number of slots, 0 or more".into()));
            }
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.trunk {
            if !names.insert(&t.name) {
                return Err(at(
                    &format!("\"{}\"", t.name),
                    format!("trunk {:?} is defined twice", t.name),
                ));
            }
        }
        Ok(())
    }

    /// T1/T2/T4 for the SIP endpoint.
    pub fn timers(&self) -> voxtrunk_sip::transaction::TimerConfig {
        voxtrunk_sip::transaction::TimerConfig {
            t1: Duration::from_millis(self.sip.t1_ms),
            t2: Duration::from_millis(self.sip.t2_ms),
            t4: Duration::from_millis(self.sip.t4_ms),
        }
    }

    /// The codec preference rule for SDP.
    pub fn codec_preference(&self) -> CodecPreference {
        match self.rtp.prefer {
            Prefer::Offerer => CodecPreference::Offerer,
            Prefer::Local => CodecPreference::Local,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("voxtrunk.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(&p).map_err(|mut e| {
            e.file = PathBuf::from("voxtrunk.toml");
            e
        })
    }

    #[test]
    fn defaults_and_overrides() {
        let c = load("[sip]\nlisten = \"127.0.0.1:5070\"\n[rtp]\nports = \"30000-30100\"\ncodecs = [\"opus\", \"PCMU\"]\n").unwrap();
        assert_eq!(c.sip.listen, "127.0.0.1:5070".parse().unwrap());
        assert_eq!(
            c.rtp.ports,
            PortRange {
                low: 30000,
                high: 30100
            }
        );
        assert_eq!(c.rtp.codecs[0], CodecName(AudioCodec::Opus));
        assert_eq!(c.sip.t1_ms, 500);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = load("[sip]\nlisten = \"127.0.0.1:5070\"\nlsten = 3\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(
            e.to_string()
                .starts_with("voxtrunk.toml:3:1: sip.lsten: unknown field `lsten`"),
            "{e}"
        );
        let e = load("[rtp]\nports = \"20000-10000\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "voxtrunk.toml:2:9: rtp.ports: range 20000-10000 must satisfy 1024 <= LOW < HIGH"
        );
        let e = load("[rtp]\ncodecs = [\"G729\"]\n").unwrap_err();
        assert!(
            e.to_string().contains("rtp.codecs: unknown codec \"G729\""),
            "{e}"
        );
        let e = load("[sip]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("voxtrunk.toml:2:10: sip.listen: "),
            "{e}"
        );
        let e = load("[sip]\nt1_ms = 0\n").unwrap_err();
        assert!(
            e.to_string().contains("sip.t1_ms") || e.to_string().contains("t1_ms"),
            "{e}"
        );
    }

    #[test]
    fn inference_and_limits() {
        let c = load(
            "[limits]\nmax_cps = 50\n[inference]\nstt_workers = 3\ntarget_utilization = 0.6\n\
             [[trunk]]\nname = \"carrier\"\nsources = [\"10.0.0.0/8\"]\nmax_calls = 30\nmax_cps = 5\n",
        )
        .unwrap();
        assert_eq!(c.limits.max_cps, 50);
        let s = c.inference.settings(2);
        assert_eq!((s.stt_workers, s.tts_workers, s.reason_workers), (3, 2, 8));
        assert!((s.target_utilization - 0.6).abs() < 1e-9);
        assert_eq!(
            (c.trunk[0].max_calls, c.trunk[0].max_cps),
            (Some(30), Some(5))
        );
        let e = load("[inference]\n\ntarget_utilization = 1.5\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "voxtrunk.toml:3:1: inference.target_utilization: must be above 0 and at most 1"
        );
        let e = load("[inference]\ntts_workers = 0\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("inference.tts_workers: must be from 1 to 1024"),
            "{e}"
        );
    }

    #[test]
    fn agent_call_shares_and_warm_up() {
        let c = load(
            "[inference]
stt_workers = 3
settle_s = 20
warmup_calls = 4
             shares_file = \"var/shares.json\"
call_share = { stt = 0.02, tts = 0.01 }
",
        )
        .unwrap();
        let s = c.inference.settings(2);
        assert_eq!(s.call_share, vec![("stt", 0.02), ("tts", 0.01)]);
        assert_eq!((s.settle, s.warmup_calls), (Duration::from_secs(20), 4));
        let file = c.inference.shares_file.expect("shares_file");
        assert!(
            file.is_absolute() && file.ends_with("var/shares.json"),
            "{file:?}"
        );
        let e = load(
            "[inference]
stt_streams = 8
\n[inference.call_share]
stt = 0.1
sst = 0.1
",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "voxtrunk.toml:6:1: inference.call_share.sst: no pool named \"sst\" \
             (the pools: stt, stt_streams, tts, reason)"
        );
        let e = load(
            "[inference]
call_share = { tts = -1.0 }
",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("inference.call_share.tts: must be a number of slots, 0 or more"),
            "{e}"
        );
        let e = load(
            "[inference]
warmup_calls = 0
",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("2:1: inference.warmup_calls: must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc\n", 3), (2, 2));
        assert_eq!(line_col("abc", 0), (1, 1));
    }
}
