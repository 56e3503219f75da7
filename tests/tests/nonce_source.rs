//! No path to a fixed nonce (issue 17 item 5; Keylime CVE-2026-6420 shipped a hard-coded
//! challenge that began as a load-test edit). A challenge nonce is a
//! `trustchain_verifier::attestation::nonce::ChallengeNonce`, whose one constructor draws from
//! the OS CSPRNG; the compiler keeps its field private. This scan keeps the rest true in CI:
//!
//! - `ChallengeNonce` is built (`ChallengeNonce(`, `Self(`) only in `attestation/nonce.rs`, and
//!   there only right after `SystemRandom::new().fill`; that file gives it no `From`, `TryFrom`,
//!   `Default`, `Deserialize`, public field or second constructor;
//! - elsewhere the only `ChallengeNonce::` call is `ChallengeNonce::draw()`;
//! - the appraisal's `Challenge` holds a `ChallengeNonce`, and the wire challenge's nonce is
//!   that one (`challenge.nonce.as_bytes()`), built only in the session;
//! - the session draws no randomness of its own and holds no fixed 32-byte array;
//! - `SystemRandom` appears only in the files listed in [`OTHER_RANDOMNESS`] (keys and
//!   enrollment secrets, never a challenge) besides `nonce.rs`.
//!
//! Each rule is also shown to fire on a source that breaks it. Test modules (everything from a
//! file's first `#[cfg(test)]`) and line comments are left out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// Files of `verifier/src` that may use the CSPRNG for something other than challenges.
const OTHER_RANDOMNESS: &[&str] = &[
    "audit.rs",
    "enrollment/credential.rs",
    "enrollment/enroller.rs",
];
const NONCE_FILE: &str = "attestation/nonce.rs";
const SESSION_FILE: &str = "attestation/session.rs";
const INPUTS_FILE: &str = "attestation/inputs.rs";

fn verifier_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../verifier/src")
}

/// Every `.rs` file under `root`, as (path relative to it with `/`, source).
fn sources(root: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
                let relative = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                found.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    found.sort();
    found
}

