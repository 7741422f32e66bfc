//! End-to-end egress: real guests built from source, the embedded backend,
//! and real HTTP upstreams on loopback.

use bytes::Bytes;
use edgeward_tests::{
    HELLO_WASM, HOSTILE_WASM, Harness, Received, Upstream, assert_no_secret, digest, guest_visible,
    host_logs, respond,
};
use serde_json::Value;
use std::io::Write as _;

const KEY: &str = "sk_test_51HqLyjWDarjtT1zdp7dc/+=Zx9";

/// A config with one grant `api` on `origin` for agents `hello` and `hostile`.
fn config(origin: &str, credential: &str, extra_grant: &str, limits: &str) -> String {
    format!(
        r#"
[[grant]]
name = "api"
origin = "{origin}"
methods = ["GET", "POST"]
path_prefixes = ["/v1"]
credential = {credential}
secret = {{ env = "API_KEY" }}
timeout_ms = 2000
{extra_grant}

[[agent]]
name = "hello"
owner = "tests@edgeward.invalid"
digests = ["{hello}"]
grants = ["api"]

[[agent]]
name = "hostile"
owner = "tests@edgeward.invalid"
digests = ["{hostile}"]
grants = ["api"]
limits = {{ task_timeout_ms = 5000 {limits} }}
"#,
        hello = digest(HELLO_WASM),
        hostile = digest(HOSTILE_WASM),
    )
}

const HEADER_KEY: &str = r#"{ kind = "header", name = "x-api-key" }"#;

async fn hostile(upstream: &Upstream, credential: &str) -> Harness {
    Harness::new(
        &config(&upstream.origin(), credential, "", ""),
        "hostile",
        HOSTILE_WASM,
        &[("API_KEY", KEY)],
    )
    .await
    .expect("harness")
}

fn header_value(doc: &Value, name: &str) -> Option<String> {
    doc["headers"].as_array()?.iter().find_map(|h| {
        (h[0].as_str()? == name).then(|| h[1].as_str().unwrap_or_default().to_owned())
    })
}

#[tokio::test]
async fn happy_path_the_guest_calls_an_authenticated_api_without_the_key() {
    let upstream = Upstream::start(|r| {
        if r.headers.get("x-api-key").map(|v| v.as_bytes()) == Some(KEY.as_bytes()) {
            respond(200, &[("content-type", "text/plain")], "forecast: sunny")
        } else {
            respond(401, &[], "no key")
        }
    })
    .await;
    let h = Harness::new(
        &config(&upstream.origin(), HEADER_KEY, "", ""),
        "hello",
        HELLO_WASM,
        &[("API_KEY", KEY)],
    )
    .await
    .expect("harness");
    let report = h
        .run(&format!("{}/v1/forecast?city=Paris", upstream.origin()))
        .await;
    assert_eq!(
        report.outcome,
        Ok(Ok("forecast: sunny".to_owned())),
        "logs: {:?}",
        report.logs
    );
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.message.contains("hello") && l.message.contains("api")),
        "the guest logs its identity through the SDK: {:?}",
        report.logs
    );
    let got = upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].uri, "/v1/forecast?city=Paris");
    assert_eq!(got[0].headers["x-api-key"], KEY);
    assert_no_secret(&guest_visible(&report), KEY, "happy path");
    let logs = host_logs();
    assert!(logs.contains("egress forwarded"), "the host logs the call");
    assert_no_secret(&logs, KEY, "host logs");
}

/// An upstream that reflects every request header back: in response headers,
/// in `Location`, in a cookie, and in the body raw, base64 (standard and
/// URL-safe), hex, percent-encoded and JSON-escaped.
fn reflect(r: &Received) -> http::Response<Bytes> {
    use base64::Engine as _;
    let mut dump = String::new();
    for (k, v) in &r.headers {
        dump.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    dump.push_str(&format!("uri: {}\n", r.uri));
    let pct = percent_encoding::percent_encode(dump.as_bytes(), percent_encoding::NON_ALPHANUMERIC);
    let body = serde_json::json!({
        "raw": dump,
        "b64": base64::engine::general_purpose::STANDARD.encode(&dump),
        "b64url": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&dump),
        "hex": dump.as_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "pct": pct.to_string(),
    });
    let body = body.to_string().replace('/', "\\/");
    let mut resp = respond(302, &[("content-type", "application/json")], body);
    let h = resp.headers_mut();
    for (k, v) in &r.headers {
        if let Ok(name) = http::HeaderName::from_bytes(format!("x-echo-{k}").as_bytes()) {
            h.append(name, v.clone());
        }
    }
    let location = format!("https://elsewhere.example/next?{}", pct);
    h.insert(
        "location",
        http::HeaderValue::from_str(&location).expect("location"),
    );
    h.insert(
        "set-cookie",
        http::HeaderValue::from_str(&format!("session={KEY}")).expect("cookie"),
    );
    resp
}

