//! SIEM export: every state change reaches a real loopback syslog receiver over TLS (RFC 5425
//! framing, RFC 5424 messages, parsed back here) and the ECS JSON-lines file, once each and in
//! audit order, across a receiver that goes down and a verifier restart; a receiver whose
//! certificate comes from another CA receives nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncReadExt;
use trustchain_ca::Authority;
use trustchain_proto::v1::DeviceRequest;
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_swtpm::TestMakers;
use trustchain_tests::attest::good_and_bad;
use trustchain_tests::deployment::WAIT;
use trustchain_tests::{TestDevice, TestVerifier};
use trustchain_verifier::device::DeviceState;
use trustchain_verifier::service::StateChange;
use trustchain_verifier::siem::{EcsConfig, SyslogConfig};

/// A receiver's PKI: its own CA, the receiver's TLS identity from it, the CA file that trusts
/// it, and a client certificate (chain, key files) from the same CA.
struct ReceiverPki {
    tls: Arc<rustls::ServerConfig>,
    ca_file: PathBuf,
    client: (PathBuf, PathBuf),
}

/// `require_client`: the receiver asks for a client certificate from its own CA.
fn receiver_pki(dir: &Path, name: &str, require_client: bool) -> ReceiverPki {
    let ca = Authority::create(&dir.join(name), name).unwrap();
    let server = ca
        .issue_verifier(&["localhost".into()], &["127.0.0.1".parse().unwrap()])
        .unwrap();
    let chain_pem = format!("{}{}", server.pem, ca.issuing_pem());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.unwrap().as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca.root_pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let tls = Arc::new(builder.with_single_cert(chain, key).unwrap());
    let ca_file = dir.join(format!("{name}.pem"));
    std::fs::write(&ca_file, ca.root_pem()).unwrap();
    // The verifier's client certificate for the receiver: the webhook tests' helper writes one.
    let client_files =
        trustchain_tests::webhook_receiver::write_client_identity(&ca, &dir.join(name)).unwrap();
    ReceiverPki {
        tls,
        ca_file,
        client: client_files,
    }
}

/// What a receiver saw, kept across its restarts.
#[derive(Default)]
struct Seen {
    messages: Mutex<Vec<String>>,
    failed_handshakes: AtomicUsize,
}

/// A syslog-over-TLS receiver on loopback: reads RFC 5425 octet-counted frames.
struct Receiver {
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(port: u16, tls: Arc<rustls::ServerConfig>, seen: Arc<Seen>) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                connections.spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(stream) => read_frames(stream, &seen).await,
                        Err(_) => {
                            seen.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        Self { task }
    }

