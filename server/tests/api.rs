//! The real server binary on a loopback port with a real SQLite file (and
//! PostgreSQL when FACEGATE_TEST_POSTGRES_URL names one): the session flow,
//! signed results made by the core crate, and hostile input. Every refusal
//! must carry the right status and reason, and write nothing.

use facegate::challenge::{steps_for_seed, Step, TrackSample, verify_track};
use facegate::signed::{ActiveLiveness, ClientDecision, DeviceKey, VerificationResult, PROTOCOL_VERSION};
use facegate::template::TransformKey;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const API_KEY: &str = "test-api-key-0123456789";

struct Server {
    child: Child,
    base: String,
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

fn start(db: Option<&str>, tag: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("facegate-server-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = db.map(str::to_string).unwrap_or_else(|| dir.join("facegate.db").display().to_string());
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_facegate-server"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--db", &db, "--session-ttl", "3"])
        .env("FACEGATE_API_KEY", API_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Server { child, base, _dir: dir };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server did not listen");
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

/// A performer's track for the seed's steps (as the widget records it).
fn act(steps: &[Step]) -> Vec<TrackSample> {
    let mut track = Vec::new();
    let mut t = 0;
    let mut push = |yaw: f32, eyes: f32| {
        track.push(TrackSample { t_ms: t, yaw, pitch: 0.0, left_openness: eyes, right_openness: eyes });
        t += 66;
    };
    for _ in 0..5 {
        push(0.0, 0.9);
    }
    for step in steps {
        for i in 0..15 {
            let bump = 30.0 * (1.0 - (i as f32 - 7.0).abs() / 7.0);
            match step {
                Step::Blink => push(0.0, if (6..9).contains(&i) { 0.05 } else { 0.9 }),
                turn => push(bump * turn.yaw_direction(), 0.9),
            }
        }
    }
    track
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
    let track = act(&steps);
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
        active_liveness: ActiveLiveness { steps, transcript, track },
        models: ["yunet_s_320", "mobileface", "facemesh", "minifasnet_v2_2.7", "minifasnet_v1se_4.0"]
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
    assert_eq!(record(s, &g)["possible_duplicates"], json!(["alice"]));
    // a low match fails with a reason, and the browser gets no score
    let h = new_session(s, "order-3", "bob");
    let (st, ans) = submit(s, &h, &h.key.sign(result(&h, 2, 0.3)).unwrap().to_json().unwrap());
    assert_eq!((st, ans), (200, json!({"decision": "fail", "reason": "no_match"})));
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
    r.models.insert("mobileface".into(), "0".repeat(64));
    cases.push(("wrong model hash", f.key.sign(r).unwrap().to_json().unwrap(), 400, "unknown_model"));
    let mut r = good.clone();
    r.active_liveness.track = act(&[Step::TurnRight, Step::TurnLeft, Step::TurnRight]).into_iter().take(10).collect();
    cases.push(("track not performing the seed", f.key.sign(r).unwrap().to_json().unwrap(), 422, "challenge_mismatch"));
    let mut r = good.clone();
    r.active_liveness.steps = vec![Step::Blink];
    cases.push(("steps not from the seed", f.key.sign(r).unwrap().to_json().unwrap(), 422, "challenge_mismatch"));
    let mut r = good.clone();
    r.match_score = 1.5;
    cases.push(("score out of range", f.key.sign(r).unwrap().to_json().unwrap(), 400, "score_out_of_range"));
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

#[test]
fn sqlite_flow_duplicates_and_hostile_input() {
    let s = start(None, "sqlite");
    flow_and_duplicates(&s);
    hostile(&s);
}

/// Not yet run by `cargo xtask test` (which does not start PostgreSQL yet):
/// run by hand with FACEGATE_TEST_POSTGRES_URL=postgres://… cargo test -- --ignored
#[test]
#[ignore = "needs FACEGATE_TEST_POSTGRES_URL; xtask does not start PostgreSQL yet"]
fn postgres_flow_duplicates_and_hostile_input() {
    let url = std::env::var("FACEGATE_TEST_POSTGRES_URL").expect("FACEGATE_TEST_POSTGRES_URL");
    let s = start(Some(&url), "pg");
    flow_and_duplicates(&s);
    hostile(&s);
}