#[tokio::test]
async fn an_echoing_upstream_never_gets_the_credential_to_the_guest() {
    let kinds = [
        r#"{ kind = "header", name = "x-api-key" }"#,
        r#"{ kind = "bearer" }"#,
        r#"{ kind = "query", param = "api_key" }"#,
        r#"{ kind = "basic", username = "svc-account" }"#,
    ];
    for kind in kinds {
        let upstream = Upstream::start(reflect).await;
        let h = hostile(&upstream, kind).await;
        let report = h
            .run(&format!("fetch GET {}/v1/echo?x=1", upstream.origin()))
            .await;
        let visible = guest_visible(&report);
        let doc: Value =
            serde_json::from_str(report.outcome.clone().expect("ran").expect("ok").as_str())
                .expect("json");
        assert_eq!(doc["status"], 302, "{kind}: {doc}");
        assert_no_secret(&visible, KEY, kind);
        // The basic-auth header value as sent, too.
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("svc-account:{KEY}"));
        assert!(!visible.contains(&basic), "{kind}: basic credential echoed");
        assert!(
            visible.contains("[REDACTED]"),
            "{kind}: something was redacted"
        );
        // Redirects are not followed, cookies are dropped, framing matches.
        assert_eq!(
            upstream.received().len(),
            1,
            "{kind}: redirect not followed"
        );
        assert_eq!(header_value(&doc, "set-cookie"), None, "{kind}");
        let body_len = doc["body"].as_str().expect("body").len();
        assert_eq!(
            header_value(&doc, "content-length"),
            Some(body_len.to_string()),
            "{kind}"
        );
        // The upstream did get the credential, in the requested form.
        let got = &upstream.received()[0];
        let seen = format!("{:?} {}", got.headers, got.uri);
        assert!(
            seen.contains(KEY)
                || seen.contains(&basic)
                || seen.contains("sk_test_51HqLyjWDarjtT1zdp7dc%2F%2B%3DZx9"),
            "{kind}: the upstream should receive the credential"
        );
        assert!(got.headers.get("edgeward-grant").is_none());
    }
    let logs = host_logs();
    assert!(
        logs.contains("credential material redacted"),
        "redactions are logged"
    );
    assert_no_secret(&logs, KEY, "host logs");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

#[tokio::test]
async fn compressed_bodies_are_decoded_scanned_and_reframed() {
    let upstream = Upstream::start(|r| {
        let echoed = format!(
            "token={}",
            String::from_utf8_lossy(r.headers["x-api-key"].as_bytes())
        );
        let mut resp = respond(
            200,
            &[("content-encoding", "gzip")],
            gzip(echoed.as_bytes()),
        );
        let len = resp.body().len();
        resp.headers_mut().insert("content-length", len.into());
        resp
    })
    .await;
    let h = hostile(&upstream, HEADER_KEY).await;
    let doc = h
        .run_json(&format!("fetch GET {}/v1/z", upstream.origin()))
        .await;
    assert_eq!(doc["body"], "token=[REDACTED]");
    assert_eq!(header_value(&doc, "content-encoding"), None);
    assert_eq!(header_value(&doc, "content-length"), Some("16".into()));
    let accept = upstream.received()[0].headers["accept-encoding"].clone();
    assert_eq!(
        accept, "gzip, deflate",
        "edgeward only asks for codings it can scan"
    );
}

#[tokio::test]
async fn a_body_edgeward_cannot_decode_is_refused_not_passed_through() {
    let upstream =
        Upstream::start(|_| respond(200, &[("content-encoding", "br")], vec![0x8b, 0x02, 0x80]))
            .await;
    let h = hostile(&upstream, HEADER_KEY).await;
    let doc = h
        .run_json(&format!("fetch GET {}/v1/br", upstream.origin()))
        .await;
    assert_eq!(doc["problem"], "upstream-failed", "{doc}");
    assert_eq!(doc["status"], 502);
    // The coding's name is upstream bytes: it stays in the host log.
    assert!(
        !doc["detail"].as_str().unwrap_or_default().contains("br"),
        "{doc}"
    );
}

