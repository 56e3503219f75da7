//! The read-only web dashboard (issue 18, items 1 and 2), in a real browser against a real
//! verifier: headless Chromium (Debian's `chromium`) drives the dashboard of an in-process
//! verifier (real TLS, real sled, real CA) whose devices are swtpm TPMs run by the real agent.
//! The fleet lists them as trusted; a tamper (a program the IMA allowlist never saw, its file
//! name carrying markup) turns the device's row untrusted with its reason without a reload, and
//! the device page names the failed rule with the file name shown as text. A viewer
//! certificate reaches no write action: the dashboard has only GET routes and no form, the
//! admin API refuses it, and certificates without the viewer role (or revoked) see nothing.
//!
//! The browser reaches the dashboard through `trustchain_tests::dashboard::operator_proxy`,
//! which presents the viewer's client certificate (headless Chromium cannot be given one).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::time::Duration;

use tonic::Code;
use trustchain_ca::OperatorRole;
use trustchain_proto::v1::{DeviceRequest, SignedDocument};
use trustchain_swtpm::{BootProfile, TestMakers};
use trustchain_tests::TestVerifier;
use trustchain_tests::dashboard::{Browser, DashboardClient, operator_proxy};
use trustchain_tests::deployment::{
    Deployment, acme_components, boot_applications, boot_manifest, gateway_policy,
};
use trustchain_verifier::device::DeviceState;
use trustchain_verifier::service::StateChange;

/// The file an attacker runs: its name is markup, which the page must show as text.
const IMPLANT: &str = "/tmp/<script>window.__xss=1</script><img/src/onerror=window.__xss=2>";

/// Where the screenshots go: `docs/` when `TRUSTCHAIN_UPDATE_SCREENSHOTS` is set (how the
/// committed ones were made), else a temporary directory.
fn screenshot_dir(temp: &tempfile::TempDir) -> PathBuf {
    if std::env::var_os("TRUSTCHAIN_UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
    } else {
        temp.path().to_path_buf()
    }
}

fn viewer(verifier: &TestVerifier, address: std::net::SocketAddr) -> DashboardClient {
    let root = std::fs::read_to_string(&verifier.root_pem_path).unwrap();
    let (chain, key, _) = verifier
        .issue_operator("soc-viewer", &[OperatorRole::Viewer])
        .unwrap();
    DashboardClient::new(address, &root, Some((&chain, &key))).unwrap()
}

/// The row of `id` on the fleet page (JavaScript for the element, or null).
fn row(id: &str) -> String {
    format!(
        "Array.from(document.querySelectorAll('#fleet-rows tr')).find(r => r.getAttribute('data-device-id') === {id:?})"
    )
}

/// The text of `id`'s row on the fleet page.
fn row_text(id: &str) -> String {
    format!("(({}) || {{textContent: ''}}).textContent", row(id))
}

