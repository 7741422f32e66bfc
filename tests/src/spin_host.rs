//! A stand-in for `spin up`: serves one Spin HTTP component (spin-sdk 5,
//! `#[http_component]`, exporting `wasi:http/incoming-handler@0.2`) over
//! plain HTTP/1.1 on loopback, with the Spin host interfaces such a component
//! imports. No Spin runtime can be installed where the tests run, so this is
//! what the tests of `host/spin` talk to.
//!
//! 1. Describe the app as `spin.toml` and `spin up` would resolve it: a
//!    [`SpinApp`] with the component, its variables, the file behind the
//!    `default` database and its `allowed_outbound_hosts`.
//! 2. [`SpinServer::start`] compiles the component (once per process and
//!    path), binds `127.0.0.1:0` and serves on the current tokio runtime.
//! 3. Send requests to [`SpinServer::url`]; dropping the server stops it.
//!
//! ```no_run
//! # async fn demo(upstream: &str) -> anyhow::Result<()> {
//! use edgeward_tests::spin_host::{SpinApp, SpinServer};
//! let server = SpinServer::start(SpinApp {
//!     component: "target/wasm32-wasip2/release/app.wasm".into(),
//!     variables: [("signing_seed".to_owned(), "00".repeat(32))].into(),
//!     sqlite_path: std::env::temp_dir().join("app.db"),
//!     allowed_outbound_hosts: vec![upstream.to_owned()],
//! })
//! .await?;
//! println!("serving on {}", server.url());
//! assert_eq!(server.outbound_denied(), 0);
//! # Ok(()) }
//! ```
//!
//! What is emulated, as Spin 3 does it:
//! - one fresh instance (`Store`) per request, like `spin up` and
//!   `wasmtime serve`;
//! - `spin:sqlite/sqlite@3.0.0`: `open("default")` opens a new connection
//!   to [`SpinApp::sqlite_path`] (any other name is `no-such-database`);
//!   statements run off the async workers, as Spin's in-process sqlite does;
//! - `fermyon:spin/variables@2.0.0`: names are validated by Spin's rules
//!   (`invalid-name`), unknown names are `undefined`;
//! - `allowed_outbound_hosts` is enforced on every outgoing request
//!   (`error-code::http-request-denied`), and refusals are counted;
//! - the `spin-*` request headers Spin adds for a component routed at
//!   `/...` (`spin-full-url`, `spin-path-info`, `spin-client-addr`, ...).
//!
//! Non-goals: TLS (outgoing `https` requests fail with an `internal-error`
//! naming this limit), routing several components, the `self` outbound
//! host, key-value, other databases and Spin's other interfaces (a
//! component importing them fails in [`SpinServer::start`]), variable
//! providers and templates (values arrive resolved), and resource limits
//! beyond a per-request deadline.

mod bindings {
    //! The Spin interfaces: `tests/wit/spin` holds verbatim copies of
    //! spin-sdk 5.2's `spin-sqlite@3.0.0/sqlite.wit` and
    //! `spin@2.0.0/variables.wit`. The `wasi:*` imports come from
    //! wasmtime-wasi and wasmtime-wasi-http.
    wasmtime::component::bindgen!({
        path: "wit/spin",
        world: "edgeward:spin-host/host",
        // Statements may wait on the database lock: they run on a blocking
        // thread, awaited. A missing connection resource is a host fault (a
        // trap), never a WIT error.
        imports: {
            "spin:sqlite/sqlite": async | trappable,
            default: trappable,
        },
        with: {
            "spin:sqlite/sqlite.connection": super::SqliteConnection,
        },
    });

    pub(super) use fermyon::spin::variables;
    pub(super) use spin::sqlite::sqlite;
}

use anyhow::{Context as _, bail};
use bindings::{sqlite, variables};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

/// How long one request may run, guest and outgoing requests included: the
/// component may long-poll for about 30 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a connection to an upstream may take, unless the guest asks
/// for less.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `open` and each statement wait for a database lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a component's stderr kept (writes past it fail).
const STDERR_CAPACITY: usize = 1 << 20;
/// The one database label a Spin component gets without runtime config.
const DEFAULT_DATABASE: &str = "default";

/// A Spin application of one HTTP component, as `spin up` would run it.
#[derive(Debug, Clone)]
pub struct SpinApp {
    /// The `.wasm` component.
    pub component: PathBuf,
    /// Spin variable name -> value, as `spin up` would resolve them.
    pub variables: HashMap<String, String>,
    /// The file behind the `default` database (created if missing).
    pub sqlite_path: PathBuf,
    /// The component's `allowed_outbound_hosts`, as in `spin.toml`:
    /// `scheme://host[:port]`, with `*` for any scheme, host or port and
    /// `*.domain` for any subdomain; a missing port is the scheme's default.
    pub allowed_outbound_hosts: Vec<String>,
}

