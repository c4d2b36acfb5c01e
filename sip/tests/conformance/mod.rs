//! The conformance corpus kept outside the project, shared by the sans-IO
//! torture test of `voxtrunk-sip` and the server's test against the built
//! binary (which includes this file by path).
//!
//! `VOXTRUNK_CONFORMANCE_DIR` names the folder holding `rfc4475/` and
//! `rfc5118/` (CI sets it); the default is `../shared/conformance` beside
//! the checkout.

use std::path::{Path, PathBuf};

/// The conformance folder; fails with a clear message if it is missing.
pub fn conformance_dir() -> PathBuf {
    let dir = std::env::var_os("VOXTRUNK_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // The checkout's root holds Cargo.lock, whichever crate runs.
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            let root = manifest
                .ancestors()
                .find(|d| d.join("Cargo.lock").is_file())
                .unwrap_or(manifest);
            root.join("../shared/conformance")
        });
    assert!(
        dir.join("rfc4475/EXPECTED.md").is_file(),
        "conformance data not found in {}: set VOXTRUNK_CONFORMANCE_DIR to the folder holding rfc4475/",
        dir.display()
    );
    dir
}

/// One row of the machine-readable table of `rfc4475/EXPECTED.md`.
pub struct Expectation {
    /// The message file.
    pub file: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// The answers that pass (the table's third and fourth columns).
    pub accepted: Vec<String>,
    /// Whether the message may create a call.
    pub call_allowed: bool,
}

/// The machine-readable table of `rfc4475/EXPECTED.md`.
pub fn expectations() -> Vec<Expectation> {
    let path = conformance_dir().join("rfc4475/EXPECTED.md");
    let md = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let section = md
        .split("## Machine-readable expectations")
        .nth(1)
        .expect("EXPECTED.md has a machine-readable section");
    let block = section.split("```").nth(1).expect("a fenced table");
    block
        .lines()
        .filter(|l| l.contains(".sip"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let mut accepted = vec![f[2].to_owned()];
            if f[3] != "-" {
                accepted.extend(f[3].split('|').map(str::to_owned));
            }
            Expectation {
                file: f[0].to_owned(),
                transport: f[1].to_owned(),
                accepted,
                call_allowed: f[4] == "y",
            }
        })
        .collect()
}
