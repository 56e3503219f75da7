//! IMA entries against the allowlist (rule `ima_allowlist`): manifests' runtime files plus the
//! policy's inline allowlist, minus the policy's excludes. Violations are flagged, never matched.
//!
//! Built once per policy snapshot and shared by every appraisal that uses it: a check is one hash
//! lookup by path per entry and a short scan of that path's digests, with no allocation unless an
//! entry fails.

use std::collections::HashMap;

use regex::RegexSet;

use sha2::{Digest as _, Sha256};

use crate::evidence::digest::HashAlgorithm;
use crate::evidence::ima::{ImaEntry, ImaLog};
use crate::evidence::quote::PcrValues;
use crate::verdict::{Failure, Rule, Verdict};

use super::documents::AdmittedManifest;
use super::policy::Policy;
use super::policy::parse_file_digest;

/// The name of the IMA entry for the boot aggregate. Only the first entry of a boot's list
/// (index 0) is the kernel's, and it is exempt from the allowlist only when its digest is the
/// aggregate of the quoted boot PCRs ([`boot_aggregate`]); any other entry of that name is a
/// file like any other.
pub const BOOT_AGGREGATE: &str = "boot_aggregate";

/// What the first entry's boot aggregate is checked against.
#[derive(Debug, Clone, Copy)]
pub enum AggregateCheck<'a> {
    /// The quoted PCR values (an appraisal): the aggregate must be theirs.
    Quoted(&'a PcrValues),
    /// No quote (an offline check of logs): the first entry's digest cannot be checked; it is
    /// exempt, and the verdict notes that it was not checked.
    NotChecked,
}

/// The boot aggregate the kernel computes when IMA starts (`ima_calc_boot_aggregate`): the
/// digest, in the bank of the entry's algorithm, over that bank's PCRs 0-7, and PCRs 8-9 too for
/// every bank but SHA-1 (Linux 5.8 and later; the SHA-1 aggregate stays over 0-7). `None` when
/// the algorithm is unknown or a PCR of that bank was not quoted.
pub fn boot_aggregate(algorithm: HashAlgorithm, pcrs: &PcrValues) -> Option<Vec<u8>> {
    let last = if algorithm == HashAlgorithm::Sha1 {
        7
    } else {
        9
    };
    let mut concatenated = Vec::with_capacity(algorithm.size() * (last + 1));
    for pcr in 0..=last {
        concatenated.extend_from_slice(pcrs.get(algorithm, u32::try_from(pcr).ok()?)?);
    }
    Some(algorithm.hash(&concatenated))
}

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
    /// SHA-256 over everything that decides a verdict (enforcement, excludes, every path and
    /// digest), hex: what a device's IMA entries were judged under (`AppraisalState`), so a
    /// changed allowlist re-judges them.
    fingerprint: String,
}

impl Default for Allowlist {
    fn default() -> Self {
        let mut list = Self {
            enforce: true,
            excludes: None,
            excludes_error: None,
            files: HashMap::new(),
            fingerprint: String::new(),
        };
        list.fingerprint = list.compute_fingerprint(&[]);
        list
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
        let mut list = Self {
            enforce: policy.ima.enforce_allowlist,
            excludes,
            excludes_error,
            files,
            fingerprint: String::new(),
        };
        list.fingerprint = list.compute_fingerprint(&policy.ima.excludes);
        list
    }

    /// A canonical encoding of the list (paths and digests sorted, every field length-prefixed)
    /// hashed once per build.
    fn compute_fingerprint(&self, excludes: &[String]) -> String {
        fn field(hasher: &mut Sha256, bytes: &[u8]) {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        }
        let mut hasher = Sha256::new();
        hasher.update(b"trustchain allowlist v1\0");
        hasher.update([u8::from(self.enforce)]);
        hasher.update((excludes.len() as u64).to_be_bytes());
        for exclude in excludes {
            field(&mut hasher, exclude.as_bytes());
        }
        let mut paths: Vec<&String> = self.files.keys().collect();
        paths.sort();
        hasher.update((paths.len() as u64).to_be_bytes());
        for path in paths {
            field(&mut hasher, path.as_bytes());
            let mut digests: Vec<(&str, &[u8])> = self
                .files
                .get(path)
                .map(|allowed| {
                    allowed
                        .iter()
                        .map(|(alg, digest)| (alg.name(), &**digest))
                        .collect()
                })
                .unwrap_or_default();
            digests.sort();
            hasher.update((digests.len() as u64).to_be_bytes());
            for (alg, digest) in digests {
                field(&mut hasher, alg.as_bytes());
                field(&mut hasher, digest);
            }
        }
        hex::encode(hasher.finalize())
    }

    /// What a judgement under this list rests on (see the field).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
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