/// A running [`SpinApp`]. Dropping it stops accepting, closes its
/// connections and cancels requests still in the guest.
pub struct SpinServer {
    addr: SocketAddr,
    app: Arc<App>,
    accept: JoinHandle<()>,
}

impl SpinServer {
    /// Compile `app.component` (once per process and path), bind
    /// `127.0.0.1:0` and serve HTTP/1.1 on the current tokio runtime.
    pub async fn start(app: SpinApp) -> anyhow::Result<SpinServer> {
        let outbound = Outbound {
            allowed: app
                .allowed_outbound_hosts
                .iter()
                .map(|h| AllowedHost::parse(h))
                .collect::<anyhow::Result<_>>()?,
            denied: AtomicUsize::new(0),
        };
        for name in app.variables.keys() {
            if let Err(reason) = validate_variable_name(name) {
                bail!("variable {reason}");
            }
        }
        let component = app.component.clone();
        let pre = tokio::task::spawn_blocking(move || proxy_pre(&component))
            .await
            .context("compiling the component")??;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Arc::new(App {
            pre,
            addr,
            variables: app.variables,
            sqlite_path: app.sqlite_path,
            outbound: Arc::new(outbound),
            guests: Mutex::new(Vec::new()),
            read: Mutex::new(std::collections::BTreeSet::new()),
            stderr: wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(STDERR_CAPACITY),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&app)));
        Ok(SpinServer { addr, app, accept })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the component wrote to stderr so far (a guest panic's message,
    /// for instance), for tests to check and show.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.app.stderr.contents()).into_owned()
    }

    /// Every variable name the component asked for so far, defined or not.
    pub fn variables_read(&self) -> std::collections::BTreeSet<String> {
        lock(&self.app.read).clone()
    }

    /// How many outgoing requests `allowed_outbound_hosts` refused so far.
    pub fn outbound_denied(&self) -> usize {
        self.app.outbound.denied.load(Ordering::SeqCst)
    }
}

impl Drop for SpinServer {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a `JoinSet`): aborting
        // it closes them. Guests run in tasks of their own.
        self.accept.abort();
        for guest in lock(&self.app.guests).drain(..) {
            guest.abort();
        }
    }
}

/// What every request of one server shares.
struct App {
    pre: ProxyPre<SpinState>,
    addr: SocketAddr,
    variables: HashMap<String, String>,
    /// Names asked for (for the test comparing them with `spin.toml`).
    read: Mutex<std::collections::BTreeSet<String>>,
    sqlite_path: PathBuf,
    outbound: Arc<Outbound>,
    /// Guest tasks, so that dropping the server cancels them.
    guests: Mutex<Vec<AbortHandle>>,
    /// What the component wrote to stderr, every instance's: tests check
    /// that no secret went there.
    stderr: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
}

/// The process's engine: compiled components are only valid in the engine
/// that compiled them, and the cache below outlives every server.
fn engine() -> anyhow::Result<&'static Engine> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = wasmtime::Config::new();
            config.wasm_component_model(true);
            Engine::new(&config).map_err(|e| format!("{e:?}"))
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("wasmtime engine: {e}"))
}

/// The linked, pre-instantiated component at `path`, compiled once per
/// process: tests start many servers with the same component.
fn proxy_pre(path: &Path) -> anyhow::Result<ProxyPre<SpinState>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, ProxyPre<SpinState>>>> = OnceLock::new();
    let key = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
    // Held while compiling, so concurrent starts compile only once.
    let mut cache = lock(CACHE.get_or_init(Default::default));
    if let Some(pre) = cache.get(&key) {
        return Ok(pre.clone());
    }
    let engine = engine()?;
    let component = Component::from_file(engine, &key)
        .map_err(wt)
        .with_context(|| format!("compiling {}", key.display()))?;
    let mut linker = Linker::<SpinState>::new(engine);
    // Full WASI p2, as Spin links it; the context grants no authority.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wt)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(wt)?;
    sqlite::add_to_linker::<SpinState, HasSelf<SpinState>>(&mut linker, |s| s).map_err(wt)?;
    variables::add_to_linker::<SpinState, HasSelf<SpinState>>(&mut linker, |s| s).map_err(wt)?;
    let pre = linker
        .instantiate_pre(&component)
        .and_then(ProxyPre::new)
        .map_err(wt)
        .with_context(|| {
            format!(
                "linking {} (this test host provides WASI p2, wasi:http, \
                 spin:sqlite@3.0.0 and fermyon:spin/variables@2.0.0 only)",
                key.display()
            )
        })?;
    cache.insert(key, pre.clone());
    Ok(pre)
}

