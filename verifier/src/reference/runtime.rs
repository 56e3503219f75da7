//! IMA entries against the allowlist (rule `ima_allowlist`): manifests' runtime files plus the
//! policy's inline allowlist, minus the policy's excludes. Violations are flagged, never matched.
//!
//! Built once per policy snapshot and shared by every appraisal that uses it: a check is one hash
//! lookup by path per entry and a short scan of that path's digests, with no allocation unless an
//! entry fails.

use std::collections::HashMap;

use regex::RegexSet;

use crate::attestation::verdict::{Failure, Rule, Verdict};
use crate::evidence::digest::HashAlgorithm;
use crate::evidence::ima::{ImaEntry, ImaLog};

use super::policy::parse_file_digest;
use super::{AdmittedManifest, Policy};

/// The IMA entry for the boot aggregate: checked by replay against PCRs 0-9, not by path.
pub const BOOT_AGGREGATE: &str = "boot_aggregate";

/// How many allowed digests a failure lists before "and N more".
const SHOWN_DIGESTS: usize = 4;

/// A file digest's algorithm: one we know, or a name kept as written (lower case) so an unknown
/// algorithm still matches only itself.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Algorithm {
    Known(HashAlgorithm),
    Named(String),
}

impl Algorithm {
    fn from_text(name: &str) -> Self {
        match known(name) {
            Some(alg) => Self::Known(alg),
            None => Self::Named(name.to_ascii_lowercase()),
        }
    }

    fn matches(&self, name: &str, parsed: Option<HashAlgorithm>) -> bool {
        match (self, parsed) {
            (Self::Known(alg), Some(other)) => *alg == other,
            (Self::Named(own), None) => own.eq_ignore_ascii_case(name),
            _ => false,
        }
    }

    fn name(&self) -> &str {
        match self {
            Self::Known(alg) => alg.name(),
            Self::Named(name) => name,
        }
    }
}

/// `HashAlgorithm::from_name` without its lower-casing allocation: this runs once per entry.
fn known(name: &str) -> Option<HashAlgorithm> {
    if name.eq_ignore_ascii_case("sm3") {
        return Some(HashAlgorithm::Sm3_256);
    }
    HashAlgorithm::ALL
        .into_iter()
        .find(|alg| name.eq_ignore_ascii_case(alg.name()))
}

/// The digests one path may have.
type Allowed = Vec<(Algorithm, Box<[u8]>)>;

/// The allowlist compiled once per policy snapshot.
///
/// `Default` is fail-closed: it enforces an empty list, so every measured file fails. Build it
/// from a policy with [`Allowlist::build`].
#[derive(Debug, Clone)]
pub struct Allowlist {
    enforce: bool,
    excludes: Option<RegexSet>,
    /// Set when the policy's excludes did not compile: nothing is excluded, and verdicts say so.
    excludes_error: Option<String>,
    files: HashMap<String, Allowed>,
}

impl Default for Allowlist {
    fn default() -> Self {
        Self {
            enforce: true,
            excludes: None,
            excludes_error: None,
            files: HashMap::new(),
        }
    }
}

impl Allowlist {
    pub fn build(policy: &Policy, manifests: &[AdmittedManifest]) -> Self {
        let (excludes, excludes_error) = if policy.ima.excludes.is_empty() {
            (None, None)
        } else {
            // Validated at import; should it fail anyway, excluding nothing is the safe side.
            match RegexSet::new(&policy.ima.excludes) {
                Ok(set) => (Some(set), None),
                Err(error) => (None, Some(error.to_string())),
            }
        };
        let mut files: HashMap<String, Allowed> = HashMap::new();
        let sources = std::iter::once(&policy.ima.allowlist)
            .chain(manifests.iter().map(|m| &m.manifest.runtime));
        for source in sources {
            for (path, digests) in source {
                for text in digests {
                    // An unreadable digest allows nothing (validated at import).
                    let Some((alg, bytes)) = parse_file_digest(text) else {
                        continue;
                    };
                    let entry = (Algorithm::from_text(&alg), bytes.into_boxed_slice());
                    let allowed = files.entry(path.clone()).or_default();
                    if !allowed.contains(&entry) {
                        allowed.push(entry);
                    }
                }
            }
        }
        Self {
            enforce: policy.ima.enforce_allowlist,
            excludes,
            excludes_error,
            files,
        }
    }

    /// Whether the policy enforces the allowlist at all.
    pub fn enforced(&self) -> bool {
        self.enforce
    }

    /// Number of paths on the list.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Whether `path` is excluded from the check.
    pub fn excluded(&self, path: &str) -> bool {
        self.excludes.as_ref().is_some_and(|set| set.is_match(path))
    }

    /// Whether the entry's (algorithm, digest) is allowed for its path.
    pub fn allows(&self, entry: &ImaEntry) -> bool {
        let parsed = known(&entry.digest_algorithm);
        self.files.get(entry.path.as_str()).is_some_and(|allowed| {
            allowed.iter().any(|(alg, digest)| {
                **digest == *entry.file_digest && alg.matches(&entry.digest_algorithm, parsed)
            })
        })
    }