/// The state `id`'s row shows.
fn row_state(id: &str) -> String {
    format!(
        "((({}) || {{querySelector: () => null}}).querySelector('[data-field=state]') || {{textContent: ''}}).textContent",
        row(id)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tamper_shows_on_the_fleet_page_without_a_reload_and_the_device_page_names_the_rule() {
    let apps = boot_applications(&BootProfile::default_linux());
    let allowlist = format!(
        "\"/usr/bin/bash\" = [\"sha256:{}\"]\n",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"bash"))
    );
    let d = Deployment::builder()
        .interval(2)
        .manifest(boot_manifest("Acme", "boot-chain", "1", &apps[..2]))
        .manifest(boot_manifest("Acme", "kernel", "1", &apps[2..]))
        .policy(gateway_policy(
            1,
            2,
            Some(&allowlist),
            &acme_components(&["boot-chain", "kernel"]),
        ))
        .start()
        .await
        .unwrap();
    let profile = BootProfile::default_linux();
    let mut tampered = d.device("gw-dash-1", &profile).await.unwrap();
    let honest = d.device("gw-dash-2", &profile).await.unwrap();
    let (bad_id, good_id) = (tampered.device_id(), honest.device_id());
    d.wait(&bad_id, DeviceState::Trusted).await.unwrap();
    d.wait(&good_id, DeviceState::Trusted).await.unwrap();

    let address = d.verifier.start_dashboard().await.unwrap();
    let client = viewer(&d.verifier, address);
    let proxy = operator_proxy(client.clone()).await.unwrap();
    let mut browser = Browser::open(&format!("http://{proxy}/#/fleet"), 1280, 800)
        .await
        .unwrap();
    // The fleet page lists both devices as trusted.
    for id in [&bad_id, &good_id] {
        browser
            .wait_for(
                &format!("{} === 'trusted'", row_state(id)),
                "document.body.innerText",
                Duration::from_secs(20),
            )
            .await
            .unwrap();
    }
    browser
        .wait_for(
            "document.getElementById('live').textContent === 'live'",
            "document.getElementById('live').textContent",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    // A reload would lose this.
    browser.eval("window.__loadedOnce = 'yes'").await.unwrap();

    // The event stream as a second viewer sees it, opened before the tamper.
    let events = tokio::spawn({
        let client = client.clone();
        let needle = format!("\"device_id\":\"{bad_id}\"");
        async move {
            client
                .read_events_until("/api/events", &needle, Duration::from_secs(60))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The attack: a program the allowlist never saw.
    tampered
        .swtpm
        .ima_measure(IMPLANT, b"an implant the allowlist never saw")
        .unwrap();
    d.wait(&bad_id, DeviceState::Untrusted).await.unwrap();
    browser
        .wait_for(
            &format!(
                "{} === 'untrusted' && {}.includes('ima_allowlist')",
                row_state(&bad_id),
                row_text(&bad_id)
            ),
            "document.body.innerText",
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(
        browser.eval("window.__loadedOnce").await.unwrap(),
        "yes",
        "the page was reloaded"
    );
    assert_eq!(browser.eval(&row_state(&good_id)).await.unwrap(), "trusted");
    // The counts moved with the change.
    let counts = browser
        .eval("document.getElementById('state-counts').innerText")
        .await
        .unwrap();
    let counts = counts.as_str().unwrap().replace('\n', " ");
    assert!(
        counts.contains("1 trusted") && counts.contains("1 untrusted"),
        "{counts}"
    );
    // The event stream carried that one change (not the fleet).
    let stream = events.await.unwrap().unwrap();
    assert!(stream.contains("event: change"), "{stream}");
    assert!(stream.contains("\"current\":\"untrusted\""), "{stream}");
    assert!(!stream.contains(&good_id), "{stream}");

    let temp = tempfile::tempdir().unwrap();
    let shots = screenshot_dir(&temp);
    browser
        .screenshot(&shots.join("dashboard-fleet.png"))
        .await
        .unwrap();

    // The device page: the failed rule, and the file name as text, never as markup.
    browser
        .eval(&format!(
            "location.hash = '#/device/' + encodeURIComponent({bad_id:?})"
        ))
        .await
        .unwrap();
    browser
        .wait_for(
            "!!document.getElementById('failures') && document.getElementById('failures').innerText.includes('ima_allowlist')",
            "document.body.innerText",
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let failures = browser
        .eval("document.getElementById('failures').textContent")
        .await
        .unwrap();
    assert!(failures.as_str().unwrap().contains(IMPLANT), "{failures}");
    assert_eq!(
        browser
            .eval(
                "[typeof window.__xss, document.querySelectorAll('#view script, #view img').length]"
            )
            .await
            .unwrap(),
        serde_json::json!(["undefined", 0]),
        "device-chosen markup ran or became elements"
    );
    let page = browser.eval("document.body.innerText").await.unwrap();
    let page = page.as_str().unwrap();
    assert!(page.contains("trust list version"), "{page}");
    assert!(page.contains("EK certificate issuer"), "{page}");
    assert!(
        page.contains("AppraisalFailed") || page.contains("appraisal_failed"),
        "{page}"
    );
    assert_eq!(browser.eval("window.__loadedOnce").await.unwrap(), "yes");
    browser
        .screenshot(&shots.join("dashboard-device.png"))
        .await
        .unwrap();
    // The other pages: alerts (newest first), the trust documents and who signed them, and
    // the audit log, whose chain the page has the verifier check.
    for (hash, expected) in [
        ("#/alerts", "appraisal_failed"),
        ("#/trust", "Acme/kernel/1"),
        ("#/audit", "head sequence"),
    ] {
        browser
            .eval(&format!("location.hash = {hash:?}"))
            .await
            .unwrap();
        browser
            .wait_for(
                &format!("document.getElementById('view').innerText.includes({expected:?})"),
                "document.getElementById('view').innerText",
                Duration::from_secs(20),
            )
            .await
            .unwrap();
    }
    browser
        .eval("Array.from(document.querySelectorAll('button')).find(b => b.textContent === 'Verify chain').click()")
        .await
        .unwrap();
    browser
        .wait_for(
            "document.getElementById('chain-status').textContent.startsWith('intact')",
            "document.getElementById('chain-status').textContent",
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(browser.eval("window.__loadedOnce").await.unwrap(), "yes");
    for shot in ["dashboard-fleet.png", "dashboard-device.png"] {
        let bytes = std::fs::read(shots.join(shot)).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{shot}"
        );
    }

    // At fleet scale: 10,000 more device records (copies of the honest one, enrolled, so the
    // watchdog leaves them be). A page is still 50 rows and a small document; search, filters
    // and counts are the server's.
    let storage = d.verifier.service.storage();
    let template = storage.device(&good_id).unwrap().unwrap();
    for n in 0..10_000 {
        let mut copy = template.clone();
        copy.device_id = format!("tc-load-{n:05}");
        copy.facts.hostname = format!("load-{n:05}");
        copy.state = DeviceState::Enrolled;
        storage.put_device_deferred(&copy).unwrap();
    }
    storage.commit().unwrap();
    let started = std::time::Instant::now();
    let page = client.get("/api/fleet").await.unwrap();
    let took = started.elapsed();
    assert_eq!(page.status, 200);
    assert!(page.body.len() < 64 * 1024, "{} bytes", page.body.len());
    assert!(took < Duration::from_secs(5), "{took:?}");
    let page: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(page["total"], 10_002);
    assert_eq!(page["devices"].as_array().unwrap().len(), 50);
    assert_eq!(page["by_state"]["enrolled"], 10_000);
    let found = client.get("/api/fleet?q=LOAD-09999").await.unwrap();
    let found: serde_json::Value = serde_json::from_str(&found.body).unwrap();
    assert_eq!(found["matching"], 1);
    let bad = client.get("/api/fleet?state=untrusted").await.unwrap();
    let bad: serde_json::Value = serde_json::from_str(&bad.body).unwrap();
    assert_eq!(bad["devices"][0]["device_id"], bad_id.as_str());
    browser.eval("location.hash = '#/fleet'").await.unwrap();
    browser
        .wait_for(
            "document.body.innerText.includes('10002 devices') && document.querySelectorAll('#fleet-rows tr').length === 50",
            "document.body.innerText.slice(0, 400)",
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    drop(honest);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_viewer_certificates_see_the_dashboard_and_nothing_in_it_writes() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    let address = verifier.start_dashboard().await.unwrap();
    let root = std::fs::read_to_string(&verifier.root_pem_path).unwrap();

    // No client certificate: the handshake itself fails.
    let anonymous = DashboardClient::new(address, &root, None).unwrap();
    assert!(anonymous.get("/api/fleet").await.is_err());
    // An operator certificate naming no role: refused, no data.
    let (chain, key) = verifier.hand_made_operator("no-role", None).unwrap();
    let no_role = DashboardClient::new(address, &root, Some((&chain, &key))).unwrap();
    for path in ["/", "/api/fleet", "/api/events", "/api/audit"] {
        let reply = no_role.get(path).await.unwrap();
        assert_eq!(reply.status, 403, "{path}: {reply:?}");
        assert!(!reply.body.contains("devices"), "{path}: {reply:?}");
    }

    // The viewer sees the pages, with a policy that runs no inline script.
    let client = viewer(&verifier, address);
    let index = client.get("/").await.unwrap();
    assert_eq!(index.status, 200);
    assert!(
        index
            .headers
            .contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{}",
        index.headers
    );
    let script = client.get("/app.js").await.unwrap();
    assert_eq!(script.status, 200);
    // Nothing on the page writes: no form, no method but GET.
    for text in [&index.body, &script.body] {
        for verb in ["POST", "PUT", "DELETE", "PATCH", "<form"] {
            assert!(!text.contains(verb), "{verb} in the served page");
        }
    }
    let fleet = client.get("/api/fleet?limit=1000000").await.unwrap();
    assert_eq!(fleet.status, 200, "{fleet:?}");
    let fleet: serde_json::Value = serde_json::from_str(&fleet.body).unwrap();
    assert_eq!(fleet["limit"], 200, "a page is capped");

    // And the router has no write route, for any role.
    let (chain, key, _) = verifier
        .issue_operator("all-roles", &OperatorRole::ALL)
        .unwrap();
    let admin = DashboardClient::new(address, &root, Some((&chain, &key))).unwrap();
    for dashboard in [&client, &admin] {
        for path in [
            "/",
            "/api/fleet",
            "/api/devices/x",
            "/api/audit",
            "/api/trust",
        ] {
            for method in ["POST", "PUT", "DELETE", "PATCH"] {
                let reply = dashboard.request(method, path).await.unwrap();
                assert_eq!(reply.status, 405, "{method} {path}: {reply:?}");
            }
        }
    }

    // A revoked viewer: refused on its next request, then at the handshake.
    let (chain, key, serial) = verifier
        .issue_operator("revoked-viewer", &[OperatorRole::Viewer])
        .unwrap();
    let revoked = DashboardClient::new(address, &root, Some((&chain, &key))).unwrap();
    assert_eq!(revoked.get("/api/fleet").await.unwrap().status, 200);
    // Its event stream carries changes while it is valid...
    let change = |device: &str| StateChange {
        sequence: 0,
        device_id: device.into(),
        previous: DeviceState::Trusted,
        current: DeviceState::Untrusted,
        reason: "injected".into(),
        result_jwt: String::new(),
        at_unix_millis: 0,
    };
    let watch = |needle: &'static str| {
        let revoked = revoked.clone();
        tokio::spawn(async move {
            revoked
                .read_events_until("/api/events", needle, Duration::from_secs(10))
                .await
        })
    };
    let before = watch("dev-before");
    tokio::time::sleep(Duration::from_millis(300)).await;
    verifier.service.publish(change("dev-before"));
    before.await.unwrap().unwrap();
    // ...and a stream opened before the revocation ends at the first change after it.
    let after = watch("dev-after");
    tokio::time::sleep(Duration::from_millis(300)).await;
    trustchain_ca::Authority::load(&verifier.dir.path().join("ca"))
        .unwrap()
        .revoke_operator_serial(&serial, trustchain_ca::revocation::Reason::KeyCompromise, 0)
        .unwrap();
    verifier.service.publish(change("dev-after"));
    let ended = after.await.unwrap().unwrap_err().to_string();
    assert!(
        ended.contains("closed") && !ended.contains("dev-after\""),
        "{ended}"
    );
    assert_eq!(revoked.get("/api/fleet").await.unwrap().status, 403);
    assert!(
        revoked.get("/api/fleet").await.is_err(),
        "the CRL refuses it"
    );
    assert_eq!(client.get("/api/fleet").await.unwrap().status, 200);

    // The same viewer certificate on the admin API: every write refused.
    let (mut grpc, _) = verifier
        .admin_as("soc-viewer-2", &[OperatorRole::Viewer])
        .await
        .unwrap();
    let device = || DeviceRequest {
        device_id: "any".into(),
        comment: "dashboard test".into(),
    };
    let junk = || SignedDocument {
        document: b"x".to_vec(),
    };
    let refusals = [
        grpc.clear_device(device()).await.map(drop),
        grpc.decommission_device(device()).await.map(drop),
        grpc.import_trust_list(junk()).await.map(drop),
        grpc.import_manifest(junk()).await.map(drop),
        grpc.import_policy(junk()).await.map(drop),
    ];
    for refusal in refusals {
        assert_eq!(refusal.unwrap_err().code(), Code::PermissionDenied);
    }
}