async fn accept_loop(listener: tokio::net::TcpListener, app: Arc<App>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    connections.spawn(serve_connection(stream, client, Arc::clone(&app)));
                }
                // Out of descriptors, say: back off, as a server would.
                Err(e) => {
                    eprintln!("spin_host: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, client: SocketAddr, app: Arc<App>) {
    let service = service_fn(move |req| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(serve_request(app, client, req).await) }
    });
    // A client closing mid-request is its business, not a test failure.
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// One request: a guest failure of any kind is a 500, as in Spin.
async fn serve_request(
    app: Arc<App>,
    client: SocketAddr,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<HyperOutgoingBody> {
    match run_guest(app, client, req).await {
        Ok(response) => response,
        Err(e) => {
            eprintln!("spin_host: request failed: {e:#}");
            let mut response = hyper::Response::new(
                Full::new(Bytes::from_static(b"Internal Server Error\n"))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

/// Instantiate the component in a fresh store and call its
/// `incoming-handler.handle`, as `wasmtime serve` does. The guest runs in a
/// task of its own, so it can keep writing the body after the head is sent.
async fn run_guest(
    app: Arc<App>,
    client: SocketAddr,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> anyhow::Result<hyper::Response<HyperOutgoingBody>> {
    add_spin_headers(&mut req, app.addr, client);
    let mut store = Store::new(app.pre.engine(), SpinState::new(&app));
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .map_err(wt)?;
    let out = store
        .data_mut()
        .http()
        .new_response_outparam(sender)
        .map_err(wt)?;
    let pre = app.pre.clone();
    let guest = tokio::spawn(async move {
        tokio::time::timeout(REQUEST_TIMEOUT, async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        })
        .await
    });
    {
        let mut guests = lock(&app.guests);
        guests.retain(|g| !g.is_finished());
        guests.push(guest.abort_handle());
    }
    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => bail!("the component set an error response: {code:?}"),
        // The store, and the sender with it, is gone: the guest returned,
        // trapped or ran out of time without a response.
        Err(_) => match guest.await {
            Ok(Ok(Ok(()))) => bail!("the component returned without setting a response"),
            Ok(Ok(Err(trap))) => Err(wt(trap).context("the component trapped")),
            Ok(Err(_elapsed)) => bail!("no response within {REQUEST_TIMEOUT:?}"),
            Err(e) => Err(anyhow::Error::new(e).context("the guest task ended")),
        },
    }
}

/// The headers Spin's HTTP trigger adds for a component routed at `/...`.
fn add_spin_headers(
    req: &mut hyper::Request<hyper::body::Incoming>,
    server: SocketAddr,
    client: SocketAddr,
) {
    let host = match req.headers().get(http::header::HOST) {
        Some(host) => String::from_utf8_lossy(host.as_bytes()).into_owned(),
        None => {
            // HTTP/1.0 without Host: wasi:http needs an authority.
            if let Ok(v) = http::HeaderValue::from_str(&server.to_string()) {
                req.headers_mut().insert(http::header::HOST, v);
            }
            server.to_string()
        }
    };
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let headers = [
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-path-info", req.uri().path().to_owned()),
        ("spin-matched-route", "/...".to_owned()),
        ("spin-raw-component-route", "/...".to_owned()),
        ("spin-component-route", String::new()),
        ("spin-base-path", "/".to_owned()),
        ("spin-client-addr", client.to_string()),
    ];
    for (name, value) in headers {
        // A value that is not a valid header (odd bytes in the Host the
        // client sent) is left out, not made up.
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            req.headers_mut().insert(name, value);
        }
    }
}

/// The state of one request's store.
struct SpinState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    app: Arc<App>,
}

impl SpinState {
    fn new(app: &Arc<App>) -> SpinState {
        // No preopens, env, args or sockets; stderr is kept (see
        // `SpinServer::stderr`), so tests can check it holds no secret.
        let wasi = WasiCtxBuilder::new()
            .stderr(app.stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        SpinState {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks {
                outbound: Arc::clone(&app.outbound),
            },
            app: Arc::clone(app),
        }
    }
}

impl WasiView for SpinState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for SpinState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

// ---- allowed_outbound_hosts ------------------------------------------------

/// The outgoing-request policy of one app.
struct Outbound {
    allowed: Vec<AllowedHost>,
    denied: AtomicUsize,
}

impl Outbound {
    fn allows(&self, uri: &http::Uri) -> bool {
        let Some(scheme) = uri.scheme_str() else {
            return false;
        };
        let scheme = scheme.to_ascii_lowercase();
        let (Some(host), Some(port)) =
            (uri.host(), uri.port_u16().or_else(|| default_port(&scheme)))
        else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        self.allowed
            .iter()
            .any(|allowed| allowed.matches(&scheme, &host, port))
    }
}

/// One `allowed_outbound_hosts` entry.
#[derive(Debug)]
struct AllowedHost {
    /// `None` for `*`.
    scheme: Option<String>,
    host: HostPattern,
    /// `None` for `*`.
    port: Option<u16>,
}

#[derive(Debug)]
enum HostPattern {
    Any,
    /// `*.example.com`: any subdomain, not `example.com` itself.
    SubdomainOf(String),
    Exact(String),
}

impl AllowedHost {
    fn parse(entry: &str) -> anyhow::Result<AllowedHost> {
        let bad = |why: &str| anyhow::anyhow!("allowed_outbound_hosts entry {entry:?}: {why}");
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host[:port]"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(bad("a path is not allowed"));
        }
        let scheme = scheme.to_ascii_lowercase();
        let (host, port) = match rest.rsplit_once(':') {
            // `[::1]` alone has colons but no port.
            Some((host, port)) if !port.ends_with(']') => (host, Some(port)),
            _ => (rest, None),
        };
        let host = host.to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host == "self" || host == "self.alt" {
            return Err(bad("`self` is not supported by this test host"));
        }
        let port = match port {
            Some("*") => None,
            Some(p) => Some(p.parse().map_err(|_| bad("bad port"))?),
            None => Some(
                default_port(&scheme).ok_or_else(|| bad("a port is required for this scheme"))?,
            ),
        };
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            HostPattern::SubdomainOf(domain.to_owned())
        } else if host.contains('*') {
            return Err(bad("`*` only as the whole host or as `*.domain`"));
        } else {
            HostPattern::Exact(host)
        };
        let scheme = (scheme != "*").then_some(scheme);
        Ok(AllowedHost { scheme, host, port })
    }

    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::SubdomainOf(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            HostPattern::Exact(h) => h == host,
        };
        self.scheme.as_deref().is_none_or(|s| s == scheme)
            && host_ok
            && self.port.is_none_or(|p| p == port)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// The `wasi:http` send hook: Spin's outbound check, then plain HTTP/1.1
/// over a fresh TCP connection (wasmtime-wasi-http is built without its own
/// sender: `default-send-request` stays off in this workspace).
struct OutboundHooks {
    outbound: Arc<Outbound>,
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>
    {
        let outbound = Arc::clone(&self.outbound);
        Box::new(async move {
            if !outbound.allows(request.uri()) {
                outbound.denied.fetch_add(1, Ordering::SeqCst);
                // The origin only: a query may carry a credential.
                eprintln!(
                    "spin_host: outbound request to {}://{} denied by allowed_outbound_hosts",
                    request.uri().scheme_str().unwrap_or("?"),
                    request.uri().authority().map_or("?", |a| a.as_str())
                );
                return Err(HttpError::HttpRequestDenied);
            }
            if request.uri().scheme() != Some(&http::uri::Scheme::HTTP) {
                return Err(HttpError::InternalError(Some(
                    "the Spin test host sends plain http:// only".to_owned(),
                )));
            }
            let (response, conn) = crate::direct_send::send(
                request,
                options.unwrap_or_default(),
                CONNECT_TIMEOUT,
                REQUEST_TIMEOUT,
            )
            .await?;
            let io: IoFuture = Box::new(async move {
                conn.await.map_err(HttpError::from)?;
                Ok(())
            });
            Ok((response, io))
        })
    }
}

// ---- spin:sqlite/sqlite@3.0.0 ----------------------------------------------

/// A `connection` resource: a connection of its own, as in Spin. The mutex
/// lets a statement run on a blocking thread; the guest is suspended
/// meanwhile, so it is never contended.
pub struct SqliteConnection {
    conn: Arc<Mutex<rusqlite::Connection>>,
}

fn open_database(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    Ok(conn)
}

fn execute_statement(
    conn: &rusqlite::Connection,
    statement: &str,
    parameters: Vec<sqlite::Value>,
) -> rusqlite::Result<sqlite::QueryResult> {
    let mut stmt = conn.prepare_cached(statement)?;
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let width = columns.len();
    let params = parameters.into_iter().map(|v| match v {
        sqlite::Value::Integer(i) => rusqlite::types::Value::Integer(i),
        sqlite::Value::Real(r) => rusqlite::types::Value::Real(r),
        sqlite::Value::Text(t) => rusqlite::types::Value::Text(t),
        sqlite::Value::Blob(b) => rusqlite::types::Value::Blob(b),
        sqlite::Value::Null => rusqlite::types::Value::Null,
    });
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            values.push(match row.get_ref(i)? {
                rusqlite::types::ValueRef::Null => sqlite::Value::Null,
                rusqlite::types::ValueRef::Integer(i) => sqlite::Value::Integer(i),
                rusqlite::types::ValueRef::Real(r) => sqlite::Value::Real(r),
                rusqlite::types::ValueRef::Text(t) => {
                    sqlite::Value::Text(String::from_utf8_lossy(t).into_owned())
                }
                rusqlite::types::ValueRef::Blob(b) => sqlite::Value::Blob(b.to_vec()),
            });
        }
        out.push(sqlite::RowResult { values });
    }
    Ok(sqlite::QueryResult { columns, rows: out })
}

