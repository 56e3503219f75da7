//! The trees of one open sled database, and what is read straight off them: the spent-nonce
//! total and the audit chain's head (both checked against the seal).

use std::path::Path;

use crate::audit::AuditLine;
use crate::storage::spent_nonces::SpentNonces;

/// Every tree, from one open of the database.
#[derive(Debug)]
pub(super) struct Trees {
    pub(super) db: sled::Db,
    pub(super) meta: sled::Tree,
    pub(super) devices: sled::Tree,
    pub(super) hostnames: sled::Tree,
    pub(super) events: sled::Tree,
    pub(super) nonces: sled::Tree,
    pub(super) spent_nonces: sled::Tree,
    pub(super) appraisals: sled::Tree,
    pub(super) checkpoints: sled::Tree,
    pub(super) trust_lists: sled::Tree,
    pub(super) manifests: sled::Tree,
    pub(super) policies: sled::Tree,
    pub(super) pending_imports: sled::Tree,
    pub(super) webhook_outbox: sled::Tree,
}

/// Tree names, in the order exports list them.
pub(super) const TREE_NAMES: [&str; 14] = [
    "meta",
    "devices",
    "hostnames",
    "events",
    "nonces",
    "spent_nonces",
    "appraisals",
    "checkpoints",
    "trust_lists",
    "manifests",
    "policies",
    "pending_imports",
    "webhook_outbox",
    // sled's default tree: never written by the verifier, exported for completeness.
    "__sled__default",
];

/// sled's page cache. The hot set is a few records per device (its record, appraisal state,
/// latest kept result, spent nonces); what misses is read back from the file through
/// the kernel's page cache. Load generator, 3,000 appraisals/s: 237 us of verifier CPU per
/// appraisal at 64 MiB, 252 and 337 us in two runs at 16 MiB; at 10,000 devices each 16 MiB is
/// 1.6 KiB per device of resident memory. Those 16 MiB runs paid for spent nonces stored one
/// key each, every insert on a random page; with spent nonces per device (layout v3) the hot set
/// is two small records per device, and 16 MiB measured 159 us per appraisal at 5,000/s against
/// 154 us at 24 MiB (within the run-to-run spread).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

impl Trees {
    pub(super) fn open(path: &Path) -> Result<Self, sled::Error> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    pub(super) fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Self, sled::Error> {
        // Every write that must last is flushed explicitly (per call, or by the group commit
        // before a verdict), so sled's own timer flush only added work. HighThroughput: less
        // compaction per write (the load generator measured 10% less verifier CPU per
        // appraisal). The page cache is bounded: sled's default (1 GiB) let the verifier's
        // memory grow with every appraisal it stored.
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            .open()?;
        Ok(Self {
            meta: db.open_tree("meta")?,
            devices: db.open_tree("devices")?,
            hostnames: db.open_tree("hostnames")?,
            events: db.open_tree("events")?,
            nonces: db.open_tree("nonces")?,
            spent_nonces: db.open_tree("spent_nonces")?,
            appraisals: db.open_tree("appraisals")?,
            checkpoints: db.open_tree("checkpoints")?,
            trust_lists: db.open_tree("trust_lists")?,
            manifests: db.open_tree("manifests")?,
            policies: db.open_tree("policies")?,
            pending_imports: db.open_tree("pending_imports")?,
            webhook_outbox: db.open_tree("webhook_outbox")?,
            db,
        })
    }

    pub(super) fn by_name(&self, name: &str) -> Option<&sled::Tree> {
        Some(match name {
            "meta" => &self.meta,
            "devices" => &self.devices,
            "hostnames" => &self.hostnames,
            "events" => &self.events,
            "nonces" => &self.nonces,
            "spent_nonces" => &self.spent_nonces,
            "appraisals" => &self.appraisals,
            "checkpoints" => &self.checkpoints,
            "trust_lists" => &self.trust_lists,
            "manifests" => &self.manifests,
            "policies" => &self.policies,
            "pending_imports" => &self.pending_imports,
            "webhook_outbox" => &self.webhook_outbox,
            "__sled__default" => &self.db,
            _ => return None,
        })
    }

    /// Nonces spent, ever: one key each in the earlier layouts' `nonces` tree, plus every
    /// device's count. The seal holds the database to it (neither ever goes down).
    pub(super) fn nonces_spent(&self) -> Result<u64, String> {
        let mut total = self.nonces.len() as u64;
        for item in self.spent_nonces.iter() {
            let (key, value) = item.map_err(|e| e.to_string())?;
            let record = SpentNonces::decode(Some(&value)).map_err(|e| {
                format!(
                    "the spent nonces of {} are unreadable: {e}",
                    String::from_utf8_lossy(&key)
                )
            })?;
            total = total.saturating_add(record.count);
        }
        Ok(total)
    }

    /// The chain head as stored: last sequence and its hash.
    pub(super) fn head(&self) -> Result<(u64, [u8; 32]), String> {
        match self.events.last().map_err(|e| e.to_string())? {
            None => Ok((0, [0u8; 32])),
            Some((_, value)) => match serde_json::from_slice::<AuditLine>(&value) {
                Ok(AuditLine::Record { sequence, hash, .. }) => {
                    let hash = hex::decode(&hash)
                        .ok()
                        .and_then(|h| h.try_into().ok())
                        .ok_or("the last audit record's hash is corrupt")?;
                    Ok((sequence, hash))
                }
                _ => Err("the last audit record is corrupt".into()),
            },
        }
    }
}
