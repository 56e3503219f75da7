//! The throwaway PostgreSQL of the tests (tests/src/postgres.rs) is a real server: it takes a
//! connection, keeps what it is given, and is gone once dropped.

use trustchain_tests::postgres::TestPostgres;

#[tokio::test]
async fn a_throwaway_server_serves_and_stops_when_dropped() {
    let server = TestPostgres::start().expect("start PostgreSQL (scripts/setup.sh installs it)");
    let client = server.client().await.unwrap();
    client
        .batch_execute("CREATE TABLE t (k int PRIMARY KEY); INSERT INTO t VALUES (7)")
        .await
        .unwrap();
    let row = client.query_one("SELECT k FROM t", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    let port = server.port;
    drop(client);
    drop(server);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server still listens after Drop"
    );
}
