//! The verifier replicas an agent may attach to (`verifier_url`, or `verifier_urls` for several),
//! checked once when the configuration is read, and the order the agent tries them in.
//!
//! Replicas share the fleet through leases (docs/DESIGN.md, "Scale"): any of them can enroll a
//! device, and the one holding its lease attests it; another answers `UNAVAILABLE`. So the agent
//! does not need to know which replica is which: it starts with the first, moves to the next
//! whenever the current one fails it, and backs off only once the whole list has failed in a row
//! ([`Rotation`]).

use std::net::SocketAddr;

use tonic::transport::Uri;

/// Most replicas a configuration may list: a deployment runs a handful, and a longer list would
/// make a full round (and so the first backoff) long in coming.
pub const MAX_REPLICAS: usize = 16;

/// One verifier replica: its gRPC address and the name its TLS certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    url: String,
    server_name: String,
}

impl Replica {
    /// `https://host:port`, as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `verifier_name` when configured, otherwise the URL's host.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }
}

/// The configured replicas: at least one, at most [`MAX_REPLICAS`], all `https://`, no address
/// twice. Only [`Replicas::parse`] and [`Replicas::at_address`] make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicas {
    list: Vec<Replica>,
    /// The first replica, kept apart so that the list can never be empty.
    first: Replica,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    #[error("verifier_urls is empty")]
    Empty,
    #[error("verifier_urls lists {count} addresses; at most {MAX_REPLICAS}")]
    TooMany { count: usize },
    #[error("verifier address {url:?}: {detail}")]
    Url { url: String, detail: String },
    #[error("verifier address {url:?} is listed twice")]
    Duplicate { url: String },
}

impl Replicas {
    /// Checks `urls` and gives each replica its TLS name: `verifier_name` for all of them when
    /// set (one certificate name shared by the replicas), otherwise each URL's own host.
    pub fn parse(urls: &[String], verifier_name: Option<&str>) -> Result<Self, ReplicaError> {
        if urls.len() > MAX_REPLICAS {
            return Err(ReplicaError::TooMany { count: urls.len() });
        }
        let mut list = Vec::with_capacity(urls.len());
        // (host, port): `https://a` and `https://A:443/` are the same replica.
        let mut seen: Vec<(String, u16)> = Vec::with_capacity(urls.len());
        for url in urls {
            let (host, port) = host_and_port(url)?;
            let key = (host.to_ascii_lowercase(), port);
            if seen.contains(&key) {
                return Err(ReplicaError::Duplicate { url: url.clone() });
            }
            seen.push(key);
            list.push(Replica {
                url: url.clone(),
                server_name: verifier_name.map_or(host, str::to_string),
            });
        }
        let first = list.first().cloned().ok_or(ReplicaError::Empty)?;
        Ok(Self { list, first })
    }

    /// One replica at a socket address (always a valid URL), with the given TLS name: for
    /// programs that start a verifier themselves, such as the tests.
    pub fn at_address(address: SocketAddr, server_name: &str) -> Self {
        let first = Replica {
            url: format!("https://{address}"),
            server_name: server_name.to_string(),
        };
        Self {
            list: vec![first.clone()],
            first,
        }
    }

    /// How many replicas (at least one).
    pub fn count(&self) -> usize {
        self.list.len()
    }

    /// The replica at `position` in the list, counting round: position `count()` is the first
    /// again.
    pub fn at(&self, position: usize) -> &Replica {
        self.list
            .get(position % self.count().max(1))
            .unwrap_or(&self.first)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Replica> {
        self.list.iter()
    }
}

/// The host (without IPv6 brackets) and port (443 by default) of an `https://` URL.
fn host_and_port(url: &str) -> Result<(String, u16), ReplicaError> {
    let invalid = |detail: &str| ReplicaError::Url {
        url: url.to_string(),
        detail: detail.to_string(),
    };
    let uri: Uri = url.parse().map_err(|e| ReplicaError::Url {
        url: url.to_string(),
        detail: format!("{e}"),
    })?;
    // The attestation channel is TLS or nothing (crate::bound_channel refuses the rest too).
    if uri.scheme_str() != Some("https") {
        return Err(invalid("must be https://"));
    }
    let host = uri
        .host()
        .map(|host| host.trim_start_matches('[').trim_end_matches(']'))
        .filter(|host| !host.is_empty())
        .ok_or_else(|| invalid("no host"))?;
    Ok((host.to_string(), uri.port_u16().unwrap_or(443)))
}

/// What to do after the current replica failed: which one to try next, and whether to wait the
/// backoff first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextAttempt {
    /// Position in [`Replicas`].
    pub replica: usize,
    /// True once every replica has failed in a row: the whole round failed, so wait the
    /// reconnection backoff. False: try the next one at once.
    pub back_off: bool,
}

/// The order the agent tries the replicas in: round robin from the first, with a backoff once
/// per full round of failures. With one replica every failure backs off, as the agent always
/// did; with two, a dead first replica costs one quick retry on the second, not a backoff.
#[derive(Debug, Clone)]
pub struct Rotation {
    count: usize,
    current: usize,
    /// Failures since the last progress; a backoff is due when they make a round.
    failures_in_round: usize,
}

