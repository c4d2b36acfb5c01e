//! voxtrunk: a SIP/RTP server that answers phone calls.
//!
//! `voxtrunk run` serves calls; `voxtrunk check` validates the config and
//! dialplans. This file is the edge: argument parsing, logging, the tokio
//! runtime and signal handling. See ARCHITECTURE.md for the call path.

mod admin;
mod admission;
mod agent;
mod call;
mod config;
mod dialplan;
mod inference;
mod net;
mod runtime;
mod signalling;
mod transfer;
mod wav;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;
use tracing::{error, info, warn};

use config::{Config, ConfigError, PortRange};
use dialplan::Dialplan;
use runtime::{Runtime, Shared, advertise_for};
use signalling::Shutdown;

#[derive(Parser, Debug)]
#[command(
    name = "voxtrunk",
    version,
    about = "SIP/RTP server that answers phone calls with AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve calls (SIP on UDP and TCP on the same address).
    Run {
        /// Config file (TOML); built-in defaults without it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// SIP listen address, e.g. 0.0.0.0:5060.
        #[arg(long, value_name = "IP:PORT")]
        sip_listen: Option<SocketAddr>,
        /// RTP port range, e.g. 10000-20000.
        #[arg(long, value_name = "LOW-HIGH")]
        rtp_ports: Option<PortRange>,
        /// Dialplan directory (default: ./dialplans).
        #[arg(long, value_name = "DIR")]
        dialplans: Option<PathBuf>,
        /// Admin HTTP address (/healthz, /metrics, /calls).
        #[arg(long, value_name = "IP:PORT")]
        admin_listen: Option<SocketAddr>,
        /// Log format on stdout.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Transcribe WAV files with the speech recogniser, one JSON line per
    /// file: {"file", "text", "confidence", "language"}.
    Transcribe {
        /// Recognise with this agent's language model (its phrases).
        #[arg(long, value_name = "AGENT.TOML")]
        agent: Option<PathBuf>,
        /// More phrases, one per line (added to the agent's, or the only
        /// ones). Without phrases or an agent: the general model alone.
        #[arg(long, value_name = "FILE")]
        phrases: Option<PathBuf>,
        /// The files (any rate; channels are mixed).
        #[arg(required = true, value_name = "WAV")]
        files: Vec<PathBuf>,
    },
    /// Validate the config and dialplans, then exit.
    Check {
        /// Config file (TOML).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Dialplan directory (default: ./dialplans).
        #[arg(long, value_name = "DIR")]
        dialplans: Option<PathBuf>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stdout);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Loads the config and dialplans; every error is returned.
fn load(
    config: Option<&Path>,
    dialplans: Option<PathBuf>,
) -> Result<(Config, Dialplan, PathBuf), Vec<ConfigError>> {
    let cfg = match config {
        Some(p) => Config::load(p).map_err(|e| vec![e])?,
        None => Config::default(),
    };
    let dir = dialplans
        .or_else(|| cfg.dialplans.clone())
        .unwrap_or_else(|| PathBuf::from("dialplans"));
    let plan = Dialplan::load(&dir, &cfg)?;
    Ok((cfg, plan, dir))
}

fn report(errors: &[ConfigError]) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    eprintln!("{} error(s)", errors.len());
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Check { config, dialplans } => match load(config.as_deref(), dialplans) {
            Ok((_, plan, dir)) => {
                let problems = check_agents(&plan);
                if !problems.is_empty() {
                    return report(&problems);
                }
                println!(
                    "ok: {} route(s) in {} dialplan file(s) under {}",
                    plan.routes.len(),
                    plan.files.len(),
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => report(&errors),
        },
        Cmd::Transcribe {
            agent,
            phrases,
            files,
        } => transcribe(agent.as_deref(), phrases.as_deref(), &files),
        Cmd::Run {
            config,
            sip_listen,
            rtp_ports,
            dialplans,
            admin_listen,
            log_format,
        } => {
            init_logging(log_format);
            let (mut cfg, plan, dir) = match load(config.as_deref(), dialplans) {
                Ok(v) => v,
                Err(errors) => return report(&errors),
            };
            if let Some(a) = sip_listen {
                cfg.sip.listen = a;
            }
            if let Some(r) = rtp_ports {
                cfg.rtp.ports = r;
            }
            if let Some(a) = admin_listen {
                cfg.admin.listen = Some(a);
            }
            info!(routes = plan.routes.len(), dialplans = %dir.display(), "dialplans loaded");
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut settings = cfg.inference.settings(cores);
            if let Some(f) = cfg.inference.shares_file.as_deref().filter(|f| f.exists()) {
                match inference::load_shares(f) {
                    Ok(shares) => {
                        info!(file = %f.display(), ?shares, "agent call shares from the last run");
                        settings.call_share = shares;
                    }
                    Err(e) => {
                        warn!(file = %f.display(), error = %e, "agent call shares not used: learning them again");
                    }
                }
            }
            let inference = inference::Inference::new(&settings);
            let agents = match load_agents(&plan, &inference) {
                Ok(a) => a,
                Err(e) => {
                    error!(error = %e, "cannot start an agent");
                    return ExitCode::FAILURE;
                }
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "cannot start the runtime");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(serve(cfg, plan, agents, inference)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!(error = %format!("{e:#}"), "server failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `voxtrunk transcribe`.
fn transcribe(agent: Option<&Path>, phrases: Option<&Path>, files: &[PathBuf]) -> ExitCode {
    use agent::stt::pocketsphinx::{PocketSphinx, PsConfig};
    let mut ps = match agent {
        Some(path) => match agent::definition::AgentDefinition::load(path) {
            Ok(def) => agent::runtime::recogniser_config(&def),
            Err(errors) => return report(&errors),
        },
        None => PsConfig::debian(Vec::new()),
    };
    if let Some(path) = phrases {
        match std::fs::read_to_string(path) {
            Ok(text) => ps.phrases.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            ),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ps.decoders = 1;
    let stt = match PocketSphinx::new(ps) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut status = ExitCode::SUCCESS;
    for file in files {
        match agent::stt::transcribe_wav(&stt, file) {
            Ok(t) => println!(
                "{}",
                serde_json::json!({
                    "file": file.display().to_string(),
                    "text": t.text,
                    "confidence": t.confidence,
                    "language": t.language,
                })
            ),
            Err(e) => {
                eprintln!("error: {e}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}

/// The agent definitions the routes use, each once.
fn agent_definitions(plan: &Dialplan) -> Vec<Arc<agent::definition::AgentDefinition>> {
    let mut defs: Vec<Arc<agent::definition::AgentDefinition>> = Vec::new();
    for route in &plan.routes {
        if let dialplan::App::Agent { definition } = &route.app
            && !defs.iter().any(|d| d.path == definition.path)
        {
            defs.push(Arc::clone(definition));
        }
    }
    defs
}

/// Builds every agent the routes use (models, voices, CRM, knowledge).
fn load_agents(
    plan: &Dialplan,
    inference: &inference::Inference,
) -> Result<AgentMap, agent::provider::AgentError> {
    let mut agents = AgentMap::new();
    for def in agent_definitions(plan) {
        let started = std::time::Instant::now();
        let runtime = agent::runtime::AgentRuntime::load((*def).clone(), inference.clone())?;
        info!(
            agent = %def.agent.name,
            definition = %def.path.display(),
            stt = runtime.stt.name(),
            reasoner = runtime.reasoner.name(),
            knowledge = %runtime
                .retrieval
                .sources()
                .iter()
                .map(|s| s.retriever.name())
                .collect::<Vec<_>>()
                .join(","),
            ms = started.elapsed().as_millis() as u64,
            "agent ready"
        );
        agents.insert(def.path.clone(), Arc::new(runtime));
    }
    Ok(agents)
}

/// What `check` finds in the agents beyond their definitions: missing
/// recogniser models are errors; phrase words missing from the
/// pronunciation dictionary are listed (their pronunciation is guessed).
fn check_agents(plan: &Dialplan) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for def in agent_definitions(plan) {
        let ps = agent::runtime::recogniser_config(&def);
        if let Err(e) = ps.check_files() {
            errors.push(ConfigError::file(&def.path, e.to_string()));
            continue;
        }
        if let Err(words) = agent::stt::validate_phrases(&ps.dict, &ps.phrases) {
            eprintln!(
                "note: {}: {} phrase word(s) not in {} (pronunciation will be guessed): {}",
                def.path.display(),
                words.len(),
                ps.dict.display(),
                words.join(", ")
            );
        }
    }
    errors
}

type AgentMap = std::collections::HashMap<PathBuf, Arc<agent::runtime::AgentRuntime>>;

async fn serve(
    cfg: Config,
    plan: Dialplan,
    agents: AgentMap,
    inference: inference::Inference,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let sockets = net::bind_sip(cfg.sip.listen)
        .await
        .with_context(|| format!("cannot listen for SIP on {}", cfg.sip.listen))?;
    let sip_advertise = cfg
        .sip
        .advertise
        .unwrap_or_else(|| advertise_for(sockets.local.ip()));
    let rtp_advertise = cfg.rtp.advertise.unwrap_or(sip_advertise);
    let rtp_bind = if sockets.local.ip().is_unspecified() {
        sockets.local.ip()
    } else {
        rtp_advertise
    };
    let shared = Arc::new(Shared::default());
    let ports = net::RtpPorts::new(rtp_bind, cfg.rtp.ports.low, cfg.rtp.ports.high);
    let admin = match cfg.admin.listen {
        Some(addr) => {
            let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .ok();
            Some(
                admin::spawn(addr, Arc::clone(&shared), handle)
                    .await
                    .with_context(|| format!("cannot listen for admin HTTP on {addr}"))?,
            )
        }
        None => None,
    };
    // The greeting and the fixed lines of every agent are synthesized
    // before the first call can ask for them.
    for agent in agents.values() {
        let started = std::time::Instant::now();
        let cached = agent.prewarm().await;
        info!(
            agent = %agent.def.agent.name,
            prompts = cached,
            ms = started.elapsed().as_millis() as u64,
            "prompts cached"
        );
    }
    info!(
        udp = %sockets.local,
        tcp = %sockets.local,
        advertise = %sip_advertise,
        rtp_ports = %format!("{}-{}", cfg.rtp.ports.low, cfg.rtp.ports.high),
        admin = %admin.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        "listening"
    );
    // Queued CRM writes (also those from before a restart) are delivered
    // in the background for as long as the server runs.
    for agent in agents.values() {
        if let Some(outbox) = &agent.outbox {
            tokio::spawn(Arc::clone(outbox).run());
        }
    }
    let rt = Arc::new(Runtime {
        config: cfg,
        sip_advertise,
        rtp_advertise,
        ports,
        shared,
        agents,
        inference,
    });
    tokio::spawn(sample_pools(Arc::clone(&rt)));
    let (tx, rx) = watch::channel(Shutdown::Run);
    tokio::spawn(signals(tx));
    signalling::run(rt, Arc::new(plan), sockets, rx).await?;
    info!("stopped");
    Ok(())
}

/// Samples the inference pools for their metrics and for admission.
/// The learnt shares are kept every 120 samples (30 s).
async fn sample_pools(rt: Arc<Runtime>) {
    const SAVE_EVERY_TICKS: u64 = 120;
    let mut ticks = 0u64;
    let mut saved = Vec::new();
    let mut tick = tokio::time::interval(inference::SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let agent_calls = rt
            .shared
            .agent_calls
            .load(std::sync::atomic::Ordering::Relaxed);
        rt.inference.sample(std::time::Instant::now(), agent_calls);
        ticks += 1;
        if let Some(f) = &rt.config.inference.shares_file
            && ticks.is_multiple_of(SAVE_EVERY_TICKS)
        {
            let known = {
                let a = rt
                    .inference
                    .admission
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                a.known_shares().map(<[_]>::to_vec)
            };
            if let Some(shares) = known
                && shares != saved
            {
                match inference::save_shares(f, &shares) {
                    Ok(()) => saved = shares,
                    Err(e) => {
                        warn!(file = %f.display(), error = %e, "cannot keep the agent call shares")
                    }
                }
            }
        }
    }
}

/// First SIGINT/SIGTERM: drain. Second: hang up now.
async fn signals(tx: watch::Sender<Shutdown>) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot watch SIGTERM");
            return;
        }
    };
    for next in [Shutdown::Drain, Shutdown::Now] {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!(?next, "signal received");
        if tx.send(next).is_err() {
            return;
        }
    }
}