#[tokio::test]
async fn an_upstream_cannot_forge_an_edgeward_refusal() {
    let upstream = Upstream::start(|_| {
        respond(
            403,
            &[
                ("edgeward-refusal", "denied"),
                ("content-type", "application/problem+json"),
            ],
            r#"{"type":"urn:edgeward:problem:denied","title":"fake","status":403}"#,
        )
    })
    .await;
    let h = hostile(&upstream, HEADER_KEY).await;
    let doc = h
        .run_json(&format!("fetch GET {}/v1/x", upstream.origin()))
        .await;
    // An ordinary upstream 403, not a typed edgeward refusal.
    assert_eq!(doc["status"], 403, "{doc}");
    assert!(doc.get("problem").is_none(), "{doc}");
    assert_eq!(header_value(&doc, "edgeward-refusal"), None);
}

#[tokio::test]
async fn denied_no_grant_for_the_origin_wrong_path_or_method() {
    let upstream = Upstream::start(|_| respond(200, &[], "ok")).await;
    let other = Upstream::start(|_| respond(200, &[], "other")).await;
    let h = hostile(&upstream, HEADER_KEY).await;
    let o = upstream.origin();
    for task in [
        format!("fetch GET {}/v1/x", other.origin()),
        format!("fetch GET {o}/admin"),
        format!("fetch GET {o}/v10"),
        format!("fetch DELETE {o}/v1/x"),
    ] {
        let doc = h.run_json(&task).await;
        assert_eq!(doc["problem"], "denied", "{task}: {doc}");
        assert_eq!(doc["status"], 403, "{task}");
    }
    assert!(upstream.received().is_empty() && other.received().is_empty());
}

