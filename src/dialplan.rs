//! Dialplans: `dialplans/*.toml`, read in file-name order; each holds an
//! ordered list of `[[route]]` tables. The first route whose conditions all
//! match a new call decides its application.
//!
//! ```toml
//! [[route]]
//! name = "support"
//! user = "^(support|\\+1800555\\d{4})$"   # regex on the Request-URI user
//! from = "@carrier\\.example$"           # regex on the From URI
//! to = "^sip:"                            # regex on the To URI
//! source = ["192.0.2.0/24"]               # networks the INVITE may come from
//! trunk = "carrier-a"                     # a [[trunk]] of the config
//! app = "playback"                        # echo | playback | reject | agent
//! file = "prompts/welcome.wav"            # playback: WAV, any rate, relative to the dialplan
//! after = "hangup"                        # playback: hangup | loop
//! status = 404                            # reject: 300–699
//! agent = "agents/realestate/agent.toml"   # agent: its definition, relative to the dialplan
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use crate::agent::definition::AgentDefinition;
use crate::config::{Config, ConfigError};

/// What to do when a playback prompt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    /// Hang up (BYE).
    Hangup,
    /// Play it again.
    Loop,
}

/// The application a route hands the call to.
#[derive(Debug, Clone)]
pub enum App {
    /// Send back what is received.
    Echo,
    /// Play 16 kHz mono samples, then hang up or loop.
    Playback {
        /// The prompt, converted to 16 kHz mono at load time.
        samples: Arc<[i16]>,
        /// What happens at the end.
        after: After,
    },
    /// Refuse the call with this status.
    Reject {
        /// 300–699.
        status: u16,
    },
    /// The AI agent.
    Agent {
        /// Its definition (checked at load).
        definition: Arc<AgentDefinition>,
    },
}

impl App {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            App::Echo => "echo",
            App::Playback { .. } => "playback",
            App::Reject { .. } => "reject",
            App::Agent { .. } => "agent",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    user: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
    source: Option<Vec<Spanned<ipnet::IpNet>>>,
    trunk: Option<Spanned<String>>,
    app: Spanned<String>,
    file: Option<Spanned<PathBuf>>,
    after: Option<Spanned<After>>,
    status: Option<Spanned<u16>>,
    agent: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    route: Vec<RawRoute>,
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its name.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    user: Option<Regex>,
    from: Option<Regex>,
    to: Option<Regex>,
    sources: Vec<ipnet::IpNet>,
    /// The application.
    pub app: App,
}

/// What a route is matched against.
#[derive(Debug, Clone)]
pub struct CallFacts<'a> {
    /// Request-URI user, unescaped ("" when there is none).
    pub user: &'a str,
    /// From URI.
    pub from: &'a str,
    /// To URI.
    pub to: &'a str,
    /// Source address of the INVITE.
    pub source: IpAddr,
}

impl Route {
    fn matches(&self, f: &CallFacts<'_>) -> bool {
        self.user.as_ref().is_none_or(|r| r.is_match(f.user))
            && self.from.as_ref().is_none_or(|r| r.is_match(f.from))
            && self.to.as_ref().is_none_or(|r| r.is_match(f.to))
            && (self.sources.is_empty() || self.sources.iter().any(|n| n.contains(&f.source)))
    }
}

/// All routes, in evaluation order.
#[derive(Debug, Clone, Default)]
pub struct Dialplan {
    /// Routes in order.
    pub routes: Vec<Route>,
    /// Files read.
    pub files: Vec<PathBuf>,
}

impl Dialplan {
    /// The first matching route.
    pub fn route(&self, facts: &CallFacts<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(facts))
    }

    /// Loads every `*.toml` in `dir`. Returns every error found, not just
    /// the first, so `voxtrunk check` can list them all.
    pub fn load(dir: &Path, config: &Config) -> Result<Dialplan, Vec<ConfigError>> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            vec![ConfigError::file(
                dir,
                format!("cannot read dialplan directory: {e}"),
            )]
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(vec![ConfigError::file(dir, "no *.toml dialplan files")]);
        }
        let mut plan = Dialplan::default();
        let mut errors = Vec::new();
        for file in files {
            match load_file(&file, config) {
                Ok(routes) => plan.routes.extend(routes),
                Err(e) => errors.extend(e),
            }
            plan.files.push(file);
        }
        if errors.is_empty() {
            Ok(plan)
        } else {
            Err(errors)
        }
    }
}