    /// Adds one failure per entry not on the allowlist (and not excluded). The first entry of
    /// the boot's list, named `boot_aggregate`, passes when its digest is the aggregate of the
    /// boot PCRs in `aggregate`.
    pub fn check(&self, log: &ImaLog, aggregate: AggregateCheck<'_>, verdict: &mut Verdict) {
        if !self.enforce {
            return;
        }
        if let Some(error) = &self.excludes_error {
            verdict.notes.push(format!(
                "ima.excludes did not compile ({error}): no path was excluded"
            ));
        }
        for entry in &log.entries {
            if entry.is_violation() || self.excluded(&entry.path) || self.allows(entry) {
                continue;
            }
            if entry.index == 0 && entry.path == BOOT_AGGREGATE {
                if let Some(failure) = aggregate_failure(entry, aggregate, verdict) {
                    verdict.fail(failure);
                }
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

/// The first entry's boot aggregate against the boot PCRs: `None` when it holds (or, offline,
/// cannot be checked: noted).
fn aggregate_failure(
    entry: &ImaEntry,
    aggregate: AggregateCheck<'_>,
    verdict: &mut Verdict,
) -> Option<Failure> {
    let subject = format!("IMA entry 0 ({BOOT_AGGREGATE})");
    let measured = format!(
        "{}:{}",
        entry.digest_algorithm.to_ascii_lowercase(),
        hex::encode(&entry.file_digest)
    );
    let pcrs = match aggregate {
        AggregateCheck::Quoted(pcrs) => pcrs,
        AggregateCheck::NotChecked => {
            verdict.notes.push(
                "the boot aggregate (IMA entry 0) was not checked: no quoted PCRs 0-9 here".into(),
            );
            return None;
        }
    };
    let Some(algorithm) = known(&entry.digest_algorithm) else {
        return Some(
            Failure::new(
                Rule::ImaAllowlist,
                "the boot aggregate's algorithm is unknown: it cannot be checked",
            )
            .subject(subject)
            .values(measured, "a digest of the quoted PCRs 0-9"),
        );
    };
    match boot_aggregate(algorithm, pcrs) {
        Some(expected) if *expected == *entry.file_digest => None,
        Some(expected) => Some(
            Failure::new(
                Rule::ImaAllowlist,
                "the boot aggregate is not the digest of the quoted boot PCRs",
            )
            .subject(subject)
            .values(
                measured,
                format!("{}:{}", algorithm.name(), hex::encode(expected)),
            ),
        ),
        None => Some(
            Failure::new(
                Rule::ImaAllowlist,
                format!(
                    "the boot aggregate is in the {} bank, whose PCRs 0-9 were not quoted: it cannot be checked",
                    algorithm.name()
                ),
            )
            .subject(subject)
            .values(measured, "a digest of the quoted PCRs 0-9"),
        ),
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
        Allowlist::build(&good, &[]).check(&log(), AggregateCheck::NotChecked, &mut verdict);
        assert!(verdict.passed(), "{}", verdict.summary());

        let other = policy(
            "[ima.allowlist]\n\"/data\" = [\"sha1:0000000000000000000000000000000000000000\"]\n",
        );
        let mut verdict = Verdict::new();
        Allowlist::build(&other, &[]).check(&log(), AggregateCheck::NotChecked, &mut verdict);
        assert_eq!(verdict.failures().len(), 1);
        let failure = &verdict.failures()[0];
        assert_eq!(failure.subject, "IMA entry 1 (/data)");
        assert!(failure.measured.starts_with("sha256:96d7"));
        assert_eq!(
            failure.expected,
            "sha1:0000000000000000000000000000000000000000"
        );

        let mut verdict = Verdict::new();
        Allowlist::build(&policy(""), &[]).check(&log(), AggregateCheck::NotChecked, &mut verdict);
        assert_eq!(
            verdict.failures()[0].expected,
            "a file on the allowlist (no digest is listed for this path)"
        );

        let excluded = policy("[ima]\nexcludes = [\"^/data$\"]\n");
        let mut verdict = Verdict::new();
        Allowlist::build(&excluded, &[]).check(&log(), AggregateCheck::NotChecked, &mut verdict);
        assert!(verdict.passed());

        let off = policy("[ima]\nenforce_allowlist = false\n");
        let mut verdict = Verdict::new();
        Allowlist::build(&off, &[]).check(&log(), AggregateCheck::NotChecked, &mut verdict);
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
        list.check(&log(), AggregateCheck::NotChecked, &mut verdict);
        assert!(!verdict.passed());
        assert!(verdict.notes[0].contains("no path was excluded"));

        let mut verdict = Verdict::new();
        Allowlist::default().check(&log(), AggregateCheck::NotChecked, &mut verdict);
        assert!(!verdict.passed());
    }

    fn pcrs(bank: HashAlgorithm) -> PcrValues {
        let mut pcrs = PcrValues::default();
        for pcr in 0..=9u32 {
            pcrs.insert(bank, pcr, vec![u8::try_from(pcr).unwrap(); bank.size()]);
        }
        pcrs
    }

    fn aggregate_list(entries: &[(&str, Vec<u8>)]) -> ImaLog {
        let mut text = String::new();
        for (path, digest) in entries {
            text += &format!(
                "10 {} ima-ng sha256:{} {path}\n",
                "11".repeat(20),
                hex::encode(digest)
            );
        }
        parse_ascii(text.as_bytes(), 0).unwrap()
    }

    #[test]
    fn the_boot_aggregate_is_the_kernels_digest_of_pcrs_0_to_9() {
        let pcrs = pcrs(HashAlgorithm::Sha256);
        let mut concatenated = Vec::new();
        for pcr in 0..=9u8 {
            concatenated.extend_from_slice(&[pcr; 32]);
        }
        assert_eq!(
            boot_aggregate(HashAlgorithm::Sha256, &pcrs).unwrap(),
            HashAlgorithm::Sha256.hash(&concatenated)
        );
        // The SHA-1 aggregate stays over PCRs 0-7; an unquoted bank gives none.
        let sha1 = self::pcrs(HashAlgorithm::Sha1);
        let mut concatenated = Vec::new();
        for pcr in 0..=7u8 {
            concatenated.extend_from_slice(&[pcr; 20]);
        }
        assert_eq!(
            boot_aggregate(HashAlgorithm::Sha1, &sha1).unwrap(),
            HashAlgorithm::Sha1.hash(&concatenated)
        );
        assert!(boot_aggregate(HashAlgorithm::Sha384, &pcrs).is_none());
    }

    #[test]
    fn only_a_first_entry_matching_the_quoted_pcrs_is_exempt_as_boot_aggregate() {
        let quoted = pcrs(HashAlgorithm::Sha256);
        let good = boot_aggregate(HashAlgorithm::Sha256, &quoted).unwrap();
        let enforced = Allowlist::build(&policy(""), &[]);

        let mut verdict = Verdict::new();
        enforced.check(
            &aggregate_list(&[(BOOT_AGGREGATE, good.clone())]),
            AggregateCheck::Quoted(&quoted),
            &mut verdict,
        );
        assert!(verdict.passed(), "{}", verdict.summary());

        // A first entry whose digest is not the aggregate of the quoted PCRs.
        let mut verdict = Verdict::new();
        enforced.check(
            &aggregate_list(&[(BOOT_AGGREGATE, vec![7; 32])]),
            AggregateCheck::Quoted(&quoted),
            &mut verdict,
        );
        assert_eq!(verdict.failures().len(), 1, "{}", verdict.summary());
        let failure = &verdict.failures()[0];
        assert_eq!(failure.rule, Rule::ImaAllowlist);
        assert_eq!(failure.subject, "IMA entry 0 (boot_aggregate)");
        assert_eq!(failure.expected, format!("sha256:{}", hex::encode(&good)));

        // A later entry of that name is a file like any other, whatever its digest.
        for digest in [good.clone(), vec![9; 32]] {
            let mut verdict = Verdict::new();
            enforced.check(
                &aggregate_list(&[(BOOT_AGGREGATE, good.clone()), (BOOT_AGGREGATE, digest)]),
                AggregateCheck::Quoted(&quoted),
                &mut verdict,
            );
            assert_eq!(verdict.failures().len(), 1, "{}", verdict.summary());
            assert_eq!(
                verdict.failures()[0].subject,
                "IMA entry 1 (boot_aggregate)"
            );
            assert_eq!(verdict.failures()[0].detail, "path not on the allowlist");
        }

        // The aggregate's bank not quoted: it cannot be checked, and is not exempt.
        let mut verdict = Verdict::new();
        enforced.check(
            &aggregate_list(&[(BOOT_AGGREGATE, good.clone())]),
            AggregateCheck::Quoted(&PcrValues::default()),
            &mut verdict,
        );
        assert!(!verdict.passed());

        // Offline (no quote): exempt, and noted.
        let mut verdict = Verdict::new();
        enforced.check(
            &aggregate_list(&[(BOOT_AGGREGATE, vec![7; 32])]),
            AggregateCheck::NotChecked,
            &mut verdict,
        );
        assert!(verdict.passed());
        assert!(
            verdict.notes[0].contains("not checked"),
            "{:?}",
            verdict.notes
        );
    }

    #[test]
    fn the_fingerprint_follows_every_part_of_the_list() {
        let base = "[ima]\nenforce_allowlist = true\n[ima.allowlist]\n\"/bin/x\" = [\"sha256:0101010101010101010101010101010101010101010101010101010101010101\"]\n";
        let one = Allowlist::build(&policy(base), &[]);
        assert_eq!(
            one.fingerprint(),
            Allowlist::build(&policy(base), &[]).fingerprint()
        );
        assert_eq!(one.fingerprint().len(), 64);
        let without = Allowlist::build(&policy("[ima]\nenforce_allowlist = true\n"), &[]);
        assert_ne!(one.fingerprint(), without.fingerprint());
        let off = Allowlist::build(&policy(&base.replace("true", "false")), &[]);
        assert_ne!(one.fingerprint(), off.fingerprint());
        let other_digest = Allowlist::build(&policy(&base.replace("0101", "0202")), &[]);
        assert_ne!(one.fingerprint(), other_digest.fingerprint());
        let excluded = Allowlist::build(
            &policy(&base.replace(
                "enforce_allowlist = true",
                "enforce_allowlist = true\nexcludes = [\"^/tmp\"]",
            )),
            &[],
        );
        assert_ne!(one.fingerprint(), excluded.fingerprint());
    }
}
