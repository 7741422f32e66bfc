//! Host bindings for the `edgeward:agent` worlds.
//!
//! One `bindgen!` for the crate, of the newest world: `edgeward:agent@0.3.0`
//! includes every import of 0.2.0 (which includes 0.1.0's, at their own
//! versions) and adds `approval`. The one
//! linker defines them all, and the generated `AgentPre` checks only the
//! `run` export both versions share, so components built against either
//! version instantiate. The `wasi:*` interfaces are mapped to wasmtime-wasi
//! and wasmtime-wasi-http's own bindings, so only edgeward's interfaces are
//! generated here. Generated code stays private to the crate.

wasmtime::component::bindgen!({
    path: ["../../wit", "../../wit/v0.2", "../../wit/v0.3"],
    world: "edgeward:agent/agent@0.3.0",
    exports: { default: async },
    // Running a child awaits the child's whole task; waiting for an
    // approval awaits a person.
    imports: {
        "edgeward:agent/delegation.run-child": async,
        "edgeward:agent/approval.wait": async,
    },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});

pub(crate) use edgeward::agent0_1_0::{identity, log};
pub(crate) use edgeward::agent0_2_0::delegation;
pub(crate) use edgeward::agent0_3_0::approval;
