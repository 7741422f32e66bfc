//! Host bindings for the `edgeward:agent` world.
//!
//! One `bindgen!` for the crate. The `wasi:*` interfaces are mapped to
//! wasmtime-wasi and wasmtime-wasi-http's own bindings, so only edgeward's
//! interfaces are generated here. Generated code stays private to the crate.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "edgeward:agent/agent",
    exports: { default: async },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});

pub(crate) use edgeward::agent::{identity, log};