    /// Stops listening and drops every connection (as a receiver restart does).
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// RFC 5425 section 4.3: `MSG-LEN SP SYSLOG-MSG`, MSG-LEN a decimal without leading zeros.
async fn read_frames(
    mut stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    seen: &Seen,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(space) = buffer.iter().position(|&b| b == b' ') {
            let digits = std::str::from_utf8(&buffer[..space]).unwrap();
            assert!(
                !digits.is_empty() && !digits.starts_with('0') && digits.len() <= 5,
                "bad MSG-LEN {digits:?}"
            );
            let length: usize = digits.parse().unwrap();
            if buffer.len() < space + 1 + length {
                break;
            }
            let message =
                String::from_utf8(buffer[space + 1..space + 1 + length].to_vec()).unwrap();
            seen.messages.lock().unwrap().push(message);
            buffer.drain(..space + 1 + length);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}

/// An RFC 5424 message, parsed: header fields, the SD elements (values unescaped), MSG.
#[derive(Debug)]
struct Message {
    pri: u16,
    header: Vec<String>,
    elements: Vec<(String, Vec<(String, String)>)>,
    msg: String,
}

impl Message {
    fn param(&self, name: &str) -> &str {
        let (_, params) = &self.elements[0];
        &params.iter().find(|(n, _)| n == name).unwrap().1
    }
}

fn parse(message: &str) -> Message {
    let rest = message.strip_prefix('<').unwrap();
    let (pri, rest) = rest.split_once('>').unwrap();
    let mut fields = rest.splitn(7, ' ');
    let header: Vec<String> = fields.by_ref().take(6).map(String::from).collect();
    assert_eq!(header[0], "1", "VERSION");
    let mut chars = fields.next().unwrap().chars().peekable();
    let mut elements = Vec::new();
    while chars.peek() == Some(&'[') {
        chars.next();
        let id: String = chars.by_ref().take_while(|&c| c != ' ').collect();
        let mut params = Vec::new();
        loop {
            let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'));
            let mut value = String::new();
            loop {
                match chars.next().unwrap() {
                    '\\' => value.push(chars.next().unwrap()),
                    '"' => break,
                    c => {
                        assert_ne!(c, ']', "an unescaped ] in a value");
                        value.push(c)
                    }
                }
            }
            params.push((name, value));
            match chars.next() {
                Some(' ') => continue,
                Some(']') => break,
                other => panic!("unexpected {other:?} after a value"),
            }
        }
        elements.push((id, params));
    }
    assert_eq!(chars.next(), Some(' '));
    Message {
        pri: pri.parse().unwrap(),
        header,
        elements,
        msg: chars.collect(),
    }
}

async fn wait_for_messages(seen: &Seen, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.messages.lock().unwrap().len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {count} messages arrived",
            seen.messages.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn syslog_config(port: u16, ca_file: PathBuf) -> SyslogConfig {
    SyslogConfig {
        address: format!("127.0.0.1:{port}"),
        server_name: "localhost".into(),
        ca_file,
        client_cert: None,
        client_key: None,
        app_name: "trustchain-test".into(),
        facility: 13,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn check_syslog(messages: &[String], expected: &[StateChange]) {
    let parsed: Vec<Message> = messages.iter().map(|m| parse(m)).collect();
    assert_eq!(
        parsed
            .iter()
            .map(|m| m.param("sequence").parse::<u64>().unwrap())
            .collect::<Vec<_>>(),
        expected.iter().map(|c| c.sequence).collect::<Vec<_>>(),
        "every state change once, in audit order"
    );
    for (message, change) in parsed.iter().zip(expected) {
        assert_eq!(message.elements.len(), 1, "{message:?}");
        assert_eq!(message.elements[0].0, "trustchain@32473");
        assert_eq!(message.param("device"), change.device_id);
        assert_eq!(message.param("previous"), change.previous.name());
        assert_eq!(message.param("current"), change.current.name());
        assert_eq!(message.header[3], "trustchain-test", "APP-NAME");
        assert_eq!(message.pri / 8, 13, "facility");
        let alert = matches!(
            change.current,
            DeviceState::Untrusted | DeviceState::Decommissioned
        );
        assert_eq!(
            message.header[5],
            if alert { "alert" } else { "state-change" }
        );
        assert!(message.msg.contains(&change.device_id), "{message:?}");
        assert!(message.header[1].ends_with('Z'), "TIMESTAMP in UTC");
    }
}

fn check_ecs(path: &Path, expected: &[StateChange]) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["trustchain"]["sequence"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        expected.iter().map(|c| c.sequence).collect::<Vec<_>>()
    );
    for (line, change) in lines.iter().zip(expected) {
        assert_eq!(line["event"]["sequence"], change.sequence);
        assert_eq!(line["event"]["action"], "device-state-changed");
        assert_eq!(line["event"]["category"][0], "host");
        assert_eq!(line["event"]["type"][0], "change");
        assert_eq!(line["host"]["id"], change.device_id);
        assert_eq!(line["trustchain"]["device_id"], change.device_id);
        assert_eq!(line["trustchain"]["previous_state"], change.previous.name());
        assert_eq!(line["trustchain"]["current_state"], change.current.name());
        assert_eq!(line["event"]["reason"], change.reason);
        assert_eq!(line["observer"]["product"], "trustchain-verifier");
        assert!(line["@timestamp"].as_str().unwrap().ends_with('Z'));
        let (kind, outcome) = match change.current {
            DeviceState::Trusted => ("event", "success"),
            DeviceState::Untrusted => ("alert", "failure"),
            DeviceState::Decommissioned => ("alert", "unknown"),
            _ => ("event", "unknown"),
        };
        assert_eq!(line["event"]["kind"], kind, "{line}");
        assert_eq!(line["event"]["outcome"], outcome, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_state_change_reaches_syslog_and_ecs_once_in_order_across_restarts() {
    let pki = tempfile::tempdir().unwrap();
    // The receiver asks for a client certificate: the verifier presents the configured one.
    let ReceiverPki {
        tls,
        ca_file,
        client,
    } = receiver_pki(pki.path(), "syslog-ca", true);
    let port = free_port();
    let seen = Arc::new(Seen::default());
    let receiver = Receiver::start(port, tls.clone(), seen.clone()).await;
    let ecs_path = pki.path().join("trustchain-ecs.jsonl");
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start_with(&makers.trusted, |c| {
        c.attestation.default_interval_seconds = 2;
        c.siem.syslog = Some(SyslogConfig {
            client_cert: Some(client.0.clone()),
            client_key: Some(client.1.clone()),
            ..syslog_config(port, ca_file)
        });
        c.siem.ecs = Some(EcsConfig {
            path: ecs_path.clone(),
        });
    })
    .await
    .unwrap();
    let (mut good, mut bad) = good_and_bad(&verifier, &makers.trusted).await.unwrap();
    wait_for_messages(&seen, 2).await;

    // The receiver goes down (its connection with it) while a device is tampered with: the
    // alert waits for it, then arrives.
    receiver.stop().await;
    bad.swtpm.extend_unlisted(4, b"implant").unwrap();
    verifier
        .wait_for_state(&bad.device_id(), DeviceState::Untrusted, WAIT)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(seen.messages.lock().unwrap().len(), 2);
    let receiver = Receiver::start(port, tls.clone(), seen.clone()).await;
    wait_for_messages(&seen, 3).await;

    // The verifier restarts: the trusted device goes back to enrolled in the new process before
    // the export starts (delivered from the audit log), then an operator decommissions it.
    good.stop_agent();
    bad.stop_agent();
    let verifier = verifier.restart().await.unwrap();
    let mut admin = AdminClient::new(verifier.operator_channel().await.unwrap());
    admin
        .decommission_device(DeviceRequest {
            device_id: good.device_id(),
            comment: "end of life".into(),
        })
        .await
        .unwrap();
    let expected = verifier.service.state_changes_since(1).unwrap();
    assert_eq!(
        expected.iter().map(|c| c.current).collect::<Vec<_>>(),
        vec![
            DeviceState::Trusted,
            DeviceState::Trusted,
            DeviceState::Untrusted,
            DeviceState::Enrolled,
            DeviceState::Decommissioned
        ],
        "{expected:?}"
    );
    wait_for_messages(&seen, expected.len()).await;
    // Nothing more comes: no change is sent twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    check_syslog(&seen.messages.lock().unwrap(), &expected);
    check_ecs(&ecs_path, &expected);
    assert_eq!(
        verifier.service.storage().export_cursor("syslog").unwrap(),
        expected.last().unwrap().sequence
    );
    assert_eq!(seen.failed_handshakes.load(Ordering::SeqCst), 0);
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_with_a_certificate_from_another_ca_receives_nothing() {
    let pki = tempfile::tempdir().unwrap();
    let impostor = receiver_pki(pki.path(), "impostor-ca", false);
    let ca_file = receiver_pki(pki.path(), "syslog-ca", false).ca_file;
    let port = free_port();
    let seen = Arc::new(Seen::default());
    let receiver = Receiver::start(port, impostor.tls, seen.clone()).await;
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start_with(&makers.trusted, |c| {
        c.attestation.default_interval_seconds = 2;
        c.siem.syslog = Some(syslog_config(port, ca_file));
    })
    .await
    .unwrap();
    let _device = TestDevice::trusted(&verifier, &makers.trusted, "gw-impostor", &[])
        .await
        .unwrap();
    // The export tries (and keeps retrying) but the handshake fails every time.
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.failed_handshakes.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the export never tried"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.messages.lock().unwrap().is_empty());
    assert_eq!(
        verifier.service.storage().export_cursor("syslog").unwrap(),
        0,
        "nothing counts as delivered"
    );
    receiver.stop().await;
}
