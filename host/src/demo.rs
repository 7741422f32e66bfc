//! `edgeward demo`: an API that requires a key, an agent that calls it, and
//! the proof that the agent never saw the key.

use crate::embedded;
use anyhow::Context as _;
use bytes::Bytes;
use edgeward_core::config::Config;
use edgeward_core::digest::ComponentDigest;
use edgeward_core::redact::Redactor;
use edgeward_runtime::TaskReport;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const GRANT: &str = "demo-api";

pub async fn run(component: &[u8]) -> anyhow::Result<ExitCode> {
    // A fresh key per run, known only to the demo upstream and the backend.
    let key = format!("demo_live_{}", hex::encode(rand::random::<[u8; 16]>()));
    // A fresh, unguessable directory, created (not reused) with owner-only
    // access: nothing another user planted can be followed.
    let dir = std::env::temp_dir().join(format!(
        "edgeward-demo-{}",
        hex::encode(rand::random::<[u8; 12]>())
    ));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(&dir)
        .context("cannot create the demo's temp dir")?;
    let key_file = dir.join("api-key");
    write_private(&key_file, key.as_bytes())?;

    let upstream = DemoUpstream::start(key.clone()).await?;
    let origin = format!("http://{}", upstream.addr);
    let digest = ComponentDigest::of(component);
    let config_text = format!(
        r#"
[[grant]]
name = "{GRANT}"
origin = "{origin}"
methods = ["GET"]
path_prefixes = ["/v1/"]
credential = {{ kind = "header", name = "x-api-key" }}
secret = {{ file = "{}" }}

[[agent]]
name = "hello"
owner = "demo@edgeward.invalid"
digests = ["{digest}"]
grants = ["{GRANT}"]
limits = {{ memory_mib = 32, task_timeout_ms = 10000 }}
"#,
        key_file.display()
    );
    let config = Config::parse(&config_text).context("demo config")?;
    let result = run_tasks(&config, component, &origin, &key, &upstream).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_tasks(
    config: &Config,
    component: &[u8],
    origin: &str,
    key: &str,
    upstream: &DemoUpstream,
) -> anyhow::Result<ExitCode> {
    let agent = &config.agents[0];
    let instance = embedded::start(config, agent, component, None, &Default::default()).await?;
    println!("edgeward demo (embedded mode)");
    println!("  upstream  {origin}  requires header x-api-key, and carelessly echoes it back");
    println!(
        "  agent     hello  {}  instance {} (attested with an in-process device key)",
        ComponentDigest::of(component),
        instance.identity().instance_id
    );
    println!("  grant     {GRANT}: GET {origin}/v1/*, key injected by the backend");
    println!();

    let tasks = [
        (
            "an allowed call",
            format!("{origin}/v1/forecast?city=Paris"),
        ),
        (
            "a path the grant does not cover",
            format!("{origin}/admin/keys"),
        ),
        (
            "an origin with no grant",
            "http://127.0.0.2:9/v1/forecast".to_owned(),
        ),
    ];
    let guard = Redactor::new([key.as_bytes()])?;
    let mut leaked = false;
    for (i, (what, task)) in tasks.iter().enumerate() {
        println!("{}. {what}: GET {task}", i + 1);
        let report = instance.run(task).await;
        leaked |= print_task(&report, &guard);
        println!();
    }
    let seen = upstream.authenticated.load(Ordering::Relaxed);
    println!("proof:");
    println!(
        "  the upstream accepted the key on {seen} request(s): the agent's call was authenticated"
    );
    println!(
        "  the key, raw or base64/hex/percent/JSON-encoded, in anything the agent saw (results, logs): {}",
        if leaked { "FOUND (bug!)" } else { "nowhere" }
    );
    println!(
        "  the agent's component never held it: it was attached by the backend, outside the sandbox"
    );
    Ok(if leaked || seen == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Print one task's report; returns whether the key leaked into it.
fn print_task(report: &TaskReport, guard: &Redactor) -> bool {
    let mut leaked = false;
    for record in &report.logs {
        leaked |= guard.contains_secret(record.message.as_bytes());
        println!(
            "   agent log: {}",
            embedded::without_controls(&record.message)
        );
    }
    match &report.outcome {
        Ok(Ok(result)) => {
            leaked |= guard.contains_secret(result.as_bytes());
            println!("   result:    {result}");
        }
        Ok(Err(message)) => {
            leaked |= guard.contains_secret(message.as_bytes());
            println!("   agent error: {message}");
        }
        Err(e) => println!("   stopped by the sandbox: {e}"),
    }
    leaked
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

/// A tiny API on loopback that demands `x-api-key` and echoes it back in its
/// response (as a careless or compromised upstream might).
struct DemoUpstream {
    addr: std::net::SocketAddr,
    authenticated: Arc<AtomicUsize>,
}

impl DemoUpstream {
    async fn start(key: String) -> anyhow::Result<DemoUpstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let authenticated = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&authenticated);
        let key = Arc::new(key);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let key = Arc::clone(&key);
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let key = Arc::clone(&key);
                        let counter = Arc::clone(&counter);
                        async move { Ok::<_, std::convert::Infallible>(answer(&req, &key, &counter)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(DemoUpstream {
            addr,
            authenticated,
        })
    }
}

fn answer(
    req: &hyper::Request<hyper::body::Incoming>,
    key: &str,
    counter: &AtomicUsize,
) -> hyper::Response<Full<Bytes>> {
    let presented = req.headers().get("x-api-key").map(|v| v.as_bytes());
    let (status, body) = if presented != Some(key.as_bytes()) {
        (
            401,
            serde_json::json!({ "error": "missing or wrong API key" }),
        )
    } else {
        counter.fetch_add(1, Ordering::Relaxed);
        let city = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("city=")))
            .unwrap_or("nowhere");
        (
            200,
            serde_json::json!({
                "city": city,
                "forecast": "sunny",
                "temperature_c": 21,
                "debug": { "you_sent_x_api_key": key }
            }),
        )
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    response
}