/// Run `f` on a blocking thread: a database call may wait for a lock.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, sqlite::Error> + Send + 'static,
) -> wasmtime::Result<Result<T, sqlite::Error>> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| wasmtime::Error::msg(format!("sqlite task: {e}")))
}

fn io_error(e: impl std::fmt::Display) -> sqlite::Error {
    sqlite::Error::Io(e.to_string())
}

impl sqlite::Host for SpinState {}

impl sqlite::HostConnection for SpinState {
    async fn open(
        &mut self,
        database: String,
    ) -> wasmtime::Result<Result<Resource<SqliteConnection>, sqlite::Error>> {
        if database != DEFAULT_DATABASE {
            return Ok(Err(sqlite::Error::NoSuchDatabase));
        }
        let path = self.app.sqlite_path.clone();
        let conn = match blocking(move || open_database(&path).map_err(io_error)).await? {
            Ok(conn) => conn,
            Err(e) => return Ok(Err(e)),
        };
        let resource = self.table.push(SqliteConnection {
            conn: Arc::new(Mutex::new(conn)),
        })?;
        Ok(Ok(resource))
    }

    async fn execute(
        &mut self,
        connection: Resource<SqliteConnection>,
        statement: String,
        parameters: Vec<sqlite::Value>,
    ) -> wasmtime::Result<Result<sqlite::QueryResult, sqlite::Error>> {
        let conn = Arc::clone(&self.table.get(&connection)?.conn);
        blocking(move || execute_statement(&lock(&conn), &statement, parameters).map_err(io_error))
            .await
    }