fn load_file(file: &Path, config: &Config) -> Result<Vec<Route>, Vec<ConfigError>> {
    let source = std::fs::read_to_string(file)
        .map_err(|e| vec![ConfigError::file(file, format!("cannot read: {e}"))])?;
    let raw: RawFile =
        toml::from_str(&source).map_err(|e| vec![ConfigError::from_toml(file, &source, &e)])?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut routes = Vec::new();
    let mut errors = Vec::new();
    for (i, r) in raw.route.into_iter().enumerate() {
        let err = |span: std::ops::Range<usize>, field: &str, msg: String| {
            ConfigError::at(
                file,
                &source,
                span.start,
                Some(format!("route[{i}].{field}")),
                msg,
            )
        };
        match compile(r, base, config, &err) {
            Ok(mut route) => {
                route.file = file.to_owned();
                routes.push(route);
            }
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(routes)
    } else {
        Err(errors)
    }
}

type ErrAt<'a> = dyn Fn(std::ops::Range<usize>, &str, String) -> ConfigError + 'a;

fn regex(
    field: &str,
    v: Option<Spanned<String>>,
    err: &ErrAt<'_>,
) -> Result<Option<Regex>, ConfigError> {
    v.map(|s| {
        Regex::new(s.get_ref()).map_err(|e| err(s.span(), field, format!("invalid regex: {e}")))
    })
    .transpose()
}

fn compile(
    r: RawRoute,
    base: &Path,
    config: &Config,
    err: &ErrAt<'_>,
) -> Result<Route, Vec<ConfigError>> {
    let definition = match (r.app.get_ref().as_str(), &r.agent) {
        ("agent", Some(file)) => {
            let path = base.join(file.get_ref());
            if !path.is_file() {
                return Err(vec![err(
                    file.span(),
                    "agent",
                    format!("{} does not exist", path.display()),
                )]);
            }
            Some(Arc::new(AgentDefinition::load(&path)?))
        }
        (app, Some(file)) if app != "agent" => {
            return Err(vec![err(
                file.span(),
                "agent",
                format!("`agent` does not apply to app {app:?}"),
            )]);
        }
        _ => None,
    };
    compile_route(r, base, config, err, definition).map_err(|e| vec![e])
}

fn compile_route(
    r: RawRoute,
    base: &Path,
    config: &Config,
    err: &ErrAt<'_>,
    definition: Option<Arc<AgentDefinition>>,
) -> Result<Route, ConfigError> {
    let app_span = r.app.span();
    let app_name = r.app.into_inner();
    let forbid = |field: &str, span: Option<std::ops::Range<usize>>| match span {
        Some(s) => Err(err(
            s,
            field,
            format!("`{field}` does not apply to app {app_name:?}"),
        )),
        None => Ok(()),
    };
    let app = match app_name.as_str() {
        "echo" | "agent" => {
            forbid("file", r.file.as_ref().map(Spanned::span))?;
            forbid("after", r.after.as_ref().map(Spanned::span))?;
            forbid("status", r.status.as_ref().map(Spanned::span))?;
            if app_name == "echo" {
                App::Echo
            } else {
                App::Agent {
                    definition: definition.ok_or_else(|| {
                        err(
                            app_span.clone(),
                            "agent",
                            "app \"agent\" needs `agent`, the path of its definition".into(),
                        )
                    })?,
                }
            }
        }
        "playback" => {
            forbid("status", r.status.as_ref().map(Spanned::span))?;
            let file = r.file.ok_or_else(|| {
                err(
                    app_span.clone(),
                    "file",
                    "app \"playback\" needs `file`".into(),
                )
            })?;
            let path = base.join(file.get_ref());
            let samples = crate::wav::load_16k_mono(&path)
                .map_err(|e| err(file.span(), "file", format!("{}: {e}", path.display())))?;
            App::Playback {
                samples,
                after: r.after.map_or(After::Hangup, Spanned::into_inner),
            }
        }
        "reject" => {
            forbid("file", r.file.as_ref().map(Spanned::span))?;
            forbid("after", r.after.as_ref().map(Spanned::span))?;
            let status = r.status.ok_or_else(|| {
                err(
                    app_span.clone(),
                    "status",
                    "app \"reject\" needs `status`".into(),
                )
            })?;
            if !(300..700).contains(status.get_ref()) {
                return Err(err(
                    status.span(),
                    "status",
                    "must be a final non-2xx status, 300 to 699".into(),
                ));
            }
            App::Reject {
                status: status.into_inner(),
            }
        }
        other => {
            return Err(err(
                app_span,
                "app",
                format!("unknown app {other:?}, expected echo, playback, reject or agent"),
            ));
        }
    };
    let mut sources: Vec<ipnet::IpNet> = r
        .source
        .unwrap_or_default()
        .into_iter()
        .map(Spanned::into_inner)
        .collect();
    if let Some(t) = r.trunk {
        let trunk = config
            .trunk
            .iter()
            .find(|c| &c.name == t.get_ref())
            .ok_or_else(|| {
                err(
                    t.span(),
                    "trunk",
                    format!("no [[trunk]] named {:?} in the config", t.get_ref()),
                )
            })?;
        sources.extend(trunk.sources.iter().copied());
    }
    Ok(Route {
        name: r.name.into_inner(),
        file: PathBuf::new(),
        user: regex("user", r.user, err)?,
        from: regex("from", r.from, err)?,
        to: regex("to", r.to, err)?,
        sources,
        app,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(files: &[(&str, &str)]) -> Result<Dialplan, Vec<ConfigError>> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let wav = dir.path().join("tone.wav");
        crate::wav::write_test_tone(&wav, 8000);
        let mut cfg = Config::default();
        cfg.trunk.push(crate::config::TrunkConfig {
            name: "carrier".into(),
            sources: vec!["192.0.2.0/24".parse().unwrap()],
            max_calls: None,
            max_cps: None,
        });
        let r = Dialplan::load(dir.path(), &cfg);
        r.map_err(|es| {
            es.into_iter()
                .map(|mut e| {
                    e.file = PathBuf::from(e.file.file_name().unwrap());
                    e
                })
                .collect()
        })
    }

    fn facts<'a>(user: &'a str, source: &str) -> CallFacts<'a> {
        CallFacts {
            user,
            from: "sip:alice@example.com",
            to: "sip:x@y",
            source: source.parse().unwrap(),
        }
    }

    #[test]
    fn first_matching_route_wins_across_files_in_name_order() {
        let p = plan(&[
            ("20-default.toml", "[[route]]\nname = \"fallback\"\napp = \"reject\"\nstatus = 404\n"),
            (
                "10-main.toml",
                "[[route]]\nname = \"trunk-only\"\nuser = \"^echo$\"\ntrunk = \"carrier\"\napp = \"echo\"\n\n\
                 [[route]]\nname = \"play\"\nuser = \"^play\"\napp = \"playback\"\nfile = \"tone.wav\"\nafter = \"loop\"\n",
            ),
        ])
        .unwrap();
        assert_eq!(
            p.route(&facts("echo", "192.0.2.9")).unwrap().name,
            "trunk-only"
        );
        assert_eq!(
            p.route(&facts("echo", "198.51.100.1")).unwrap().name,
            "fallback"
        );
        let r = p.route(&facts("playback", "10.0.0.1")).unwrap();
        match &r.app {
            App::Playback { samples, after } => {
                assert_eq!(*after, After::Loop);
                assert_eq!(samples.len(), 16_000, "1 s at 8 kHz becomes 1 s at 16 kHz");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_point_at_the_field() {
        let e = plan(&[(
            "a.toml",
            "[[route]]\nname = \"x\"\napp = \"playback\"\nstatus = 404\n",
        )])
        .unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "a.toml:4:10: route[0].status: `status` does not apply to app \"playback\""
        );
        let e = plan(&[(
            "a.toml",
            "[[route]]\nname = \"x\"\nuser = \"(\"\napp = \"echo\"\n",
        )])
        .unwrap_err();
        assert!(
            e[0].to_string()
                .starts_with("a.toml:3:8: route[0].user: invalid regex"),
            "{}",
            e[0]
        );
        let e = plan(&[("a.toml", "[[route]]\nname = \"x\"\napp = \"fax\"\n")]).unwrap_err();
        assert!(
            e[0].to_string()
                .contains("route[0].app: unknown app \"fax\""),
            "{}",
            e[0]
        );
        let e = plan(&[(
            "a.toml",
            "[[route]]\nname = \"x\"\napp = \"reject\"\nstatus = 200\n",
        )])
        .unwrap_err();
        assert!(
            e[0].to_string()
                .contains("a.toml:4:10: route[0].status: must be a final non-2xx"),
            "{}",
            e[0]
        );
        let e = plan(&[(
            "a.toml",
            "[[route]]\nname = \"x\"\napp = \"playback\"\nfile = \"missing.wav\"\n",
        )])
        .unwrap_err();
        assert!(e[0].to_string().contains("route[0].file:"), "{}", e[0]);
        let e = plan(&[(
            "a.toml",
            "[[route]]\nname = \"x\"\napp = \"echo\"\ntrunk = \"nope\"\n",
        )])
        .unwrap_err();
        assert!(
            e[0].to_string().contains("no [[trunk]] named \"nope\""),
            "{}",
            e[0]
        );
        let e = plan(&[(
            "a.toml",
            "[[route]]\nname = \"x\"\napp = \"echo\"\nusr = \"a\"\n",
        )])
        .unwrap_err();
        assert!(
            e[0].to_string()
                .starts_with("a.toml:4:1: route.usr: unknown field `usr`"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn all_errors_are_reported() {
        let e = plan(&[
            ("a.toml", "[[route]]\nname = \"x\"\napp = \"fax\"\n"),
            ("b.toml", "[[route]]\nname = \"y\"\napp = \"modem\"\n"),
        ])
        .unwrap_err();
        assert_eq!(e.len(), 2);
    }
}
