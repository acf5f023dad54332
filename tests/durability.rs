//! Durability chosen per request (`../shared/API.md`, "Per-request durability"), over real
//! sockets to the real server: the parameter, the floor, the `Durability` header, the 400. What
//! each class keeps through a power loss is checked by `tests/model.rs`, `tests/crash_images.rs`
//! and the simulator, which run mixed classes on one log; the syncs each class costs, through
//! the server's `/metrics`, by `tests/metrics.rs`.

mod common;

use common::TestServer;
use serde_json::json;

const SET_BODY: &str = r#"{"key":"a","value":1}"#;

#[test]
fn each_write_names_the_class_that_applied() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--fsync", "group"]);
    let mut client = server.connect();
    for class in ["always", "group", "periodic", "never"] {
        let set = client.request("POST", &format!("/set?durability={class}"), Some(SET_BODY));
        assert_eq!(set.status, 200, "{class}");
        assert_eq!(set.header("durability"), Some(class));
        let got = client.get("a");
        assert_eq!(
            got.json()["version"],
            set.json()["version"],
            "visible once acknowledged"
        );
        assert_eq!(got.header("durability"), None, "reads name no class");
    }
    // No parameter: the server's class.
    let set = client.request("POST", "/set", Some(SET_BODY));
    assert_eq!(set.header("durability"), Some("group"));
    let deleted = client.request("DELETE", "/del?key=a&durability=periodic", None);
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.header("durability"), Some("periodic"));
    assert_eq!(deleted.json()["value"], json!(1));
    // A delete that finds nothing writes nothing, but still says which class it ran under.
    let missing = client.request("DELETE", "/del?durability=always&key=a", None);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("durability"), Some("always"));
}

#[test]
fn an_unknown_class_is_a_400_naming_the_accepted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut client = server.connect();
    for target in [
        "/set?durability=sometimes",
        "/set?durability=",
        "/set?durability=ALWAYS",
    ] {
        let answer = client.request("POST", target, Some(SET_BODY));
        assert_eq!(answer.status, 400, "{target}");
        let error = answer.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.contains("always, group, periodic, never"),
            "{target}: {error}"
        );
        assert_eq!(answer.header("durability"), None);
    }
    let answer = client.request("DELETE", "/del?key=a&durability=fsync", None);
    assert_eq!(answer.status, 400);
    // Nothing was written by the refused requests.
    assert_eq!(client.get("a").status, 404);
}

#[test]
fn the_floor_raises_weaker_requests_and_keeps_stronger_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--fsync", "never", "--min-durability", "group"]);
    let mut client = server.connect();
    for (asked, applied) in [
        (Some("never"), "group"),
        (Some("periodic"), "group"),
        (Some("group"), "group"),
        (Some("always"), "always"),
        // The server's own class is below the floor too.
        (None, "group"),
    ] {
        let target = asked.map_or("/set".to_string(), |class| format!("/set?durability={class}"));
        let set = client.request("POST", &target, Some(SET_BODY));
        assert_eq!(set.status, 200);
        assert_eq!(set.header("durability"), Some(applied), "asked {asked:?}");
    }
    assert!(
        server.startup_line.contains("down to group"),
        "{}",
        server.startup_line
    );
}