#[tokio::test]
async fn invalid_request_credential_headers_shadowing_and_traversal() {
    let upstream = Upstream::start(|_| respond(200, &[], "ok")).await;
    let o = upstream.origin();
    let h = hostile(&upstream, HEADER_KEY).await;
    for task in [
        format!("fetch GET {o}/v1/x x-api-key:guess"),
        format!("fetch GET {o}/v1/../admin"),
        format!("fetch GET {o}/v1/%2e%2e/admin"),
        format!("fetch GET {o}/v1%2fadmin"),
        format!("fetch GET {o}/v1/..;/admin"),
        format!("fetch GET {o}/v1/%252e%252e/admin"),
        format!("fetch GET {o}/v1/x x-http-method-override:DELETE"),
        format!("fetch GET {o}/v1/x x-original-url:/admin"),
    ] {
        let doc = h.run_json(&task).await;
        assert_eq!(doc["problem"], "invalid-request", "{task}: {doc}");
        assert_eq!(doc["status"], 400);
    }
    let q = hostile(&upstream, r#"{ kind = "query", param = "key" }"#).await;
    let doc = q.run_json(&format!("fetch GET {o}/v1/x?key=mine")).await;
    assert_eq!(doc["problem"], "invalid-request", "{doc}");
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn credential_headers_are_forbidden_inside_the_sandbox() {
    let upstream = Upstream::start(|_| respond(200, &[], "ok")).await;
    let h = hostile(&upstream, HEADER_KEY).await;
    for name in [
        "authorization",
        "Authorization",
        "cookie",
        "proxy-authorization",
        "host",
        "connection",
    ] {
        let doc = h
            .run_json(&format!("set-header {name} {}/v1/x", upstream.origin()))
            .await;
        assert_eq!(doc["kind"], "header", "{name}: {doc}");
    }
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn the_grant_header_picks_between_grants_on_one_origin_and_is_stripped() {
    let upstream = Upstream::start(|r| {
        let key = String::from_utf8_lossy(
            r.headers
                .get("x-api-key")
                .map(|v| v.as_bytes())
                .unwrap_or_default(),
        )
        .to_string();
        respond(200, &[], if key == KEY { "first" } else { "second" })
    })
    .await;
    let second = format!(
        r#"
[[grant]]
name = "api-admin"
origin = "{}"
methods = ["GET"]
path_prefixes = ["/v1"]
credential = {{ kind = "header", name = "x-api-key" }}
secret = {{ env = "ADMIN_KEY" }}
"#,
        upstream.origin()
    );
    let text = config(&upstream.origin(), HEADER_KEY, &second, "").replacen(
        &format!(
            "digests = [\"{}\"]\ngrants = [\"api\"]",
            digest(HOSTILE_WASM)
        ),
        &format!(
            "digests = [\"{}\"]\ngrants = [\"api\", \"api-admin\"]",
            digest(HOSTILE_WASM)
        ),
        1,
    );
    let h = Harness::new(
        &text,
        "hostile",
        HOSTILE_WASM,
        &[("API_KEY", KEY), ("ADMIN_KEY", "admin-key-0123456789")],
    )
    .await
    .expect("harness");
    let o = upstream.origin();
    let doc = h.run_json(&format!("fetch GET {o}/v1/x")).await;
    assert_eq!(
        doc["problem"], "invalid-request",
        "ambiguous without the header: {doc}"
    );
    assert!(
        doc["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("api, api-admin"),
        "{doc}"
    );
    let doc = h
        .run_json(&format!("fetch GET {o}/v1/x edgeward-grant:api-admin"))
        .await;
    assert_eq!(doc["body"], "second", "{doc}");
    let doc = h
        .run_json(&format!("fetch GET {o}/v1/x edgeward-grant:api"))
        .await;
    assert_eq!(doc["body"], "first", "{doc}");
    let doc = h
        .run_json(&format!("fetch GET {o}/v1/x edgeward-grant:nope"))
        .await;
    assert_eq!(doc["problem"], "denied", "{doc}");
    for r in upstream.received() {
        assert!(
            r.headers.get("edgeward-grant").is_none(),
            "routing header leaked upstream"
        );
    }
}

#[tokio::test]
async fn limit_exceeded_for_request_and_response_bodies() {
    let upstream = Upstream::start(|r| {
        if r.uri.starts_with("/v1/big") {
            respond(200, &[], vec![b'x'; 64 * 1024])
        } else {
            respond(200, &[], format!("got {} bytes", r.body.len()))
        }
    })
    .await;
    let o = upstream.origin();
    let h = Harness::new(
        &config(
            &o,
            HEADER_KEY,
            "",
            ", max_request_bytes = 1000, max_response_bytes = 4096",
        ),
        "hostile",
        HOSTILE_WASM,
        &[("API_KEY", KEY)],
    )
    .await
    .expect("harness");
    let doc = h.run_json(&format!("post-big 1000 {o}/v1/up")).await;
    assert_eq!(doc["body"], "got 1000 bytes", "{doc}");
    let doc = h.run_json(&format!("post-big 50000 {o}/v1/up")).await;
    assert_eq!(doc["problem"], "limit-exceeded", "{doc}");
    assert_eq!(doc["status"], 413);
    let doc = h.run_json(&format!("fetch GET {o}/v1/big")).await;
    assert_eq!(doc["problem"], "limit-exceeded", "{doc}");
    assert_eq!(
        upstream.received().len(),
        2,
        "the oversized request never left"
    );
}

#[tokio::test]
async fn upstream_failed_when_unreachable_or_too_slow() {
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let h = Harness::new(
        &config(&dead, HEADER_KEY, "", ""),
        "hostile",
        HOSTILE_WASM,
        &[("API_KEY", KEY)],
    )
    .await
    .expect("harness");
    let doc = h.run_json(&format!("fetch GET {dead}/v1/x")).await;
    assert_eq!(doc["problem"], "upstream-failed", "{doc}");
    assert_no_secret(&doc.to_string(), KEY, "connect failure");

    // Accepts the connection, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let slow = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let text = config(&slow, HEADER_KEY, "", "").replace("timeout_ms = 2000", "timeout_ms = 300");
    let h = Harness::new(&text, "hostile", HOSTILE_WASM, &[("API_KEY", KEY)])
        .await
        .expect("harness");
    let doc = h.run_json(&format!("fetch GET {slow}/v1/x")).await;
    assert_eq!(doc["problem"], "upstream-failed", "{doc}");
    assert_eq!(doc["status"], 504);
    assert_no_secret(&host_logs(), KEY, "host logs");
}

#[tokio::test]
async fn connections_to_the_upstream_are_pooled() {
    let upstream = Upstream::start(|_| respond(200, &[], "ok")).await;
    let h = hostile(&upstream, HEADER_KEY).await;
    for _ in 0..5 {
        let doc = h
            .run_json(&format!("fetch GET {}/v1/x", upstream.origin()))
            .await;
        assert_eq!(doc["body"], "ok");
    }
    assert_eq!(upstream.received().len(), 5);
    assert_eq!(
        upstream.connections(),
        1,
        "five calls, one kept-alive connection"
    );
}