impl Rotation {
    /// Starts at the first of `count` replicas.
    pub fn new(count: usize) -> Self {
        Self {
            count: count.max(1),
            current: 0,
            failures_in_round: 0,
        }
    }

    /// The replica to try now.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The current replica failed: its connection, its stream (ended or broken), or its answer
    /// (`UNAVAILABLE`: another replica holds the device). Moves to the next one.
    pub fn failed(&mut self) -> NextAttempt {
        self.current = (self.current + 1) % self.count;
        self.failures_in_round += 1;
        let back_off = self.failures_in_round >= self.count;
        if back_off {
            self.failures_in_round = 0;
        }
        NextAttempt {
            replica: self.current,
            back_off,
        }
    }

    /// The current replica did its work (answered a challenge, enrolled the device): the next
    /// failure starts a new round.
    pub fn progressed(&mut self) {
        self.failures_in_round = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|url| url.to_string()).collect()
    }

    #[test]
    fn each_replica_gets_the_shared_name_or_its_own_host() {
        let list = urls(&[
            "https://a.example:8443",
            "https://[::1]:8443",
            "https://10.0.0.2",
        ]);
        let own = Replicas::parse(&list, None).unwrap();
        let names: Vec<&str> = own.iter().map(Replica::server_name).collect();
        assert_eq!(names, ["a.example", "::1", "10.0.0.2"]);
        let shared = Replicas::parse(&list, Some("verifier.example")).unwrap();
        assert!(shared.iter().all(|r| r.server_name() == "verifier.example"));
        assert_eq!(shared.count(), 3);
        assert_eq!(shared.at(1).url(), "https://[::1]:8443");
        assert_eq!(
            shared.at(3).url(),
            "https://a.example:8443",
            "counting round"
        );
    }

    #[test]
    fn bad_lists_are_refused() {
        assert_eq!(Replicas::parse(&[], None), Err(ReplicaError::Empty));
        let seventeen: Vec<String> = (0..17).map(|i| format!("https://v{i}:8443")).collect();
        assert_eq!(
            Replicas::parse(&seventeen, None),
            Err(ReplicaError::TooMany { count: 17 })
        );
        assert_eq!(Replicas::parse(&seventeen[..16], None).unwrap().count(), 16);
        for bad in ["http://a:8443", "a:8443", "https://", "", "https://a b"] {
            assert!(
                matches!(
                    Replicas::parse(&urls(&[bad]), None),
                    Err(ReplicaError::Url { .. })
                ),
                "{bad:?}"
            );
        }
        // The same replica spelled twice.
        for twice in [
            ["https://a:8443", "https://a:8443"],
            ["https://a", "https://A:443/"],
        ] {
            assert!(matches!(
                Replicas::parse(&urls(&twice), None),
                Err(ReplicaError::Duplicate { .. })
            ));
        }
        assert!(Replicas::parse(&urls(&["https://a:8443", "https://a:8444"]), None).is_ok());
    }

    #[test]
    fn a_socket_address_is_one_replica() {
        let replicas = Replicas::at_address("127.0.0.1:9443".parse().unwrap(), "localhost");
        assert_eq!(replicas.count(), 1);
        assert_eq!(replicas.at(0).url(), "https://127.0.0.1:9443");
        assert_eq!(replicas.at(5).server_name(), "localhost");
    }

    fn attempts(rotation: &mut Rotation, failures: usize) -> Vec<(usize, bool)> {
        (0..failures)
            .map(|_| {
                let next = rotation.failed();
                (next.replica, next.back_off)
            })
            .collect()
    }

    #[test]
    fn one_replica_backs_off_at_every_failure() {
        let mut rotation = Rotation::new(1);
        assert_eq!(rotation.current(), 0);
        assert_eq!(
            attempts(&mut rotation, 3),
            [(0, true), (0, true), (0, true)]
        );
        rotation.progressed();
        assert_eq!(attempts(&mut rotation, 1), [(0, true)]);
    }

    #[test]
    fn several_replicas_back_off_once_per_round() {
        let mut rotation = Rotation::new(3);
        assert_eq!(rotation.current(), 0);
        assert_eq!(
            attempts(&mut rotation, 7),
            [
                (1, false),
                (2, false),
                (0, true),
                (1, false),
                (2, false),
                (0, true),
                (1, false)
            ]
        );
        assert_eq!(rotation.current(), 1);
    }

    #[test]
    fn progress_starts_a_new_round_from_where_it_is() {
        let mut rotation = Rotation::new(2);
        // The first replica is dead: one quick retry on the second, which then works.
        assert_eq!(attempts(&mut rotation, 1), [(1, false)]);
        rotation.progressed();
        // Its stream ends later: back to the first at once, then a backoff if that fails too.
        assert_eq!(
            attempts(&mut rotation, 3),
            [(0, false), (1, true), (0, false)]
        );
        // Progress in the middle of a round forgets the failures before it.
        rotation.progressed();
        assert_eq!(attempts(&mut rotation, 2), [(1, false), (0, true)]);
    }
}
