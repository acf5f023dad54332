//! The HTTP contract (`../shared/API.md`), row by row, over real sockets to the real server.

mod common;

use common::{Client, TestServer};
use serde_json::json;

fn server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--wal-segment-bytes", "4194304"]);
    (dir, server)
}

#[test]
fn set_get_del_round_trip_every_json_type() {
    let (_dir, server) = server();
    let mut client = server.connect();
    let values = [
        json!("text"),
        json!(42),
        json!(-1.5e3),
        json!({"nested": {"a": [1, 2, 3]}}),
        json!([true, false, null]),
        json!(true),
        json!(null),
    ];
    let mut last_version = 0;
    for (i, value) in values.iter().enumerate() {
        let key = format!("key-{i}");
        let set = client.set(&key, value);
        assert_eq!(set.status, 200);
        assert_eq!(set.header("content-type"), Some("application/json"));
        let version = set.json()["version"].as_u64().unwrap();
        assert!(version > last_version, "versions strictly increase");
        last_version = version;
        let got = client.get(&key);
        assert_eq!(got.status, 200);
        assert_eq!(
            got.json(),
            json!({"key": key, "value": value, "version": version})
        );
    }
    let deleted = client.del("key-3");
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json()["value"], values[3]);
    assert_eq!(deleted.json()["key"], "key-3");
    let gone = client.get("key-3");
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json(), json!({"error": "key not found", "key": "key-3"}));
    assert_eq!(client.del("key-3").status, 404);
}