/// The code of a file: up to its test module, without line comments.
fn code(source: &str) -> String {
    let end = source.find("#[cfg(test)]").unwrap_or(source.len());
    source[..end]
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The rule violations of one file (`file` relative to `verifier/src`).
fn violations(file: &str, source: &str) -> Vec<String> {
    let code = code(source);
    let mut found = Vec::new();
    let mut flag = |what: &str| found.push(format!("{file}: {what}"));
    if file == NONCE_FILE {
        for forbidden in [
            "impl From",
            "impl TryFrom",
            "Default",
            "Deserialize",
            "pub struct ChallengeNonce(pub",
            "fn from_bytes",
            "fn from_slice",
        ] {
            if code.contains(forbidden) {
                flag(&format!("ChallengeNonce gets `{forbidden}`"));
            }
        }
        // The one construction: `Ok(Self(bytes))` after the CSPRNG filled `bytes`.
        let constructions = code.matches("Self(").count() + code.matches("ChallengeNonce(").count()
            - code.matches("struct ChallengeNonce(").count();
        let drawn = code
            .find("SystemRandom::new()")
            .zip(code.find("Ok(Self(bytes))"));
        if constructions != 1 || !matches!(drawn, Some((fill, built)) if fill < built) {
            flag("a ChallengeNonce is built other than from SystemRandom in draw()");
        }
        let constructors = code.matches("-> Result<Self").count() + code.matches("-> Self").count();
        if constructors != 1 {
            flag("ChallengeNonce has a constructor besides draw()");
        }
        return found;
    }
    if code.contains("ChallengeNonce(") || code.contains("ChallengeNonce {") {
        flag("builds a ChallengeNonce outside nonce.rs");
    }
    let mut rest = code.as_str();
    while let Some(at) = rest.find("ChallengeNonce::") {
        rest = &rest[at + "ChallengeNonce::".len()..];
        if !rest.starts_with("draw()") {
            flag("calls ChallengeNonce:: other than draw()");
        }
    }
    if code.contains("SystemRandom") && !OTHER_RANDOMNESS.contains(&file) {
        flag(
            "uses SystemRandom outside nonce.rs (challenge nonces come from ChallengeNonce::draw)",
        );
    }
    if code.contains("v1::Challenge {") && file != SESSION_FILE {
        flag("builds a wire challenge outside the session");
    }
    if file == SESSION_FILE {
        if !code.contains("nonce: challenge.nonce.as_bytes().to_vec(),") {
            flag("the wire challenge's nonce is not the issued ChallengeNonce");
        }
        for fixed in ["[0u8; 32]", "[0; 32]", ".fill(", "rand::"] {
            if code.contains(fixed) {
                flag(&format!("the session holds `{fixed}`"));
            }
        }
    }
    if file == INPUTS_FILE && !code.contains("pub nonce: ChallengeNonce,") {
        flag("the appraisal's Challenge does not hold a ChallengeNonce");
    }
    found
}

#[test]
fn the_verifier_builds_challenge_nonces_only_from_the_csprng() {
    let files = sources(&verifier_src());
    for required in [NONCE_FILE, SESSION_FILE, INPUTS_FILE] {
        assert!(
            files.iter().any(|(f, _)| f == required),
            "{required} is missing: the scan would check nothing"
        );
    }
    let found: Vec<String> = files
        .iter()
        .flat_map(|(file, source)| violations(file, source))
        .collect();
    assert!(found.is_empty(), "{found:#?}");
}

/// The real files, each changed in one way a fixed nonce could come back: every change is seen.
#[test]
fn each_way_back_to_a_fixed_nonce_is_seen() {
    let files = sources(&verifier_src());
    let real = |name: &str| files.iter().find(|(f, _)| f == name).unwrap().1.clone();
    let (nonce, session, inputs) = (real(NONCE_FILE), real(SESSION_FILE), real(INPUTS_FILE));
    let cases: Vec<(&str, String)> = vec![
        // The load-test edit: a fixed wire nonce.
        (
            SESSION_FILE,
            session.replace(
                "nonce: challenge.nonce.as_bytes().to_vec(),",
                "nonce: vec![0; 32],",
            ),
        ),
        // Randomness of the session's own (maybe seeded).
        (
            SESSION_FILE,
            session.replacen(
                "let nonce = match ChallengeNonce::draw() {",
                "let mut bytes = [0u8; 32]; rng.fill(&mut bytes); let nonce = match ChallengeNonce::draw() {",
                1,
            ),
        ),
        // Another constructor, a conversion, a default.
        (
            NONCE_FILE,
            nonce.replacen(
                "    pub fn as_bytes(",
                "    pub fn fixed(bytes: [u8; 32]) -> Self {\n        Self(bytes)\n    }\n\n    pub fn as_bytes(",
                1,
            ),
        ),
        (
            NONCE_FILE,
            nonce.replacen(
                "impl ChallengeNonce {",
                "impl From<[u8; 32]> for ChallengeNonce {\n    fn from(b: [u8; 32]) -> Self { Self(b) }\n}\n\nimpl ChallengeNonce {",
                1,
            ),
        ),
        (
            NONCE_FILE,
            nonce.replacen("#[derive(Debug, Clone, PartialEq, Eq)]\npub struct ChallengeNonce", "#[derive(Debug, Clone, Default, PartialEq, Eq)]\npub struct ChallengeNonce", 1),
        ),
        (
            NONCE_FILE,
            nonce.replacen("pub struct ChallengeNonce([u8", "pub struct ChallengeNonce(pub [u8", 1),
        ),
        // A nonce from somewhere else.
        (
            "server/attestation.rs",
            "fn f() { let n = ChallengeNonce::from_bytes([7; 32]); }".into(),
        ),
        (
            "server/attestation.rs",
            "fn f() { let r = aws_lc_rs::rand::SystemRandom::new(); }".into(),
        ),
        (
            "attestation/appraisal.rs",
            "fn f() -> v1::Challenge { v1::Challenge { nonce: vec![1; 32], ..Default::default() } }"
                .into(),
        ),
        // The appraisal's challenge holding plain bytes.
        (
            INPUTS_FILE,
            inputs.replace("pub nonce: ChallengeNonce,", "pub nonce: [u8; 32],"),
        ),
    ];
    for (file, changed) in &cases {
        assert!(
            !violations(file, changed).is_empty(),
            "a change to {file} went unseen:\n{changed}"
        );
    }
    // And the real files pass, so each case above fails for its change alone.
    for (file, source) in [
        (NONCE_FILE, &nonce),
        (SESSION_FILE, &session),
        (INPUTS_FILE, &inputs),
    ] {
        assert!(violations(file, source).is_empty(), "{file}");
    }
}
