//! The Enrollment gRPC service: converts messages into domain types once, calls the enroller, and
//! decides what an (unauthenticated) agent learns: only "refused", never why. The reason is in the
//! verifier's log and event record.
//!
//! Anyone who reaches the port may call it, so it sits behind [`SourceRateLimit`]: a token
//! bucket per source address, checked on the request's headers before its body is decoded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use trustchain_proto::v1::{self, enrollment_server::Enrollment};

use crate::device::Facts;
use crate::enrollment::ek_chain::{MAX_CERTIFICATE_SIZE, MAX_SUPPLIED_INTERMEDIATES};
use crate::enrollment::enroller::{EnrollError, EnrollmentRequest};
use crate::service::Service;

/// Token buckets per source address (IPv6: per /64) for enrollment calls.
#[derive(Debug)]
pub struct SourceRateLimit {
    burst: f64,
    per_second: f64,
    max_sources: usize,
    state: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    by_source: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, burst: f64, per_second: f64) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.updated = now;
    }
}

/// How often a full table may be swept for forgotten sources: a sweep walks the whole table, and
/// a flood from many addresses must not make every call pay for one.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl SourceRateLimit {
    /// `burst` calls at once, then `per_second`; at most `max_sources` sources remembered.
    pub fn new(burst: u32, per_second: f64, max_sources: usize) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: per_second.max(0.0),
            max_sources: max_sources.max(1),
            state: Mutex::new(Buckets::default()),
        }
    }

    /// Takes one token for `source`'s bucket; false when it is empty. When the table is full of
    /// sources still in debt, new sources are refused too (fail closed): the flood then costs
    /// honest newcomers a retry, never the verifier its memory.
    pub fn allow(&self, source: IpAddr, now: Instant) -> bool {
        let key = super::connection::source_key(source);
        let mut state = self
            .state
            .lock()
            // Buckets only: a panicking holder cannot break an invariant.
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (burst, per_second) = (self.burst, self.per_second);
        if !state.by_source.contains_key(&key) && state.by_source.len() >= self.max_sources {
            let may_sweep = state
                .last_sweep
                .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY);
            if may_sweep {
                state.last_sweep = Some(now);
                // A bucket that has refilled holds no memory of the source worth keeping.
                state.by_source.retain(|_, bucket| {
                    bucket.refill(now, burst, per_second);
                    bucket.tokens < burst
                });
            }
            if state.by_source.len() >= self.max_sources {
                return false;
            }
        }
        let bucket = state.by_source.entry(key).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        bucket.refill(now, burst, per_second);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The interceptor in front of the Enrollment service: runs on the headers, so a refused
    /// call is never decoded, never reaches the enroller and writes nothing.
    pub fn admit(&self, request: Request<()>) -> Result<Request<()>, Status> {
        // Connections always come from TCP here; without an address there is nothing to count
        // against, so the call is refused rather than let through unlimited.
        let Some(peer) = super::connection::EdgeInfo::of_request(&request).and_then(|c| c.remote())
        else {
            return Err(Status::resource_exhausted("try again later"));
        };
        if self.allow(peer.ip(), Instant::now()) {
            Ok(request)
        } else {
            tracing::debug!(%peer, "enrollment call refused: source over its rate");
            Err(Status::resource_exhausted("try again later"))
        }
    }
}

#[derive(Debug)]
pub struct EnrollmentApi {
    service: Arc<Service>,
}

impl EnrollmentApi {
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EnrollError> + Send + 'static,
) -> Result<T, Status> {
    // Chain validation, RSA-OAEP and certificate signing are CPU work; keep them off the reactor.
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| super::status::enrollment(&e)),
        Err(error) => Err(super::status::internal("enrollment", error)),
    }
}

#[tonic::async_trait]
impl Enrollment for EnrollmentApi {
    async fn begin(
        &self,
        request: Request<v1::EnrollRequest>,
    ) -> Result<Response<v1::ActivationChallenge>, Status> {
        let message = request.into_inner();
        if message.ek_certificate.len() > MAX_CERTIFICATE_SIZE
            || message.ek_intermediates.len() > MAX_SUPPLIED_INTERMEDIATES
        {
            return Err(Status::invalid_argument("request too large"));
        }
        let facts = message.facts.unwrap_or_default();
        let domain = EnrollmentRequest {
            ek_certificate: message.ek_certificate,
            ek_intermediates: message.ek_intermediates,
            ek_public: message.ek_public,
            ak_public: message.ak_public,
            facts: Facts {
                hostname: facts.hostname,
                model: facts.model,
                firmware_version: facts.firmware_version,
                device_class: facts.device_class,
                agent_version: facts.agent_version,
            },
        };
        let service = self.service.clone();
        let challenge = blocking(move || service.enroller().begin(domain))
            .await
            .inspect_err(|status| {
                if status.code() == tonic::Code::PermissionDenied {
                    self.service.metrics().enrollment(false);
                }
            })?;
        Ok(Response::new(v1::ActivationChallenge {
            attempt_id: challenge.attempt_id.to_vec(),
            credential_blob: challenge.credential_blob,
            encrypted_secret: challenge.encrypted_secret,
            expires_in_seconds: u32::try_from(challenge.expires_in.as_secs()).unwrap_or(u32::MAX),
            device_id: challenge.device_id,
        }))
    }

    async fn complete(
        &self,
        request: Request<v1::ActivationResponse>,
    ) -> Result<Response<v1::EnrollmentResult>, Status> {
        let message = request.into_inner();
        let service = self.service.clone();
        let counted = self.service.clone();
        let enrolled = blocking(move || {
            service
                .enroller()
                .complete(&message.attempt_id, &message.secret, &message.client_csr)
        })
        .await
        .inspect_err(|status| {
            if status.code() == tonic::Code::PermissionDenied {
                counted.metrics().enrollment(false);
            }
        })?;
        counted.metrics().enrollment(true);
        Ok(Response::new(v1::EnrollmentResult {
            device_id: enrolled.device_id,
            ak_certificate: enrolled.ak_certificate,
            client_certificate: enrolled.client_certificate,
            ca_chain: enrolled.ca_chain,
            ak_rotated: enrolled.ak_rotated,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_gets_its_burst_then_its_rate() {
        let limit = SourceRateLimit::new(3, 2.0, 100);
        let start = Instant::now();
        let flood: IpAddr = "198.51.100.1".parse().unwrap();
        let honest: IpAddr = "198.51.100.2".parse().unwrap();
        let allowed = (0..100).filter(|_| limit.allow(flood, start)).count();
        assert_eq!(allowed, 3);
        assert!(limit.allow(honest, start), "another source is not affected");
        assert!(!limit.allow(flood, start + Duration::from_millis(100)));
        assert!(limit.allow(flood, start + Duration::from_millis(600)));
        assert!(!limit.allow(flood, start + Duration::from_millis(600)));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_sources_that_refilled() {
        let limit = SourceRateLimit::new(1, 1.0, 2);
        let start = Instant::now();
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        let c: IpAddr = "203.0.113.3".parse().unwrap();
        assert!(limit.allow(a, start));
        assert!(limit.allow(b, start));
        // Full of sources in debt: a new one is refused, not remembered.
        assert!(!limit.allow(c, start));
        // Once a and b have refilled, the sweep forgets them and c gets in.
        assert!(limit.allow(c, start + Duration::from_secs(2)));
    }
}