    /// Adds one failure per entry not on the allowlist (and not excluded).
    pub fn check(&self, log: &ImaLog, verdict: &mut Verdict) {
        if !self.enforce {
            return;
        }
        if let Some(error) = &self.excludes_error {
            verdict.notes.push(format!(
                "ima.excludes did not compile ({error}): no path was excluded"
            ));
        }
        for entry in &log.entries {
            if entry.is_violation() || entry.path == BOOT_AGGREGATE || self.excluded(&entry.path) {
                continue;
            }
            if self.allows(entry) {
                continue;
            }
            verdict.fail(self.failure(entry));
        }
    }

    fn failure(&self, entry: &ImaEntry) -> Failure {
        let measured = format!(
            "{}:{}",
            entry.digest_algorithm.to_ascii_lowercase(),
            hex::encode(&entry.file_digest)
        );
        // The path comes from the device: escaped, so it cannot forge lines in logs or output.
        let subject = format!("IMA entry {} ({})", entry.index, entry.path.escape_debug());
        match self.files.get(entry.path.as_str()) {
            None => Failure::new(Rule::ImaAllowlist, "path not on the allowlist")
                .subject(subject)
                .values(
                    measured,
                    "a file on the allowlist (no digest is listed for this path)",
                ),
            Some(allowed) => {
                let mut expected = allowed
                    .iter()
                    .take(SHOWN_DIGESTS)
                    .map(|(alg, digest)| format!("{}:{}", alg.name(), hex::encode(digest)))
                    .collect::<Vec<_>>()
                    .join(", ");
                if allowed.len() > SHOWN_DIGESTS {
                    expected.push_str(&format!(" and {} more", allowed.len() - SHOWN_DIGESTS));
                }
                Failure::new(Rule::ImaAllowlist, "file digest not allowed for this path")
                    .subject(subject)
                    .values(measured, expected)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::ima::parse_ascii;

    const LIST: &[u8] = b"10 0000000000000000000000000000000000000000 ima-ng sha256:0000000000000000000000000000000000000000000000000000000000000000 /tmp/violated
10 80255d9c7dad91ef5f21b18560a47642d6f4d653 ima-ng sha256:96d7fae8adb7286a419a88f78c13d35fb782d63df654b7db56f154765698b754 /data
";

    fn policy(toml: &str) -> Policy {
        Policy::from_toml(&format!("name = \"p\"\nversion = 1\n{toml}")).unwrap()
    }

    fn log() -> ImaLog {
        // Template hashes are not checked here (replay does that).
        let mut log = parse_ascii(LIST, 0).unwrap();
        log.entries[0].logged_hash = vec![0; 20];
        log
    }

    #[test]
    fn allowlist_excludes_and_violations() {
        let good = policy(
            "[ima.allowlist]\n\"/data\" = [\"sha256:96d7fae8adb7286a419a88f78c13d35fb782d63df654b7db56f154765698b754\"]\n",
        );
        let mut verdict = Verdict::new();
        Allowlist::build(&good, &[]).check(&log(), &mut verdict);
        assert!(verdict.passed(), "{}", verdict.summary());

        let other = policy(
            "[ima.allowlist]\n\"/data\" = [\"sha1:0000000000000000000000000000000000000000\"]\n",
        );
        let mut verdict = Verdict::new();
        Allowlist::build(&other, &[]).check(&log(), &mut verdict);
        assert_eq!(verdict.failures().len(), 1);
        let failure = &verdict.failures()[0];
        assert_eq!(failure.subject, "IMA entry 1 (/data)");
        assert!(failure.measured.starts_with("sha256:96d7"));
        assert_eq!(
            failure.expected,
            "sha1:0000000000000000000000000000000000000000"
        );

        let mut verdict = Verdict::new();
        Allowlist::build(&policy(""), &[]).check(&log(), &mut verdict);
        assert_eq!(
            verdict.failures()[0].expected,
            "a file on the allowlist (no digest is listed for this path)"
        );

        let excluded = policy("[ima]\nexcludes = [\"^/data$\"]\n");
        let mut verdict = Verdict::new();
        Allowlist::build(&excluded, &[]).check(&log(), &mut verdict);
        assert!(verdict.passed());

        let off = policy("[ima]\nenforce_allowlist = false\n");
        let mut verdict = Verdict::new();
        Allowlist::build(&off, &[]).check(&log(), &mut verdict);
        assert!(verdict.passed());
    }

    #[test]
    fn broken_excludes_fail_closed_and_default_enforces() {
        let mut p = policy("");
        p.ima.excludes = vec!["(".into()];
        p.ima
            .allowlist
            .insert("/other".into(), vec!["sha256:00".into()]);
        let list = Allowlist::build(&p, &[]);
        assert!(!list.excluded("("));
        let mut verdict = Verdict::new();
        list.check(&log(), &mut verdict);
        assert!(!verdict.passed());
        assert!(verdict.notes[0].contains("no path was excluded"));

        let mut verdict = Verdict::new();
        Allowlist::default().check(&log(), &mut verdict);
        assert!(!verdict.passed());
    }
}
