//! Generated bindings for the `edgeward:agent/agent` world.
//!
//! Only edgeward's own interfaces (`identity`, `log` and the `run` export) are
//! generated here. Every `wasi:*` interface the world pulls in is mapped onto
//! the pregenerated `wasip2` crate, so the SDK and any other wasi:http code in
//! the same component share one set of resource types.
//!
//! This module is public only because the `export!` macro that
//! [`crate::export_agent!`] expands to must name it from the agent's crate. It
//! is not part of the SDK's API.

wit_bindgen::generate!({
    world: "agent",
    path: "../../wit",
    with: {
        "wasi:http/types@0.2.12": wasip2::http::types,
        "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
    },
    pub_export_macro: true,
});

/// `edgeward:agent/delegation@0.2.0`, generated on its own so that a
/// component imports it only if it calls it: an agent that never delegates
/// stays a pure `edgeward:agent@0.1.0` component (wit-component drops
/// imports the core module does not use).
pub mod v0_2 {
    wit_bindgen::generate!({
        inline: "package edgeward:sdk; world delegating { import edgeward:agent/delegation@0.2.0; }",
        path: ["../../wit", "../../wit/v0.2"],
        world: "edgeward:sdk/delegating",
        with: { "edgeward:agent/delegation@0.2.0": generate },
    });
}

/// `edgeward:agent/approval@0.3.0`, generated on its own for the same
/// reason as [`v0_2`]: only agents that wait for approvals import it.
pub mod v0_3 {
    wit_bindgen::generate!({
        inline: "package edgeward:sdk; world waiting { import edgeward:agent/approval@0.3.0; }",
        path: ["../../wit", "../../wit/v0.2", "../../wit/v0.3"],
        world: "edgeward:sdk/waiting",
        with: { "edgeward:agent/approval@0.3.0": generate },
    });
}
