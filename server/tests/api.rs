//! The real server binary on a loopback port with a real SQLite file (and
//! PostgreSQL when FACEGATE_TEST_POSTGRES_URL names one): the session flow,
//! signed results made by the core crate, and hostile input. Every refusal
//! must carry the right status and reason, and write nothing.

use facegate::challenge::{steps_for_seed, synthetic_track, Step, verify_track};
use facegate::signed::{ActiveLiveness, ClientDecision, DeviceKey, VerificationResult, PROTOCOL_VERSION};
use facegate::template::TransformKey;
use serde_json::{json, Value};
use std::process::{Child, Command};
use std::time::Duration;

const API_KEY: &str = "test-api-key-0123456789";

struct Server {
    child: Child,
    base: String,
    /// The database it runs on (a SQLite path or a postgres:// URL).
    db: String,
    _dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The hostile suite sends many refusals to one session on purpose, so the
/// per-session lock is raised here; `limits_and_sweeping` tests the default.
fn start(db: Option<&str>, tag: &str) -> Server {
    start_with(db, tag, &["--session-ttl", "3", "--max-failed-submissions", "100"])
}

fn start_with(db: Option<&str>, tag: &str, extra: &[&str]) -> Server {
    let dir = std::env::temp_dir().join(format!("facegate-server-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = db.map(str::to_string).unwrap_or_else(|| dir.join("facegate.db").display().to_string());
    // A free port can be taken by another test's server or database before
    // this one binds it, and a connect would then succeed to the wrong
    // process: the server is up when its own log says it listens, and a
    // lost port is tried again with another.
    for _attempt in 0..5 {
        let port = free_port();
        let log_path = dir.join(format!("server-{port}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_facegate-server"))
            .args(["--addr", &format!("127.0.0.1:{port}"), "--db", &db])
            .args(extra)
            .env("FACEGATE_API_KEY", API_KEY)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("server starts");
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("\"listening\"") {
                return Server { child, base, db, _dir: dir };
            }
            if child.try_wait().unwrap().is_some() {
                if text.contains("Address already in use") {
                    break;
                }
                panic!("server exited: {text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
            panic!("server did not listen within 10 s: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
        }
    }
    panic!("no free port after 5 tries");
}

/// (status, body) of a request; a refusal is a normal answer here.
fn call(method: &str, url: &str, key: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut req = ureq::request(method, url).set("content-type", "application/json");
    if let Some(k) = key {
        req = req.set("x-api-key", k);
    }
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Status of a POST that announces `len` body bytes. The server may answer
/// and close before the body is sent, so the body is written best-effort
/// (an HTTP client library would report that as a broken pipe instead).
fn oversized_status(base: &str, path: &str, len: usize) -> u16 {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n").unwrap();
    let _ = stream.write_all(&vec![b'a'; len]);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

struct Flow {
    session: Value,
    config: Value,
    key: DeviceKey,
}

fn new_session(s: &Server, order: &str, subscriber: &str) -> Flow {
    let (st, session) = call("POST", &format!("{}/v1/sessions", s.base), Some(API_KEY), Some(&json!({"order_id": order, "subscriber_id": subscriber}).to_string()));
    assert_eq!(st, 201, "{session}");
    let key = DeviceKey::from_seed(rand32());
    let id = session["session_id"].as_str().unwrap();
    let (st, reg) = call("POST", &format!("{}/v1/sessions/{id}/device-key", s.base), None, Some(&json!({"public_key": key.public_key_hex()}).to_string()));
    assert_eq!(st, 200, "{reg}");
    Flow { session, config: reg["session_config"].clone(), key }
}

fn rand32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).unwrap();
    b
}

/// An embedding-like unit vector for the template (the server never sees it).
fn embedding(seed: u8) -> facegate::embed::Embedding {
    let v: Vec<f32> = (0..256).map(|i| ((i as f32 + 1.0) * (seed as f32 + 1.3)).sin()).collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    facegate::embed::Embedding(v.into_iter().map(|a| a / n).collect())
}

fn result(f: &Flow, face: u8, match_score: f32) -> VerificationResult {
    let seed = hex::decode(f.config["challenge_seed"].as_str().unwrap()).unwrap();
    let steps = steps_for_seed(&seed);
    let track = synthetic_track(&steps);
    let transcript = verify_track(&seed, &track).unwrap();
    let models = f.session["accepted_models"].as_object().unwrap();
    let transform = TransformKey::from_hex(f.config["transform_key"].as_str().unwrap(), 256).unwrap();
    VerificationResult {
        version: PROTOCOL_VERSION,
        session_id: f.config["session_id"].as_str().unwrap().into(),
        nonce: f.config["nonce"].as_str().unwrap().into(),
        issued_at_ms: 1,
        match_score,
        passive_liveness: 0.6,
        screen_grid: Some(1.3),
        active_liveness: ActiveLiveness { steps, transcript, track },
        models: ["yunet_s_320", "mobilefacenet", "facemesh", "minifasnet_v2_2.7", "minifasnet_v1se_4.0"]
            .iter()
            .map(|m| (m.to_string(), models[*m].as_str().unwrap().to_string()))
            .collect(),
        widget_version: "test".into(),
        template: transform.protect(&embedding(face)).unwrap(),
        decision: ClientDecision { pass: match_score >= 0.8, reason: "ok".into() },
        device_public_key: f.key.public_key_hex(),
        evidence: None,
    }
}

fn submit(s: &Server, f: &Flow, wire: &str) -> (u16, Value) {
    let id = f.config["session_id"].as_str().unwrap();
    call("POST", &format!("{}/v1/sessions/{id}/result", s.base), None, Some(wire))
}

fn record(s: &Server, f: &Flow) -> Value {
    let id = f.config["session_id"].as_str().unwrap();
    let (st, v) = call("GET", &format!("{}/v1/sessions/{id}", s.base), Some(API_KEY), None);
    assert_eq!(st, 200);
    v
}

fn flow_and_duplicates(s: &Server) {
    let f = new_session(s, "order-1", "alice");
    let wire = f.key.sign(result(&f, 1, 0.93)).unwrap().to_json().unwrap();
    let (st, ans) = submit(s, &f, &wire);
    assert_eq!((st, ans.clone()), (200, json!({"decision": "pass", "reason": "ok"})));
    let rec = record(s, &f);
    assert_eq!(rec["decision"], "pass");
    assert_eq!(rec["possible_duplicates"], json!([]));
    // the same face registering as another subscriber is reported to the carrier
    let g = new_session(s, "order-2", "mallory");
    let (st, ans) = submit(s, &g, &g.key.sign(result(&g, 1, 0.9)).unwrap().to_json().unwrap());
    assert_eq!((st, ans["decision"].clone()), (200, json!("pass")));
    // ranked, with the strictest operating point the comparison still
    // passes (the same face: the strictest there is), never a score
    assert_eq!(record(s, &g)["possible_duplicates"], json!([{"subscriber_id": "alice", "rank": 1, "score_band": "far1e-7"}]));
    // a third registration of that face has two candidates, each once
    let t = new_session(s, "order-2b", "trudy");
    let (st, _) = submit(s, &t, &t.key.sign(result(&t, 1, 0.9)).unwrap().to_json().unwrap());
    assert_eq!(st, 200);
    let candidates = record(s, &t)["possible_duplicates"].clone();
    let mut names: Vec<&str> = candidates.as_array().unwrap().iter().map(|c| c["subscriber_id"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["alice", "mallory"]);
    assert_eq!(candidates.as_array().unwrap().iter().map(|c| c["rank"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
    // a low match fails with a reason, and the browser gets no score
    let h = new_session(s, "order-3", "bob");
    let (st, ans) = submit(s, &h, &h.key.sign(result(&h, 2, 0.3)).unwrap().to_json().unwrap());
    assert_eq!((st, ans), (200, json!({"decision": "fail", "reason": "no_match"})));
    // the screen-replay cue at or above the server's threshold fails the
    // session, whatever the device concluded, and stores no template
    let r = new_session(s, "order-4", "rita");
    let mut replayed = result(&r, 5, 0.95);
    replayed.screen_grid = Some(facegate::replay::DEFAULT_SCREEN_GRID_THRESHOLD + 0.5);
    let (st, ans) = submit(s, &r, &r.key.sign(replayed).unwrap().to_json().unwrap());
    assert_eq!((st, ans), (200, json!({"decision": "fail", "reason": "screen_replay_suspected"})));
    assert_eq!(record(s, &r)["possible_duplicates"], json!([]));
    // revocation
    let (st, v) = call("DELETE", &format!("{}/v1/subscribers/alice/templates", s.base), Some(API_KEY), None);
    assert_eq!((st, v["deleted_templates"].clone()), (200, json!(1)));
}

fn hostile(s: &Server) {
    let f = new_session(s, "order-h", "carol");
    let good = result(&f, 3, 0.95);
    let id = f.config["session_id"].as_str().unwrap().to_string();
    let base = &s.base;
    let mut cases: Vec<(&str, String, u16, &str)> = Vec::new();
    // forged signature: a changed score under the original signature
    let signed = f.key.sign(good.clone()).unwrap();
    let mut forged = signed.clone();
    forged.result.match_score = 0.99;
    cases.push(("forged signature", forged.to_json().unwrap(), 401, "bad_signature"));
    // signed by another session's key
    let other = new_session(s, "order-h2", "dave");
    let mut r = good.clone();
    r.device_public_key = other.key.public_key_hex();
    cases.push(("another session's key", other.key.sign(r).unwrap().to_json().unwrap(), 401, "wrong_device_key"));
    let mut r = good.clone();
    r.nonce = "00".repeat(32);
    cases.push(("wrong nonce", f.key.sign(r).unwrap().to_json().unwrap(), 400, "wrong_nonce"));
    let mut r = good.clone();
    r.models.insert("mobilefacenet".into(), "0".repeat(64));
    cases.push(("wrong model hash", f.key.sign(r).unwrap().to_json().unwrap(), 400, "unknown_model"));
    let mut r = good.clone();
    r.active_liveness.track = synthetic_track(&[Step::TurnRight, Step::TurnLeft, Step::TurnRight]).into_iter().take(10).collect();
    cases.push(("track not performing the seed", f.key.sign(r).unwrap().to_json().unwrap(), 422, "challenge_mismatch"));
    let mut r = good.clone();
    r.active_liveness.steps = vec![Step::Blink];
    cases.push(("steps not from the seed", f.key.sign(r).unwrap().to_json().unwrap(), 422, "challenge_mismatch"));
    let mut r = good.clone();
    r.match_score = 1.5;
    cases.push(("score out of range", f.key.sign(r).unwrap().to_json().unwrap(), 400, "score_out_of_range"));
    let mut r = good.clone();
    r.screen_grid = Some(80.0);
    cases.push(("screen cue out of range", f.key.sign(r).unwrap().to_json().unwrap(), 400, "score_out_of_range"));
    let wire = signed.to_json().unwrap();
    cases.push(("truncated JSON", wire[..wire.len() / 2].to_string(), 400, "malformed_result"));
    cases.push(("not JSON", "hello".into(), 400, "malformed_result"));
    let mut v: Value = serde_json::from_str(&wire).unwrap();
    v["result"]["embedding"] = json!([0.1, 0.2, 0.3]);
    cases.push(("raw embedding field", v.to_string(), 400, "malformed_result"));
    let mut v: Value = serde_json::from_str(&wire).unwrap();
    v["image"] = json!("data:image/jpeg;base64,/9j/4AAQ");
    cases.push(("image field", v.to_string(), 400, "malformed_result"));
    let mut r = good.clone();
    r.session_id = "x'; DROP TABLE sessions; --".into();
    cases.push(("SQL metacharacters", f.key.sign(r).unwrap().to_json().unwrap(), 400, "session_mismatch"));
    for (what, body, status, reason) in &cases {
        let (st, ans) = call("POST", &format!("{base}/v1/sessions/{id}/result"), None, Some(body));
        assert_eq!((st, ans["error"].as_str().unwrap_or("")), (*status, *reason), "{what}: {ans}");
        assert_eq!(record(s, &f)["state"], "open", "{what} wrote something");
    }
    // oversized body: announced by Content-Length, refused before it is read
    assert_eq!(oversized_status(base, &format!("/v1/sessions/{id}/result"), 400 * 1024), 413);
    // unknown session, SQL in path and fields
    let (st, ans) = call("POST", &format!("{base}/v1/sessions/nope'%20OR%20'1'='1/result"), None, Some(&wire));
    assert_eq!((st, ans["error"].clone()), (404, json!("unknown_session")));
    let (st, ans) = call("POST", &format!("{base}/v1/sessions"), Some(API_KEY), Some(&json!({"order_id": "o'; DELETE FROM sessions; --", "subscriber_id": "\" OR 1=1"}).to_string()));
    assert_eq!(st, 201, "SQL metacharacters are data: {ans}");
    let (st, ans) = call("POST", &format!("{base}/v1/sessions"), Some(API_KEY), Some(r#"{"order_id":"o","subscriber_id":"s","photo":"x"}"#));
    assert_eq!((st, ans["error"].clone()), (400, json!("malformed_request")));
    // missing and wrong API key
    let (st, ans) = call("POST", &format!("{base}/v1/sessions"), None, Some(r#"{"order_id":"o","subscriber_id":"s"}"#));
    assert_eq!((st, ans["error"].clone()), (401, json!("missing_api_key")));
    let (st, ans) = call("GET", &format!("{base}/v1/sessions/{id}"), Some("wrong-key-wrong-key"), None);
    assert_eq!((st, ans["error"].clone()), (401, json!("wrong_api_key")));
    // the genuine result is accepted once; its replay is refused
    let (st, ans) = submit(s, &f, &wire);
    assert_eq!((st, ans["decision"].clone()), (200, json!("pass")), "{ans}");
    let (st, ans) = submit(s, &f, &wire);
    assert_eq!((st, ans["error"].clone()), (409, json!("replayed_nonce")));
    // a second device key cannot be registered
    let (st, _) = call("POST", &format!("{base}/v1/sessions/{}/device-key", other.config["session_id"].as_str().unwrap()), None, Some(&json!({"public_key": DeviceKey::from_seed([9; 32]).public_key_hex()}).to_string()));
    assert_eq!(st, 409);
    // expired session (TTL 3 s in these tests)
    let e = new_session(s, "order-e", "erin");
    std::thread::sleep(Duration::from_millis(3200));
    let (st, ans) = submit(s, &e, &e.key.sign(result(&e, 4, 0.9)).unwrap().to_json().unwrap());
    assert_eq!((st, ans["error"].clone()), (410, json!("session_expired")));
}

/// Several server processes on one database: a template stored through
/// one is a duplicate candidate in the other's next search, and a
/// revocation through one is seen by the other (each keeps its search
/// index in memory and catches up from the database's change log).
fn two_servers_share_the_template_store(a: &Server, tag: &str) {
    let b = start(Some(&a.db), &format!("{tag}-second"));
    let pass = |s: &Server, order: &str, subscriber: &str| {
        let f = new_session(s, order, subscriber);
        let (st, ans) = submit(s, &f, &f.key.sign(result(&f, 7, 0.95)).unwrap().to_json().unwrap());
        assert_eq!((st, ans["decision"].clone()), (200, json!("pass")), "{ans}");
        record(s, &f)["possible_duplicates"].as_array().unwrap().iter().map(|c| c["subscriber_id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(pass(a, "two-1", "victor"), Vec::<String>::new());
    assert_eq!(pass(&b, "two-2", "wendy"), ["victor"], "the second server sees the first one's template");
    let (st, v) = call("DELETE", &format!("{}/v1/subscribers/victor/templates", a.base), Some(API_KEY), None);
    assert_eq!((st, v["deleted_templates"].clone()), (200, json!(1)));
    assert_eq!(pass(&b, "two-3", "xena"), ["wendy"], "the revocation through the first server reaches the second");
    // and a server started now loads the same store
    let c = start(Some(&a.db), &format!("{tag}-third"));
    let mut found = pass(&c, "two-4", "yusuf");
    found.sort();
    assert_eq!(found, ["wendy", "xena"]);
}

/// One face registered for two subscribers at the same moment, through
/// `a` and `b` (the same server or two on one database), in `rounds`
/// rounds: each search runs before the other's template is stored, yet the
/// later of the two must list the earlier as a candidate (the check after
/// storing, `api::decide_result`), and only that one: faces `first_face..`
/// must be new to the store. Returns the rounds in which neither did.
fn simultaneous_registrations_find_each_other(a: &Server, b: &Server, tag: &str, first_face: u8, rounds: u8) -> Vec<u8> {
    let mut missed = Vec::new();
    for round in 0..rounds {
        let face = first_face + round;
        let flows = [(a, new_session(a, &format!("{tag}-race-{round}-a"), &format!("{tag}-racer-{round}-a"))), (b, new_session(b, &format!("{tag}-race-{round}-b"), &format!("{tag}-racer-{round}-b")))];
        let wires: Vec<String> = flows.iter().map(|(_, f)| f.key.sign(result(f, face, 0.95)).unwrap().to_json().unwrap()).collect();
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            for ((s, f), wire) in flows.iter().zip(&wires) {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    let (st, ans) = submit(s, f, wire);
                    assert_eq!((st, ans["decision"].clone()), (200, json!("pass")), "{ans}");
                });
            }
        });
        let listed = |(s, f): &(&Server, Flow)| record(s, f)["possible_duplicates"].as_array().unwrap().len();
        let found: Vec<usize> = flows.iter().map(listed).collect();
        assert!(found.iter().all(|&n| n <= 1), "round {round}: {found:?}");
        if found == [0, 0] {
            missed.push(round);
        }
    }
    missed
}

/// A server for the simultaneous-request tests: attempt limits of 2
/// sessions per order and 3 per subscriber a day (and no per-address limit
/// in the way: every request comes from 127.0.0.1).
fn start_for_races(db: Option<&str>, tag: &str) -> Server {
    start_with(db, tag, &["--max-sessions-per-order", "2", "--max-sessions-per-subscriber-per-day", "3", "--rate-limit-per-minute", "100000"])
}

/// Sessions requested at the same moment, alternately through `a` and `b`:
/// 12 for one order (each for another subscriber), then 12 for one
/// subscriber (each for another order). The attempt limits must hold as
/// they do one request at a time: (sessions created for the order, for the
/// subscriber); every other request is refused with `too_many_attempts`.
fn simultaneous_sessions_within_limits(a: &Server, b: &Server, tag: &str) -> (usize, usize) {
    let burst = |requests: Vec<(String, String)>| {
        let start = std::sync::Barrier::new(requests.len());
        let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
            let handles: Vec<_> = requests
                .iter()
                .enumerate()
                .map(|(i, (order, subscriber))| {
                    let (start, base) = (&start, if i % 2 == 0 { &a.base } else { &b.base });
                    scope.spawn(move || {
                        start.wait();
                        call("POST", &format!("{base}/v1/sessions"), Some(API_KEY), Some(&json!({"order_id": order, "subscriber_id": subscriber}).to_string()))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (st, v) in &answers {
            assert!(*st == 201 || (*st == 429 && v["error"] == "too_many_attempts"), "{st} {v}");
        }
        answers.iter().filter(|(st, _)| *st == 201).count()
    };
    let for_order = burst((0..12).map(|i| (format!("{tag}-burst-order"), format!("{tag}-burst-{i}"))).collect());
    let for_subscriber = burst((0..12).map(|i| (format!("{tag}-burst-{i}"), format!("{tag}-burst-subscriber"))).collect());
    (for_order, for_subscriber)
}

/// The per-session lock on refused submissions (5, the default) counts the
/// refusals of every server on the database: five spread over `a` and `b`
/// lock the session through both, even for a genuine result (counted per
/// process, each would have seen 2 or 3 and accepted it).
fn refusals_lock_a_session_through_every_server(a: &Server, b: &Server, tag: &str) {
    let f = new_session(a, &format!("{tag}-refused"), &format!("{tag}-refused"));
    let good = f.key.sign(result(&f, 7, 0.95)).unwrap().to_json().unwrap();
    for i in 0..5 {
        assert_eq!(submit(if i % 2 == 0 { a } else { b }, &f, "{\"result\":").0, 400);
    }
    for s in [a, b] {
        let (st, ans) = submit(s, &f, &good);
        assert_eq!((st, ans["error"].clone()), (429, json!("too_many_attempts")), "through {}", s.base);
    }
    assert_eq!(record(a, &f)["state"], "open");
}

#[test]
fn sqlite_simultaneous_registrations_of_one_face_are_flagged() {
    let s = start_for_races(None, "sqlite-race");
    assert_eq!(simultaneous_registrations_find_each_other(&s, &s, "sqlite", 100, 20), Vec::<u8>::new(), "rounds in which neither registration saw the other");
    assert_eq!(simultaneous_sessions_within_limits(&s, &s, "sqlite"), (2, 3), "sessions created for one order, for one subscriber");
    // and two server processes on the one SQLite file
    let t = start_for_races(Some(&s.db), "sqlite-race-second");
    assert_eq!(simultaneous_registrations_find_each_other(&s, &t, "sqlite2", 130, 20), Vec::<u8>::new(), "two servers: rounds in which neither registration saw the other");
    assert_eq!(simultaneous_sessions_within_limits(&s, &t, "sqlite2"), (2, 3), "two servers: sessions created for one order, for one subscriber");
    refusals_lock_a_session_through_every_server(&s, &t, "sqlite2");
}

#[test]
fn sqlite_flow_duplicates_and_hostile_input() {
    let s = start(None, "sqlite");
    flow_and_duplicates(&s);
    hostile(&s);
    two_servers_share_the_template_store(&s, "sqlite");
}

/// Behind a reverse proxy every request's TCP peer is the proxy: with the
/// proxy trusted, the per-address limit counts the client its
/// X-Forwarded-For names, so one customer's retries do not lock out the
/// others; without it, the header is ignored (a client cannot pick a new
/// address per request to escape the limit).
#[test]
fn per_address_limit_behind_a_trusted_proxy() {
    let device_key = |s: &Server, forwarded_for: &str| -> u16 {
        let req = ureq::post(&format!("{}/v1/sessions/none/device-key", s.base)).set("content-type", "application/json").set("x-forwarded-for", forwarded_for);
        match req.send_string(r#"{"public_key":"00"}"#) {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(st, _)) => st,
            Err(e) => panic!("{e}"),
        }
    };
    let proxied = start_with(None, "proxied", &["--rate-limit-per-minute", "3", "--trusted-proxies", "192.0.2.0/24,127.0.0.1"]);
    let statuses: Vec<u16> = (0..4).map(|_| device_key(&proxied, "198.51.100.1")).collect();
    assert!(statuses[..3].iter().all(|&st| st != 429) && statuses[3] == 429, "one customer through the proxy: {statuses:?}");
    assert_ne!(device_key(&proxied, "198.51.100.2"), 429, "another customer through the same proxy");
    assert_eq!(device_key(&proxied, "198.51.100.2, 198.51.100.1"), 429, "the client's own entry left of the proxy's is not read");
    let direct = start_with(None, "direct", &["--rate-limit-per-minute", "3"]);
    let statuses: Vec<u16> = (0..4).map(|i| device_key(&direct, &format!("198.51.100.{i}"))).collect();
    assert_eq!(statuses[3], 429, "no trusted proxy: the header is ignored: {statuses:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_facegate-server")).args(["--trusted-proxies", "proxy.local", "--db", ":memory:"]).env("FACEGATE_API_KEY", API_KEY).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("proxy.local"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Databases from before templates were stored as bytes: the JSON rows of
/// the old `templates` table move into the new one at start, and still
/// take part in the duplicate check.
#[test]
fn templates_stored_as_json_text_are_migrated() {
    let s = start(None, "migrate");
    let f = new_session(&s, "mig-1", "old-alice");
    let path = s.db.clone();
    let dir = s._dir.clone();
    drop(s);
    let sql = |q: &str| {
        let out = Command::new("sqlite3").arg(&path).arg(q).output().expect("sqlite3 runs");
        assert!(out.status.success(), "{q}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // the template old-alice's earlier verification stored, as the old schema kept it
    let storage = facegate::template::StorageKey::from_hex(&sql("SELECT value FROM settings WHERE name = 'storage_key'")).unwrap();
    let transform = TransformKey::from_hex(f.config["transform_key"].as_str().unwrap(), 256).unwrap();
    let sealed = serde_json::to_string(&storage.seal(&transform.protect(&embedding(11)).unwrap()).unwrap()).unwrap();
    sql("CREATE TABLE templates (session_id TEXT PRIMARY KEY, subscriber_id TEXT NOT NULL, template TEXT NOT NULL, created_ms BIGINT NOT NULL)");
    sql(&format!("INSERT INTO templates VALUES ('old-session', 'old-alice', '{sealed}', 1)"));
    let s = start_with(Some(&path), "migrate-again", &["--session-ttl", "600"]);
    assert_eq!(sql("SELECT COUNT(*) FROM sqlite_master WHERE name = 'templates'"), "0", "the old table is gone");
    assert_eq!(sql("SELECT subscriber_id || ' ' || length(bits) FROM face_templates"), "old-alice 256");
    let g = new_session(&s, "mig-2", "new-bob");
    let (st, _) = submit(&s, &g, &g.key.sign(result(&g, 11, 0.95)).unwrap().to_json().unwrap());
    assert_eq!(st, 200);
    assert_eq!(record(&s, &g)["possible_duplicates"][0]["subscriber_id"], "old-alice");
    // a row that does not parse stops the server instead of being dropped
    drop(s);
    sql("CREATE TABLE templates (session_id TEXT PRIMARY KEY, subscriber_id TEXT NOT NULL, template TEXT NOT NULL, created_ms BIGINT NOT NULL)");
    sql("INSERT INTO templates VALUES ('bad-session', 'bad', 'not json', 1)");
    let out = Command::new(env!("CARGO_BIN_EXE_facegate-server")).args(["--addr", "127.0.0.1:0", "--db", &path]).env("FACEGATE_API_KEY", API_KEY).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad-session"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sql("SELECT COUNT(*) FROM templates"), "1", "nothing was lost");
    let _ = std::fs::remove_dir_all(dir);
}

/// A bulk load into the store while a server runs (more changes than one
/// catch-up reads): its next search reads the store whole and finds a
/// duplicate among them.
#[test]
fn a_running_server_picks_up_a_bulk_load() {
    let s = start_with(None, "bulk", &["--session-ttl", "600", "--sweep-interval", "3600"]);
    let f = new_session(&s, "bulk-0", "bulk-first");
    let (st, _) = submit(&s, &f, &f.key.sign(result(&f, 21, 0.95)).unwrap().to_json().unwrap());
    assert_eq!(st, 200);
    let sql = |q: &str| {
        let out = Command::new("sqlite3").arg(&s.db).arg(q).output().expect("sqlite3 runs");
        assert!(out.status.success(), "{q}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // 25,000 unrelated templates under the server's keys, then one of face 22
    let (transform_key_id, storage_key_id) = (sql("SELECT transform_key_id FROM face_templates"), sql("SELECT storage_key_id FROM face_templates"));
    let storage = facegate::template::StorageKey::from_hex(&sql("SELECT value FROM settings WHERE name = 'storage_key'")).unwrap();
    let transform = TransformKey::from_hex(f.config["transform_key"].as_str().unwrap(), 256).unwrap();
    let face22 = storage.seal(&transform.protect(&embedding(22)).unwrap()).unwrap().bits;
    sql(&format!(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 25001)
         INSERT INTO face_templates SELECT i, 'bulk-s' || i, 'bulk-sub-' || i, '{scheme}', '{transform_key_id}', '{storage_key_id}', randomblob(256), 0 FROM n;
         INSERT INTO face_templates VALUES (25002, 'bulk-s', 'bulk-alice', '{scheme}', '{transform_key_id}', '{storage_key_id}', X'{face22}', 0);
         UPDATE template_seq SET last = 25002;
         COMMIT;",
        scheme = facegate::template::SCHEME
    ));
    let g = new_session(&s, "bulk-1", "bulk-bob");
    let (st, _) = submit(&s, &g, &g.key.sign(result(&g, 22, 0.95)).unwrap().to_json().unwrap());
    assert_eq!(st, 200);
    assert_eq!(record(&s, &g)["possible_duplicates"], json!([{"subscriber_id": "bulk-alice", "rank": 1, "score_band": "far1e-7"}]));
}

/// The same suites on PostgreSQL: `cargo xtask test` starts a throwaway
/// server from Debian's packages and names its database in
/// FACEGATE_TEST_POSTGRES_URL.
#[test]
fn postgres_flow_duplicates_and_hostile_input() {
    let url = std::env::var("FACEGATE_TEST_POSTGRES_URL")
        .expect("FACEGATE_TEST_POSTGRES_URL must name an empty PostgreSQL database (cargo xtask test starts one)");
    let s = start(Some(&url), "pg");
    flow_and_duplicates(&s);
    hostile(&s);
    two_servers_share_the_template_store(&s, "pg");
}

/// `n` server processes started at the same moment on one new database:
/// every one must come up (the migrations and the first keys made once)
/// and all must use the same transform key, or templates made through one
/// would never match those of another.
fn started_at_once_agree(db: &str, tag: &str, n: usize) {
    let start_all = std::sync::Barrier::new(n);
    let servers: Vec<Server> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let start_all = &start_all;
                scope.spawn(move || {
                    start_all.wait();
                    start(Some(db), &format!("{tag}-{i}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("every server starts")).collect()
    });
    let keys: Vec<Value> = servers.iter().enumerate().map(|(i, s)| new_session(s, &format!("{tag}-order-{i}"), &format!("{tag}-sub-{i}")).config["transform_key"].clone()).collect();
    assert!(keys.iter().all(|k| k.is_string() && *k == keys[0]), "{keys:?}");
}

#[test]
fn sqlite_servers_started_at_once_on_a_new_database_agree() {
    let dir = std::env::temp_dir().join(format!("facegate-at-once-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    started_at_once_agree(dir.join("new.db").to_str().unwrap(), "sqlite-at-once", 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// On PostgreSQL concurrent `CREATE TABLE IF NOT EXISTS` statements collide
/// (2 of 3 such starts failed before the migrations took a lock).
#[test]
fn postgres_servers_started_at_once_on_a_new_database_agree() {
    let url = std::env::var("FACEGATE_TEST_POSTGRES_URL")
        .expect("FACEGATE_TEST_POSTGRES_URL must name an empty PostgreSQL database (cargo xtask test starts one)");
    let name = format!("facegate_at_once_{}", std::process::id());
    let out = Command::new("psql").args([url.as_str(), "-qc", &format!("CREATE DATABASE {name}")]).output().expect("psql runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (base, _) = url.rsplit_once('/').unwrap();
    started_at_once_agree(&format!("{base}/{name}"), "pg-at-once", 3);
}

/// Two server processes on one PostgreSQL database, the same face
/// registered through each at the same moment, and sessions requested
/// through both at once.
#[test]
fn postgres_simultaneous_registrations_on_two_servers_are_flagged() {
    let url = std::env::var("FACEGATE_TEST_POSTGRES_URL")
        .expect("FACEGATE_TEST_POSTGRES_URL must name an empty PostgreSQL database (cargo xtask test starts one)");
    let (a, b) = (start_for_races(Some(&url), "pg-race-a"), start_for_races(Some(&url), "pg-race-b"));
    assert_eq!(simultaneous_registrations_find_each_other(&a, &b, "pg", 100, 20), Vec::<u8>::new(), "rounds in which neither registration saw the other");
    assert_eq!(simultaneous_sessions_within_limits(&a, &b, "pg"), (2, 3), "sessions created for one order, for one subscriber");
    refusals_lock_a_session_through_every_server(&a, &b, "pg");
}

/// The stored templates partitioned across PostgreSQL servers with
/// postgres_fdw (server/sql/postgres-shards.sql): `cargo xtask test` starts
/// a coordinator and two shards and describes them in FACEGATE_TEST_SHARDS.
/// A duplicate stored on any shard is found, by a server that loaded the
/// store through the shards; with a shard down a server does not start, and
/// one that must catch up refuses to decide instead of answering "no
/// duplicate", and decides once the shard is back.
#[test]
fn postgres_shards_find_duplicates_on_every_shard_and_fail_clearly_without_one() {
    let spec: Value = serde_json::from_str(&std::env::var("FACEGATE_TEST_SHARDS").expect("FACEGATE_TEST_SHARDS must describe a sharded PostgreSQL store (cargo xtask test makes one)")).unwrap();
    let coordinator = spec["coordinator"].as_str().unwrap();
    let psql = |url: &str, q: &str| {
        let out = Command::new("psql").args([url, "-Atc", q]).output().expect("psql runs");
        assert!(out.status.success(), "{q}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let shell = |what: &str| assert!(Command::new("sh").args(["-c", spec[what].as_str().unwrap()]).status().unwrap().success(), "{what}");
    let pass = |s: &Server, order: &str, subscriber: &str, face: u8| {
        let f = new_session(s, order, subscriber);
        let (st, ans) = submit(s, &f, &f.key.sign(result(&f, face, 0.95)).unwrap().to_json().unwrap());
        assert_eq!((st, ans["decision"].clone()), (200, json!("pass")), "{ans}");
        record(s, &f)["possible_duplicates"].as_array().unwrap().iter().map(|c| c["subscriber_id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    // no periodic sync (the sweeper) during the test: server a must lag behind on purpose
    let settings = ["--session-ttl", "600", "--sweep-interval", "3600"];
    let a = start_with(Some(coordinator), "shards-a", &settings);
    for i in 0..8u8 {
        assert!(pass(&a, &format!("shard-o{i}"), &format!("shard-sub-{i}"), 40 + i).is_empty());
    }
    // the templates are on the shards, some on each
    let per_shard: Vec<usize> = spec["shards"].as_array().unwrap().iter().map(|u| psql(u.as_str().unwrap(), "SELECT COUNT(*) FROM face_templates").parse().unwrap()).collect();
    assert!(per_shard.iter().all(|&n| n > 0) && per_shard.iter().sum::<usize>() == 8, "{per_shard:?}");
    // a server that loads the store through the shards finds each duplicate
    let b = start_with(Some(coordinator), "shards-b", &settings);
    for i in 0..8u8 {
        assert_eq!(pass(&b, &format!("shard-d{i}"), &format!("shard-dup-{i}"), 40 + i), [format!("shard-sub-{i}")]);
    }
    // a server that loaded the whole store is up to date: with a shard down
    // its search needs no shard, but storing a template routed to that shard
    // fails, and it says so (503, nothing decided) rather than a bare 500
    let c = start_with(Some(coordinator), "shards-c", &settings);
    let last_shard = spec["shards"].as_array().unwrap().last().unwrap().as_str().unwrap();
    let on_last = psql(last_shard, "SELECT subscriber_id FROM face_templates ORDER BY subscriber_id LIMIT 1");
    let again = new_session(&c, "shard-again", &on_last);
    let again_wire = again.key.sign(result(&again, 60, 0.95)).unwrap().to_json().unwrap();
    shell("stop_last");
    let (st, ans) = submit(&c, &again, &again_wire);
    assert_eq!((st, ans["error"].clone()), (503, json!("storage_unavailable")), "{ans}");
    assert_eq!(record(&c, &again)["state"], "open", "nothing was decided");
    // a server cannot load an incomplete store
    let out = Command::new(env!("CARGO_BIN_EXE_facegate-server")).args(["--addr", "127.0.0.1:0", "--db", coordinator]).env("FACEGATE_API_KEY", API_KEY).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loading the stored templates"), "{}", String::from_utf8_lossy(&out.stderr));
    // server a has not seen b's templates: it must read them, cannot, and refuses to decide
    let f = new_session(&a, "shard-late", "shard-late");
    let wire = f.key.sign(result(&f, 40, 0.95)).unwrap().to_json().unwrap();
    let (st, ans) = submit(&a, &f, &wire);
    assert_eq!((st, ans["error"].clone()), (503, json!("template_store_unavailable")), "{ans}");
    assert_eq!(record(&a, &f)["state"], "open", "nothing was decided");
    // with the shard back the same result is decided, with its duplicates
    shell("start_last");
    let (st, ans) = submit(&a, &f, &wire);
    assert_eq!((st, ans["decision"].clone()), (200, json!("pass")), "{ans}");
    let mut found: Vec<String> = record(&a, &f)["possible_duplicates"].as_array().unwrap().iter().map(|c| c["subscriber_id"].as_str().unwrap().to_string()).collect();
    found.sort();
    assert_eq!(found, ["shard-dup-0", "shard-sub-0"]);
    // and the result refused while the shard was down is decided now
    let (st, ans) = submit(&c, &again, &again_wire);
    assert_eq!((st, ans["decision"].clone()), (200, json!("pass")), "{ans}");
}

/// Checks `v` against a JSON Schema subset used by openapi.json: $ref,
/// type (or a list of types), required, properties, additionalProperties
/// (false or a schema), items, enum. Returns what does not match.
fn schema_errors(spec: &Value, schema: &Value, v: &Value, at: &str) -> Vec<String> {
    if let Some(r) = schema["$ref"].as_str() {
        let target = r.trim_start_matches("#/").split('/').fold(spec, |node, part| &node[part]);
        return schema_errors(spec, target, v, at);
    }
    let mut errors = Vec::new();
    let type_of = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let allowed: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let actual = type_of(v);
    if !allowed.is_empty() && !allowed.iter().any(|t| *t == actual || (*t == "number" && actual == "integer")) {
        errors.push(format!("{at}: {actual} is not {allowed:?}"));
        return errors;
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(v) {
            errors.push(format!("{at}: {v} not in {options:?}"));
        }
    }
    if let Value::Object(map) = v {
        for r in schema["required"].as_array().into_iter().flatten() {
            if !map.contains_key(r.as_str().unwrap()) {
                errors.push(format!("{at}: missing {r}"));
            }
        }
        for (k, x) in map {
            match (&schema["properties"][k], &schema["additionalProperties"]) {
                (Value::Null, Value::Bool(false)) => errors.push(format!("{at}: undocumented field {k}")),
                (Value::Null, extra @ Value::Object(_)) => errors.extend(schema_errors(spec, extra, x, &format!("{at}.{k}"))),
                (Value::Null, _) => {}
                (p, _) => errors.extend(schema_errors(spec, p, x, &format!("{at}.{k}"))),
            }
        }
    }
    if let (Value::Array(items), s @ Value::Object(_)) = (v, &schema["items"]) {
        for (i, x) in items.iter().enumerate() {
            errors.extend(schema_errors(spec, s, x, &format!("{at}[{i}]")));
        }
    }
    errors
}

/// The OpenAPI document served at /openapi.json describes exactly the routes
/// the router has, and every answer of a scripted tour (successes and
/// refusals) has a documented status and matches its documented schema.
#[test]
fn openapi_document_matches_the_server() {
    let carrier = facegate::escrow::EscrowKeyPair::generate();
    let s = start_with(None, "openapi", &["--demo", "--escrow-public-key", &carrier.public_hex()]);
    let (st, spec) = call("GET", &format!("{}/openapi.json", s.base), None, None);
    assert_eq!(st, 200);
    assert_eq!(spec["openapi"], "3.1.0");

    // the routes in the source are the paths in the document
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api.rs")).unwrap();
    let mut routes = std::collections::BTreeSet::new();
    for part in source.split(".route(\"").skip(1) {
        let path = part.split('"').next().unwrap();
        // the method routers of this route: to the end of its line (a route
        // may chain several, as `get(a).delete(b)`)
        let handlers = part.lines().next().unwrap_or("");
        for method in ["get", "post", "delete", "put", "patch"] {
            if handlers.contains(&format!("{method}(")) {
                routes.insert((method.to_string(), path.to_string()));
            }
        }
    }
    let documented: std::collections::BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.clone(), path.clone())))
        .collect();
    assert!(routes.len() >= 8, "route scan found only {routes:?}");
    assert_eq!(routes, documented, "router and openapi.json disagree");

    // a tour through every endpoint; each answer is checked against the document
    let check = |method: &str, template: &str, status: u16, body: &Value| {
        let op = &spec["paths"][template][method.to_lowercase()];
        let response = &op["responses"][status.to_string()];
        assert!(!response.is_null(), "{method} {template} answered undocumented status {status}: {body}");
        let response = match response["$ref"].as_str() {
            Some(r) => r.trim_start_matches("#/").split('/').fold(&spec, |node, part| &node[part]),
            None => response,
        };
        let schema = &response["content"]["application/json"]["schema"];
        if !schema.is_null() {
            let errors = schema_errors(&spec, schema, body, "$");
            assert!(errors.is_empty(), "{method} {template} {status}: {errors:?} in {body}");
        }
    };
    let b = &s.base;
    let tour = |method: &str, template: &str, path: &str, key: Option<&str>, body: Option<&str>| {
        let (st, v) = call(method, &format!("{b}{path}"), key, body);
        check(method, template, st, &v);
        (st, v)
    };
    let (st, created) = tour("POST", "/v1/sessions", "/v1/sessions", Some(API_KEY), Some(r#"{"order_id":"o-api","subscriber_id":"carol"}"#));
    assert_eq!(st, 201);
    tour("POST", "/v1/sessions", "/v1/sessions", None, Some(r#"{"order_id":"o","subscriber_id":"c"}"#));
    tour("POST", "/v1/sessions", "/v1/sessions", Some(API_KEY), Some(r#"{"order_id":"o","subscriber_id":"c","image":"x"}"#));
    let id = created["session_id"].as_str().unwrap().to_string();
    let key = DeviceKey::from_seed(rand32());
    let (st, reg) = tour("POST", "/v1/sessions/{id}/device-key", &format!("/v1/sessions/{id}/device-key"), None, Some(&json!({"public_key": key.public_key_hex()}).to_string()));
    assert_eq!(st, 200);
    tour("POST", "/v1/sessions/{id}/device-key", &format!("/v1/sessions/{id}/device-key"), None, Some(&json!({"public_key": key.public_key_hex()}).to_string()));
    tour("POST", "/v1/sessions/{id}/device-key", "/v1/sessions/nope/device-key", None, Some(&json!({"public_key": key.public_key_hex()}).to_string()));
    let f = Flow { session: created.clone(), config: reg["session_config"].clone(), key };
    let mut with_evidence = result(&f, 7, 0.95);
    let package = facegate::escrow::EvidencePackage::new(&with_evidence.session_id, &[], &with_evidence.active_liveness.track).unwrap();
    with_evidence.evidence = Some(package.seal(&carrier.public_hex()).unwrap());
    let wire = f.key.sign(with_evidence).unwrap().to_json().unwrap();
    tour("POST", "/v1/sessions/{id}/result", &format!("/v1/sessions/{id}/result"), None, Some("{\"result\":"));
    let (st, _) = tour("POST", "/v1/sessions/{id}/result", &format!("/v1/sessions/{id}/result"), None, Some(&wire));
    assert_eq!(st, 200);
    tour("POST", "/v1/sessions/{id}/result", &format!("/v1/sessions/{id}/result"), None, Some(&wire));
    tour("GET", "/v1/sessions/{id}", &format!("/v1/sessions/{id}"), Some(API_KEY), None);
    tour("GET", "/v1/sessions/{id}", "/v1/sessions/nope", Some(API_KEY), None);
    tour("GET", "/v1/sessions/{id}", &format!("/v1/sessions/{id}"), Some("wrong-key-wrong-key"), None);
    // the same face as another subscriber: a record with a duplicate candidate
    let g = new_session(&s, "o-api-2", "dave");
    assert_eq!(submit(&s, &g, &g.key.sign(result(&g, 7, 0.95)).unwrap().to_json().unwrap()).0, 200);
    let gid = g.config["session_id"].as_str().unwrap();
    let (_, dup) = tour("GET", "/v1/sessions/{id}", &format!("/v1/sessions/{gid}"), Some(API_KEY), None);
    assert_eq!(dup["possible_duplicates"][0]["subscriber_id"], "carol");
    let evidence = format!("/v1/sessions/{id}/evidence");
    assert_eq!(tour("GET", "/v1/sessions/{id}/evidence", &evidence, Some(API_KEY), None).0, 200);
    tour("GET", "/v1/sessions/{id}/evidence", &evidence, None, None);
    assert_eq!(tour("DELETE", "/v1/sessions/{id}/evidence", &evidence, Some(API_KEY), None).0, 200);
    assert_eq!(tour("GET", "/v1/sessions/{id}/evidence", &evidence, Some(API_KEY), None).0, 404);
    tour("DELETE", "/v1/sessions/{id}/evidence", &evidence, None, None);
    tour("DELETE", "/v1/subscribers/{id}/templates", "/v1/subscribers/carol/templates", Some(API_KEY), None);
    tour("DELETE", "/v1/subscribers/{id}/templates", "/v1/subscribers/carol/templates", None, None);
    let (st, order) = tour("POST", "/demo/orders", "/demo/orders", None, Some(r#"{"plan":"basic"}"#));
    assert_eq!(st, 201);
    tour("POST", "/demo/orders", "/demo/orders", None, Some(r#"{"plan":"basic","photo":"x"}"#));
    let demo_id = order["session_id"].as_str().unwrap();
    tour("GET", "/demo/orders/{id}", &format!("/demo/orders/{demo_id}"), None, None);
    tour("GET", "/demo/orders/{id}", "/demo/orders/nope", None, None);
    assert_eq!(oversized_status(b, "/v1/sessions", 300 * 1024), 413);
    check("POST", "/v1/sessions", 413, &Value::Null);
}

/// Without --demo the demo back end does not exist.
#[test]
fn demo_routes_are_off_by_default() {
    let s = start(None, "nodemo");
    let (st, _) = call("POST", &format!("{}/demo/orders", s.base), None, Some(r#"{"plan":"basic"}"#));
    assert_eq!(st, 404);
}

/// Like `call`, but a dead server is an answer (None), not a panic.
fn try_call(method: &str, url: &str, body: &str) -> Option<(u16, Value)> {
    let res = ureq::request(method, url).set("content-type", "application/json").timeout(Duration::from_secs(10)).send_string(body);
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(_) => return None,
    };
    let status = resp.status();
    Some((status, serde_json::from_str(&resp.into_string().ok()?).ok()?))
}

/// SIGKILL in the middle of a stream of accepted results: after a restart on
/// the same database, every result that was answered "pass" is stored with
/// its template, and no session is half-written (decided without its
/// template, or a template without a decision).
#[test]
fn results_answered_pass_survive_sigkill() {
    let dir = std::env::temp_dir().join(format!("facegate-durability-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("durable.db").display().to_string();
    let durable = ["--session-ttl", "600", "--max-failed-submissions", "100"];
    let mut s = start_with(Some(&db), "durability", &durable);
    let n = 60;
    let flows: Vec<Flow> = (0..n).map(|i| new_session(&s, &format!("dur-order-{i}"), &format!("dur-sub-{i}"))).collect();
    let wires: Vec<(String, String)> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| (f.config["session_id"].as_str().unwrap().to_string(), f.key.sign(result(f, 10 + i as u8, 0.95)).unwrap().to_json().unwrap()))
        .collect();
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(usize, Option<(u16, Value)>)>::new()));
    let streamer = {
        let answers = answers.clone();
        let base = s.base.clone();
        std::thread::spawn(move || {
            for (i, (id, wire)) in wires.iter().enumerate() {
                let a = try_call("POST", &format!("{base}/v1/sessions/{id}/result"), wire);
                let dead = a.is_none();
                answers.lock().unwrap().push((i, a));
                if dead {
                    break;
                }
            }
        })
    };
    while answers.lock().unwrap().len() < n / 3 {
        std::thread::sleep(Duration::from_millis(2));
    }
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    streamer.join().unwrap();
    let answered: Vec<(usize, Option<(u16, Value)>)> = answers.lock().unwrap().clone();
    let passes: Vec<usize> = answered.iter().filter(|(_, a)| matches!(a, Some((200, v)) if v["decision"] == "pass")).map(|(i, _)| *i).collect();
    assert!(passes.len() >= n / 3, "{} passes before the kill", passes.len());
    assert!(passes.len() < n, "the kill came after the whole stream; nothing was interrupted");

    let s = start_with(Some(&db), "durability-restart", &durable);
    for (i, f) in flows.iter().enumerate() {
        let rec = record(&s, f);
        let (st, del) = call("DELETE", &format!("{}/v1/subscribers/dur-sub-{i}/templates", s.base), Some(API_KEY), None);
        assert_eq!(st, 200);
        let templates = del["deleted_templates"].as_i64().unwrap();
        if passes.contains(&i) {
            assert_eq!((rec["decision"].as_str(), templates), (Some("pass"), 1), "session {i} answered pass: {rec}");
        }
        match rec["state"].as_str().unwrap() {
            "decided" => assert_eq!(templates, i64::from(rec["decision"] == "pass"), "session {i}: {rec}"),
            "open" => assert_eq!((rec["decision"].clone(), templates), (Value::Null, 0), "session {i} half-written: {rec}"),
            other => panic!("session {i} in state {other}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Attempt limits per order, per subscriber, per client address and per
/// session (refused submissions), the nonce-expiry sweep, and settings from
/// a configuration file.
#[test]
fn limits_sweeping_and_config_file() {
    let dir = std::env::temp_dir().join(format!("facegate-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("facegate.toml");
    std::fs::write(&config, "max_sessions_per_order = 2\nmax_sessions_per_subscriber_per_day = 3\nrate_limit_per_minute = 40\nsweep_interval = 1\nmatch_threshold = \"far1e-4\"\nduplicate_threshold = 0.999\n").unwrap();
    let s = start_with(None, "limits", &["--config", config.to_str().unwrap(), "--session-ttl", "3"]);
    let b = &s.base;
    let create = |order: &str, sub: &str| call("POST", &format!("{b}/v1/sessions"), Some(API_KEY), Some(&json!({"order_id": order, "subscriber_id": sub}).to_string()));
    // thresholds by operating-point name or as a calibrated score
    let (st, created) = create("lim-o0", "lim-z");
    assert_eq!(st, 201);
    let embedder = facegate::embed::config(facegate::embed::DEFAULT_EMBEDDER).unwrap();
    let far_1e4 = embedder.operating_points.iter().find(|p| p.name == "far1e-4").unwrap().score;
    assert!((created["policy"]["match_threshold"].as_f64().unwrap() - far_1e4 as f64).abs() < 1e-6, "{created}");
    assert!((created["policy"]["duplicate_threshold"].as_f64().unwrap() - 0.999).abs() < 1e-6, "{created}");
    // per order (from the file: 2)
    assert_eq!(create("lim-o1", "lim-a").0, 201);
    assert_eq!(create("lim-o1", "lim-b").0, 201);
    let (st, ans) = create("lim-o1", "lim-c");
    assert_eq!((st, ans["error"].clone()), (429, json!("too_many_attempts")));
    // per subscriber per day (from the file: 3), across orders
    assert_eq!(create("lim-o2", "lim-a").0, 201);
    assert_eq!(create("lim-o3", "lim-a").0, 201);
    let (st, ans) = create("lim-o4", "lim-a");
    assert_eq!((st, ans["error"].clone(), ans["message"].as_str().unwrap().contains("subscriber")), (429, json!("too_many_attempts"), true));

    // per session: five refused submissions lock it, even for a genuine result
    let f = new_session(&s, "lim-o5", "lim-d");
    let good = f.key.sign(result(&f, 5, 0.95)).unwrap().to_json().unwrap();
    for _ in 0..5 {
        assert_eq!(submit(&s, &f, "{\"result\":").0, 400);
    }
    let (st, ans) = submit(&s, &f, &good);
    assert_eq!((st, ans["error"].clone()), (429, json!("too_many_attempts")));
    assert_eq!(record(&s, &f)["state"], "open");

    // the sweep marks sessions past their expiry (TTL 3 s, sweep every 1 s)
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(record(&s, &f)["state"], "expired");
    let (st, ans) = submit(&s, &f, &good);
    assert!(st == 410 || st == 429, "{st} {ans}");

    // per client address (from the file: 40 per minute on browser routes)
    let mut statuses = Vec::new();
    for _ in 0..45 {
        statuses.push(call("POST", &format!("{b}/v1/sessions/none/device-key"), None, Some(r#"{"public_key":"00"}"#)));
    }
    let limited = statuses.iter().filter(|(st, v)| *st == 429 && v["error"] == "rate_limited").count();
    assert!(limited >= 5, "{limited} of 45 limited");
    // the carrier's own API (with its key) is not limited per address
    assert_eq!(call("GET", &format!("{b}/v1/sessions/{}", f.config["session_id"].as_str().unwrap()), Some(API_KEY), None).0, 200);

    // an operating point that does not exist is refused at start, with the names that do
    let out = Command::new(env!("CARGO_BIN_EXE_facegate-server")).args(["--match-threshold", "far1e-9", "--db", dir.join("y.db").to_str().unwrap()]).env("FACEGATE_API_KEY", API_KEY).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("far1e-3"), "{}", String::from_utf8_lossy(&out.stderr));

    // the 1:N point from the store's size: FAR x population <= 0.1
    let far_1e7 = embedder.duplicate_points.iter().find(|p| p.name == "far1e-7").unwrap().score;
    let sized = start_with(Some(dir.join("sized.db").to_str().unwrap()), "limits-sized", &["--duplicate-population", "1000000"]);
    let (st, created) = call("POST", &format!("{}/v1/sessions", sized.base), Some(API_KEY), Some(&json!({"order_id": "sized", "subscriber_id": "sized"}).to_string()));
    assert_eq!(st, 201);
    assert!((created["policy"]["duplicate_threshold"].as_f64().unwrap() - far_1e7 as f64).abs() < 1e-6, "{created}");
    drop(sized);
    let out = Command::new(env!("CARGO_BIN_EXE_facegate-server")).args(["--duplicate-population", "50000000", "--db", dir.join("z.db").to_str().unwrap()]).env("FACEGATE_API_KEY", API_KEY).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("set duplicate_threshold yourself"), "{}", String::from_utf8_lossy(&out.stderr));

    // a configuration file with an unknown setting is refused at start
    std::fs::write(&config, "max_sessions_per_order = 2\nimage_upload = true\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_facegate-server")).args(["--config", config.to_str().unwrap(), "--db", dir.join("x.db").to_str().unwrap()]).env("FACEGATE_API_KEY", API_KEY).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("image_upload"), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Evidence escrow is opt-in per deployment: without an escrow key a result
/// carrying evidence is refused and nothing is written; with one, the
/// envelope is stored sealed (the server cannot open it), the carrier reads
/// and opens it with its offline key, deletes it, and the sweeper deletes
/// what is past the retention period.
#[test]
fn evidence_escrow_is_opt_in_sealed_and_expires() {
    use facegate::escrow::{EscrowKeyPair, EvidencePackage};
    let carrier = EscrowKeyPair::generate();
    let photo = facegate::image_io::read_image_file(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/faces/obama.jpg")).unwrap();
    let with_evidence = |f: &Flow, key_hex: &str| {
        let mut r = result(f, 7, 0.92);
        let package = EvidencePackage::new(&r.session_id, &[("live", &photo)], &r.active_liveness.track).unwrap();
        r.evidence = Some(package.seal(key_hex).unwrap());
        f.key.sign(r).unwrap().to_json().unwrap()
    };

    // escrow off
    let off = start(None, "escrow-off");
    let f = new_session(&off, "esc-o1", "esc-a");
    let (st, ans) = submit(&off, &f, &with_evidence(&f, &carrier.public_hex()));
    assert_eq!((st, ans["error"].clone()), (400, json!("escrow_not_enabled")));
    assert_eq!(record(&off, &f)["state"], "open", "nothing written");
    assert_eq!(record(&off, &f)["evidence_sealed"], false);

    // escrow on, short retention to see the sweeper work
    let on = start_with(None, "escrow-on", &["--escrow-public-key", &carrier.public_hex(), "--escrow-retention", "3", "--sweep-interval", "1"]);
    // sealed to another key: refused, nothing written
    let f = new_session(&on, "esc-o2", "esc-b");
    let (st, ans) = submit(&on, &f, &with_evidence(&f, &EscrowKeyPair::generate().public_hex()));
    assert_eq!((st, ans["error"].clone()), (400, json!("invalid_evidence")));
    assert_eq!(record(&on, &f)["state"], "open");
    // sealed to the deployment's key: stored with the decision
    let (st, ans) = submit(&on, &f, &with_evidence(&f, &carrier.public_hex()));
    assert_eq!((st, ans["decision"].clone()), (200, json!("pass")), "{ans}");
    assert_eq!(record(&on, &f)["evidence_sealed"], true);
    let id = f.config["session_id"].as_str().unwrap();
    let url = format!("{}/v1/sessions/{id}/evidence", on.base);
    assert_eq!(call("GET", &url, None, None).0, 401, "the carrier's API key is needed");
    let (st, v) = call("GET", &url, Some(API_KEY), None);
    assert_eq!(st, 200, "{v}");
    let sealed: facegate::escrow::SealedEvidence = serde_json::from_value(v["sealed"].clone()).unwrap();
    let opened = carrier.open(&sealed).unwrap();
    assert_eq!(opened.session_id, id);
    assert_eq!(opened.crops.len(), 1);
    assert!(EscrowKeyPair::generate().open(&sealed).is_err(), "only the carrier's key opens it");
    // the carrier deletes it
    assert_eq!(call("DELETE", &url, Some(API_KEY), None), (200, json!({"deleted_evidence": 1})));
    assert_eq!(call("GET", &url, Some(API_KEY), None).0, 404);

    // retention: another envelope is gone after 3 s
    let g = new_session(&on, "esc-o3", "esc-c");
    assert_eq!(submit(&on, &g, &with_evidence(&g, &carrier.public_hex())).0, 200);
    assert_eq!(record(&on, &g)["evidence_sealed"], true);
    std::thread::sleep(Duration::from_millis(5000));
    assert_eq!(record(&on, &g)["evidence_sealed"], false, "swept after the retention period");
}
