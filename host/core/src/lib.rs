//! edgeward-core: the pure logic of edgeward.
//!
//! Everything here is deterministic and free of I/O, so the same decisions are
//! made natively, inside the runtime, inside the backend, and on
//! `wasm32-wasip2` (the Spin backend). Time and randomness, where needed, are
//! passed in by the caller.
//!
//! Goals: one place for every rule that decides whether a guest request may
//! leave the sandbox and what comes back to it. Non-goals: networking,
//! storage, wasmtime: those live in `edgeward-runtime` and `edgeward-backend`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access;
pub mod attest;
pub mod caveat;
pub mod clock;
pub mod codec;
pub mod config;
pub mod crossing;
pub mod digest;
pub mod dpop;
pub mod egress;
pub mod entropy;
pub mod exchange;
pub mod grant;
pub mod headers;
pub mod keys;
pub mod nonce;
pub mod policy;
pub mod problem;
pub mod redact;
pub mod revocation;
pub mod scan;
pub mod secret;
pub mod token;
pub mod user;
