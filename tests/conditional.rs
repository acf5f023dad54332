//! Conditional writes (`if_version`) and atomic batches through the real server: the contract's
//! rows ("Conditional writes", "Batches" in API.md and docs/api.md), lost-update freedom under
//! 16 concurrent CAS clients, and batches across restarts and `kill -9`.

mod common;

use common::{Client, TestServer};
use serde_json::{json, Value};

fn post(client: &mut Client, target: &str, body: &Value) -> common::Response {
    client.request("POST", target, Some(&body.to_string()))
}

#[test]
fn conditional_sets_and_deletes_follow_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    let mut client = server.connect();

    // 0: only if absent.
    let created = post(&mut client, "/set?if_version=0", &json!({"key":"k","value":"a"}));
    assert_eq!(created.status, 200);
    let v1 = created.json()["version"].as_u64().unwrap();
    let again = post(&mut client, "/set?if_version=0", &json!({"key":"k","value":"b"}));
    assert_eq!(again.status, 409);
    assert_eq!(
        again.json(),
        json!({"error":"version mismatch","key":"k","version":v1})
    );
    assert!(
        again.header("Durability").is_some(),
        "a write's answer names its class"
    );

    // N: only at that version.
    let stale = post(
        &mut client,
        &format!("/set?if_version={}", v1 + 100),
        &json!({"key":"k","value":"c"}),
    );
    assert_eq!(stale.status, 409);
    let updated = post(
        &mut client,
        &format!("/set?if_version={v1}"),
        &json!({"key":"k","value":"d"}),
    );
    assert_eq!(updated.status, 200);
    let v2 = updated.json()["version"].as_u64().unwrap();
    assert!(v2 > v1);
    assert_eq!(client.get("k").json()["value"], "d");

    // An absent key reports a null version.
    let absent = post(
        &mut client,
        "/set?if_version=5",
        &json!({"key":"nothing","value":1}),
    );
    assert_eq!(absent.status, 409);
    assert_eq!(
        absent.json(),
        json!({"error":"version mismatch","key":"nothing","version":null})
    );
    assert_eq!(
        client.get("nothing").status,
        404,
        "a failed condition writes nothing"
    );

    // Deletes.
    let wrong = client.request("DELETE", &format!("/del?key=k&if_version={v1}"), None);
    assert_eq!(wrong.status, 409);
    assert_eq!(wrong.json()["version"], v2);
    assert_eq!(client.get("k").json()["value"], "d");
    let deleted = client.request("DELETE", &format!("/del?key=k&if_version={v2}"), None);
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json(), json!({"key":"k","value":"d","version":v2}));
    assert_eq!(client.get("k").status, 404);
    // After the delete the key is absent again: 0 holds.
    assert_eq!(
        post(&mut client, "/set?if_version=0", &json!({"key":"k","value":"e"})).status,
        200
    );

    // A bad condition is the client's error.
    for bad in ["-1", "x", "1.5", ""] {
        let response = post(
            &mut client,
            &format!("/set?if_version={bad}"),
            &json!({"key":"k","value":1}),
        );
        assert_eq!(response.status, 400, "if_version={bad}");
    }
}

#[test]
fn batches_are_all_or_nothing_and_answer_per_op() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--max-batch-ops", "4"]);
    let mut client = server.connect();
    let v_old = client.set("old", &json!("gone soon")).json()["version"]
        .as_u64()
        .unwrap();

    let done = post(
        &mut client,
        "/batch",
        &json!({"ops":[
            {"op":"set","key":"a","value":{"n":1}},
            {"op":"set","key":"b","value":[1,2],"if_version":0},
            {"op":"del","key":"old","if_version":v_old},
            {"op":"del","key":"never-there"}
        ]}),
    );
    assert_eq!(done.status, 200, "{:?}", done.json());
    let results = done.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 4);
    let first = results[0]["version"].as_u64().unwrap();
    for (index, result) in results.iter().enumerate() {
        assert_eq!(
            result["version"].as_u64().unwrap(),
            first + index as u64,
            "versions run in op order"
        );
    }
    assert_eq!(
        results[2]["removed"],
        json!({"value":"gone soon","version":v_old})
    );
    assert_eq!(results[3]["removed"], Value::Null);
    assert_eq!(client.get("a").json()["value"], json!({"n":1}));
    assert_eq!(client.get("b").json()["version"].as_u64().unwrap(), first + 1);
    assert_eq!(client.get("old").status, 404);

    // One failed condition: nothing applied, the op named.
    let refused = post(
        &mut client,
        "/batch",
        &json!({"ops":[
            {"op":"set","key":"a","value":2},
            {"op":"set","key":"c","value":3},
            {"op":"set","key":"b","value":4,"if_version":first}
        ]}),
    );
    assert_eq!(refused.status, 409);
    assert_eq!(
        refused.json(),
        json!({"error":"version mismatch","key":"b","version":first + 1,"op":2})
    );
    assert_eq!(client.get("a").json()["value"], json!({"n":1}));
    assert_eq!(client.get("c").status, 404);

    // The client's errors.
    let cases = [
        (json!({"ops":[]}), 400),
        (json!({"ops":[{"op":"set","key":"x"}]}), 400),
        (json!({"ops":[{"op":"del","key":"x","value":1}]}), 400),
        (json!({"ops":[{"op":"put","key":"x","value":1}]}), 400),
        (json!({"ops":[{"op":"set","key":"","value":1}]}), 400),
        (
            json!({"ops":[{"op":"set","key":"x","value":1},{"op":"del","key":"x"}]}),
            400,
        ),
        (json!({"ops":[{"op":"set","key":"x","value":1}],"extra":1}), 400),
        (json!({"ops":[{"op":"set","key":1,"value":1}]}), 400),
        (
            json!({"ops":(0..5).map(|i| json!({"op":"set","key":format!("k{i}"),"value":i})).collect::<Vec<_>>()}),
            413,
        ),
    ];
    for (body, status) in cases {
        let response = post(&mut client, "/batch", &body);
        assert_eq!(
            response.status,
            status,
            "{body}: {:?}",
            String::from_utf8_lossy(&response.body)
        );
        assert!(response.json()["error"].is_string());
    }
    assert_eq!(client.request("POST", "/batch", Some("{not json")).status, 400);
    let in_query = json!({"ops":[{"op":"set","key":"x","value":1}]});
    assert_eq!(post(&mut client, "/batch?if_version=0", &in_query).status, 400);
    let wrong_method = client.request("GET", "/batch", None);
    assert_eq!(
        (wrong_method.status, wrong_method.header("Allow")),
        (405, Some("POST"))
    );
    assert_eq!(client.get("x").status, 404);
}