#[test]
fn values_are_returned_byte_for_byte() {
    let (_dir, server) = server();
    let mut client = server.connect();
    // 1.50 and the spacing would not survive a parse-and-reserialise round trip.
    let body = r#"{"key":"exact","value":{"a": 1.50, "b" : [ ]}}"#;
    assert_eq!(client.request("POST", "/set", Some(body)).status, 200);
    let got = client.get("exact");
    let text = String::from_utf8(got.body).unwrap();
    assert!(text.contains(r#""value":{"a": 1.50, "b" : [ ]}"#), "{text}");
}

#[test]
fn keys_are_percent_decoded_and_utf8() {
    let (_dir, server) = server();
    let mut client = server.connect();
    for key in ["a b", "a&b=c", "ключ/ü", "../../etc/passwd", "+plus"] {
        assert_eq!(client.set(key, &json!(key)).status, 200);
        let got = client.get(key);
        assert_eq!(got.status, 200, "{key}");
        assert_eq!(got.json()["key"], key);
    }
    // `+` is a space in a query string.
    let plus = client.request("GET", "/get?key=a+b", None);
    assert_eq!(plus.json()["key"], "a b");
}

#[test]
fn bad_input_gets_400_with_json_error() {
    let (_dir, server) = server();
    let mut client = server.connect();
    let cases = [
        ("POST", "/set", Some("{not json")),
        ("POST", "/set", Some(r#"{"value":1}"#)),
        ("POST", "/set", Some(r#"{"key":"k"}"#)),
        ("POST", "/set", Some(r#"{"key":7,"value":1}"#)),
        ("POST", "/set", Some(r#"{"key":"","value":1}"#)),
        ("POST", "/set", Some("[1,2]")),
        ("GET", "/get?key=%zz", None),
        ("GET", "/get?key=%C3", None),
        ("GET", "/get", None),
        ("GET", "/get?other=1", None),
        ("GET", "/get?key=", None),
        ("DELETE", "/del", None),
    ];
    for (method, target, body) in cases {
        let response = client.request(method, target, body);
        assert_eq!(response.status, 400, "{method} {target} {body:?}");
        assert!(response.json()["error"].is_string());
    }
    // The connection survived every one of them.
    assert_eq!(client.set("still", &json!(1)).status, 200);
}

#[test]
fn unknown_path_is_404_and_wrong_method_is_405_with_allow() {
    let (_dir, server) = server();
    let mut client = server.connect();
    let missing = client.request("GET", "/nothing", None);
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
    for (method, target, allow) in [
        ("POST", "/get?key=a", "GET"),
        ("GET", "/set", "POST"),
        ("GET", "/del?key=a", "DELETE"),
    ] {
        let response = client.request(method, target, None);
        assert_eq!(response.status, 405);
        assert_eq!(response.header("allow"), Some(allow));
        assert!(response.json()["error"].is_string());
    }
}

#[test]
fn oversized_key_value_and_body_are_413_and_head_is_431() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &[
            "--max-key-bytes",
            "16",
            "--max-value-bytes",
            "64",
            "--max-head-bytes",
            "1024",
        ],
    );
    let mut client = server.connect();
    assert_eq!(client.set(&"k".repeat(17), &json!(1)).status, 413);
    assert_eq!(client.get(&"k".repeat(17)).status, 413);
    assert_eq!(client.set("k", &json!("v".repeat(70))).status, 413);
    assert_eq!(client.set("k", &json!("v".repeat(50))).status, 200);
    // A body over the limit is refused from its Content-Length, before it is read.
    let mut big = server.connect();
    big.send_raw(b"POST /set HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
    let response = big.read_response();
    assert_eq!(response.status, 413);
    assert!(response.json()["error"].is_string());
    let mut long = server.connect();
    long.send_raw(format!("GET /get?key={} HTTP/1.1\r\n\r\n", "a".repeat(2000)).as_bytes());
    assert_eq!(long.read_response().status, 431);
    let mut many = server.connect();
    let headers: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    many.send_raw(format!("GET /get?key=a HTTP/1.1\r\n{headers}\r\n").as_bytes());
    assert_eq!(many.read_response().status, 431);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_dir, server) = server();
    let mut client = server.connect();
    let mut burst = String::new();
    for i in 0..50 {
        let body = format!(r#"{{"key":"p{i}","value":{i}}}"#);
        burst.push_str(&format!(
            "POST /set HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        burst.push_str(&format!("GET /get?key=p{i} HTTP/1.1\r\n\r\n"));
    }
    burst.push_str("DELETE /del?key=p0 HTTP/1.1\r\n\r\nGET /get?key=p0 HTTP/1.1\r\n\r\n");
    client.send_raw(burst.as_bytes());
    for i in 0..50 {
        let set = client.read_response();
        assert_eq!(set.json()["key"], format!("p{i}"));
        let get = client.read_response();
        assert_eq!(get.json()["value"], i);
    }
    assert_eq!(client.read_response().json()["value"], 0);
    assert_eq!(client.read_response().status, 404);
}

#[test]
fn requests_split_across_many_packets_are_reassembled() {
    let (_dir, server) = server();
    let mut client = server.connect();
    let body = r#"{"key":"slow","value":"drip"}"#;
    let raw = format!(
        "POST /set HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for byte in raw.as_bytes() {
        client.send_raw(&[*byte]);
    }
    assert_eq!(client.read_response().status, 200);
    assert_eq!(client.get("slow").json()["value"], "drip");
}

#[test]
fn chunked_bodies_are_decoded() {
    let (_dir, server) = server();
    let mut client = server.connect();
    client.send_raw(
        b"POST /set HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\n{\"key\r\n11\r\n\":\"ch\",\"value\":[1\r\n3;ext=x\r\n,2]\r\n1\r\n}\r\n0\r\n\r\n",
    );
    assert_eq!(client.read_response().status, 200);
    assert_eq!(client.get("ch").json()["value"], json!([1, 2]));
}

#[test]
fn expect_100_continue_gets_an_interim_answer_before_the_body() {
    let (_dir, server) = server();
    let mut client = server.connect();
    let body = format!(r#"{{"key":"big","value":"{}"}}"#, "x".repeat(4000));
    client.send_raw(
        format!(
            "POST /set HTTP/1.1\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    // Nothing of the body has been sent: the server must answer 100 first.
    let interim = client.read_response();
    assert_eq!(interim.status, 100);
    client.send_raw(body.as_bytes());
    assert_eq!(client.read_response().status, 200);
    assert_eq!(client.get("big").json()["value"].as_str().unwrap().len(), 4000);
}

#[test]
fn http10_closes_by_default_and_keeps_alive_on_request() {
    let (_dir, server) = server();
    let mut plain = server.connect();
    plain.send_raw(b"GET /get?key=none HTTP/1.0\r\n\r\n");
    let response = plain.read_response();
    assert_eq!(response.status, 404);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(plain.is_closed());

    let mut keep = server.connect();
    for _ in 0..3 {
        keep.send_raw(b"GET /get?key=none HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = keep.read_response();
        assert_eq!(response.status, 404);
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
}

#[test]
fn connection_close_is_honoured() {
    let (_dir, server) = server();
    let mut client = server.connect();
    client.send_raw(b"GET /get?key=a HTTP/1.1\r\nConnection: close\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.is_closed());
}

#[test]
fn garbage_gets_400_then_close_and_other_clients_are_unaffected() {
    let (_dir, server) = server();
    let mut bystander = server.connect();
    assert_eq!(bystander.set("b", &json!(1)).status, 200);
    let mut bad = server.connect();
    bad.send_raw(b"\x16\x03\x01 definitely not http\r\n\r\n");
    let response = bad.read_response();
    assert_eq!(response.status, 400);
    assert!(response.json()["error"].is_string());
    assert!(bad.is_closed());
    assert_eq!(bystander.get("b").status, 200);
}

#[test]
fn concurrent_deletes_of_one_key_remove_it_once() {
    let (_dir, server) = server();
    for round in 0..20 {
        let key = format!("race-{round}");
        assert_eq!(server.connect().set(&key, &json!(round)).status, 200);
        let addr = server.addr;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let key = key.clone();
                std::thread::spawn(move || Client::connect(addr).del(&key).status)
            })
            .collect();
        let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 1, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|&&s| s == 404).count(), 3, "{statuses:?}");
    }
}

/// A client that sends a body over the limit in full without waiting (Python's `http.client`
/// and `requests` send no `Expect: 100-continue`) reads the 413: the server answers from the
/// head, then reads and discards what keeps coming before it closes (lingering close). Closing
/// at once, with the body unread, made the kernel reset the connection, and the client got
/// "connection reset" instead of the answer.
#[test]
fn a_client_sending_a_whole_oversized_body_reads_the_413() {
    use std::io::{Read, Write};
    let (_dir, server) = server();
    let body = vec![b'x'; 4 << 20];
    for attempt in 0..5 {
        let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "POST /set HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut sender = stream.try_clone().unwrap();
        let body = body.clone();
        let sending = std::thread::spawn(move || {
            // Errors are expected once the server has closed; the answer is what matters.
            let _ = sender
                .write_all(head.as_bytes())
                .and_then(|()| sender.write_all(&body));
        });
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        sending.join().unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(
            read.is_ok() && text.starts_with("HTTP/1.1 413"),
            "attempt {attempt}: {read:?}, {:?}",
            text.chars().take(200).collect::<String>()
        );
    }
}

/// Options come from the environment too (`RINGKV_` and the name in capitals), and sizes take
/// units: a server started with `RINGKV_FSYNC=always` and `--wal-segment-bytes 4MiB` runs
/// `always` and takes writes.
#[test]
fn options_come_from_the_environment_and_sizes_take_units() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"));
    command.env("RINGKV_FSYNC", "always");
    let server = TestServer::start_command(
        dir.path(),
        command,
        &["--wal-segment-bytes", "4MiB", "--memtable-bytes", "1MiB"],
    );
    assert!(
        server.startup_line.contains("fsync always"),
        "{}",
        server.startup_line
    );
    let mut client = server.connect();
    assert_eq!(client.set("a", &json!(1)).status, 200);
    let segment = dir.path().join("wal-0000000000000001.log");
    assert_eq!(std::fs::metadata(segment).unwrap().len(), 4 << 20);
}
