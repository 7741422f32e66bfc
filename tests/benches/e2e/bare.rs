//! The status quo and the floor that edgeward is measured against: the same
//! component in the runtime's own `Engine` (same config, pool and epoch
//! ticker), but in a plain store whose `wasi:http` hook does what wasmtime's
//! default sender does — a new TCP connection and HTTP/1 handshake per
//! request, no credential logic. `default-send-request` stays off: this hook
//! is compiled into the benchmark binary only.

use bytes::Bytes;
use http_body_util::BodyExt;
use std::future::Future;
use std::time::Duration;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

/// A component instantiated without edgeward: the insecure status quo.
pub struct Bare {
    engine: Engine,
    pre: InstancePre<BareState>,
}

pub struct BareState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DirectSend,
}

impl Bare {
    /// Compile and pre-link `component` in `engine`.
    pub fn new(engine: &Engine, component: &[u8]) -> anyhow::Result<Bare> {
        let component = Component::new(engine, component).map_err(wt)?;
        let mut linker = Linker::<BareState>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wt)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(wt)?;
        // edgeward's own imports (identity, log) trap if called: the
        // benchmark agent never calls them on the status-quo path.
        let ty = component.component_type();
        for (name, item) in ty.imports(engine) {
            if let (true, ComponentItem::ComponentInstance(instance)) =
                (name.starts_with("edgeward:"), item.ty)
            {
                let mut stub = linker.instance(name).map_err(wt)?;
                for (func, _) in instance.exports(engine) {
                    stub.func_new(func, |_, _, _, _| {
                        Err(wasmtime::Error::msg("edgeward imports are not linked here"))
                    })
                    .map_err(wt)?;
                }
            }
        }
        let pre = linker.instantiate_pre(&component).map_err(wt)?;
        Ok(Bare {
            engine: engine.clone(),
            pre,
        })
    }

    /// One task in a fresh store: instantiate, call `run`, drop.
    pub async fn run(&self, task: &str) -> anyhow::Result<Result<String, String>> {
        let wasi = WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = BareState {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            hooks: DirectSend,
        };
        let mut store = Store::new(&self.engine, state);
        // The runtime's engine interrupts on epochs: yield at each tick, as
        // the runtime's own stores do, so neither side holds a worker.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Yield(1)));
        let instance = self.pre.instantiate_async(&mut store).await.map_err(wt)?;
        let run = instance
            .get_typed_func::<(&str,), (Result<String, String>,)>(&mut store, "run")
            .map_err(|e| wt(e).context("the component exports run"))?;
        let (result,) = run.call_async(&mut store, (task,)).await.map_err(wt)?;
        Ok(result)
    }
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for BareState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// wasmtime's default sender, reduced to plain HTTP: connect, HTTP/1
/// handshake, one request, and the connection is gone with the response.
pub struct DirectSend;

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for DirectSend {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>
    {
        Box::new(async move {
            let (response, conn) = edgeward_tests::direct_send::send(
                request,
                RequestOptions::default(),
                Duration::from_secs(600),
                Duration::from_secs(600),
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

/// The floor: a native client on a kept-alive connection, no wasm at all.
pub struct Native {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>,
    authority: String,
}

impl Native {
    pub async fn connect(authority: &str) -> anyhow::Result<Native> {
        let stream = tokio::net::TcpStream::connect(authority).await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await?;
        tokio::spawn(conn);
        Ok(Native {
            sender,
            authority: authority.to_owned(),
        })
    }

    /// One GET with the key; the whole body read.
    pub async fn get(&mut self, path: &str, header: (&str, &str)) -> anyhow::Result<u16> {
        self.sender.ready().await?;
        let request = http::Request::get(path)
            .header(http::header::HOST, &self.authority)
            .header(header.0, header.1)
            .body(http_body_util::Empty::new())?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }
}

/// wasmtime 48 has its own error type; its Debug form carries the cause chain.
fn wt(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}