    async fn last_insert_rowid(
        &mut self,
        connection: Resource<SqliteConnection>,
    ) -> wasmtime::Result<i64> {
        Ok(lock(&self.table.get(&connection)?.conn).last_insert_rowid())
    }

    async fn changes(&mut self, connection: Resource<SqliteConnection>) -> wasmtime::Result<u64> {
        Ok(lock(&self.table.get(&connection)?.conn).changes())
    }

    async fn drop(&mut self, connection: Resource<SqliteConnection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

// ---- fermyon:spin/variables@2.0.0 ------------------------------------------

/// Spin's variable-name rules (`spin_expressions::Key`): lowercase ASCII
/// letters, digits and single underscores, starting with a letter and not
/// ending with an underscore.
fn validate_variable_name(name: &str) -> Result<(), String> {
    let reason = if name.is_empty() {
        "must not be empty".to_owned()
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        format!(
            "invalid character {c:?}. Variable names may contain only lower-case letters, numbers, and underscores."
        )
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        "must start with a lowercase ASCII letter".to_owned()
    } else if !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        "must end with a lowercase ASCII letter or digit".to_owned()
    } else if name.contains("__") {
        "must not contain multiple consecutive underscores".to_owned()
    } else {
        return Ok(());
    };
    Err(format!("{name:?}: {reason}"))
}

impl variables::Host for SpinState {
    fn get(&mut self, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
        if let Err(reason) = validate_variable_name(&name) {
            return Ok(Err(variables::Error::InvalidName(reason)));
        }
        lock(&self.app.read).insert(name.clone());
        Ok(match self.app.variables.get(&name) {
            Some(value) => Ok(value.clone()),
            None => Err(variables::Error::Undefined(name)),
        })
    }
}

// ---- helpers ---------------------------------------------------------------

/// A poisoned lock only means another thread panicked while holding it; the
/// data (a cache, a list, a connection) is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// wasmtime 48 has its own error type; its Debug form carries the cause chain.
fn wt(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}