#[test]
fn sixteen_clients_incrementing_through_cas_lose_no_update() {
    const CLIENTS: u64 = 16;
    const INCREMENTS: u64 = 25;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--fsync", "group"]);
    assert_eq!(server.connect().set("counter", &json!(0)).status, 200);
    let addr = server.addr;
    let conflicts: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                scope.spawn(move || {
                    let mut client = Client::connect(addr);
                    let mut conflicts = 0;
                    let mut done = 0;
                    let mut attempts = 0;
                    while done < INCREMENTS {
                        attempts += 1;
                        assert!(attempts < 100_000, "no progress");
                        let current = client.get("counter").json();
                        let (value, version) = (
                            current["value"].as_u64().unwrap(),
                            current["version"].as_u64().unwrap(),
                        );
                        let answer = post(
                            &mut client,
                            &format!("/set?if_version={version}"),
                            &json!({"key":"counter","value":value + 1}),
                        );
                        match answer.status {
                            200 => done += 1,
                            409 => {
                                assert!(answer.json()["version"].as_u64().unwrap() > version);
                                conflicts += 1;
                            }
                            other => panic!("CAS answered {other}"),
                        }
                    }
                    conflicts
                })
            })
            .collect();
        workers.into_iter().map(|worker| worker.join().unwrap()).sum()
    });
    assert_eq!(
        server.connect().get("counter").json()["value"],
        CLIENTS * INCREMENTS
    );
    // Without contention the test would not test serialisation.
    assert!(conflicts > 0, "16 clients never conflicted");
}

#[test]
fn acknowledged_batches_survive_kill_9_and_restarts_whole() {
    let dir = tempfile::tempdir().unwrap();
    // Small memtables: some batches are flushed into tables, others replayed from the WAL.
    let args = ["--fsync", "always", "--memtable-bytes", "64KiB"];
    let server = TestServer::start(dir.path(), &args);
    let mut client = server.connect();
    let mut acknowledged = Vec::new();
    for round in 0..120u64 {
        let ops: Vec<Value> = (0..5)
            .map(|i| json!({"op":"set","key":format!("r{round}-k{i}"),"value":{"round":round,"i":i,"pad":"x".repeat(200)}}))
            .chain((round > 0).then(|| json!({"op":"del","key":format!("r{}-k0", round - 1)})))
            .collect();
        let answer = post(&mut client, "/batch", &json!({ "ops": ops }));
        assert_eq!(answer.status, 200);
        acknowledged.push(answer.json()["results"].clone());
    }
    server.kill();
    for life in 0..2 {
        let server = TestServer::start(dir.path(), &args);
        let mut client = server.connect();
        for (round, results) in acknowledged.iter().enumerate() {
            for (i, result) in results.as_array().unwrap().iter().take(5).enumerate() {
                let key = format!("r{round}-k{i}");
                let got = client.get(&key);
                if i == 0 && round + 1 < acknowledged.len() {
                    assert_eq!(
                        got.status, 404,
                        "life {life}: {key} was deleted by the next batch"
                    );
                } else {
                    assert_eq!(got.status, 200, "life {life}: {key}");
                    assert_eq!(got.json()["version"], result["version"], "life {life}: {key}");
                }
            }
        }
        // Versions go on after every batch's versions.
        let last = acknowledged.last().unwrap().as_array().unwrap().last().unwrap()["version"]
            .as_u64()
            .unwrap();
        assert!(client.set("after", &json!(1)).json()["version"].as_u64().unwrap() > last);
        if life == 0 {
            server.kill();
        }
    }
}
