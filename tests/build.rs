//! Builds the guest components from source (the `guest/` workspace) for the
//! end-to-end tests, in a target directory of its own so that guest and host
//! builds never share features or locks. The paths reach the tests as
//! `HELLO_WASM`, `HOSTILE_WASM`, `BENCH_WASM` and `COURIER_WASM`.
//!
//! It also builds the Spin component (`host/spin/`, its own workspace) with
//! the build command `spin.toml` names, as `SPIN_WASM`.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const GUESTS: [&str; 4] = ["hello", "hostile", "bench", "courier"];

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("the tests crate lives in the workspace root")?;
    let guest = root.join("guest");
    for dir in ["sdk", "hello", "hostile", "bench", "courier"] {
        rerun_if_changed(&guest.join(dir));
    }
    rerun_if_changed(&guest.join("Cargo.toml"));
    rerun_if_changed(&guest.join("Cargo.lock"));
    rerun_if_changed(&root.join("wit"));

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let target_dir = out.join("guest-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--target",
        "wasm32-wasip2",
    ])
    .arg("--manifest-path")
    .arg(guest.join("Cargo.toml"));
    for g in GUESTS {
        cmd.args(["-p", g]);
    }
    // The host build's flags (coverage, sanitizers, target-cpu) must not leak
    // into the wasm build.
    cmd.env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        // Under `cargo clippy` the lint driver and its flags would follow.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS");
    let status = cmd
        .status()
        .context("cannot run cargo to build the guests")?;
    if !status.success() {
        bail!(
            "building the guest components failed (is the wasm32-wasip2 target installed? \
             `rustup target add wasm32-wasip2`)"
        );
    }
    build_spin(root, &out)?;
    for g in GUESTS {
        let path = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{g}.wasm"));
        if !path.exists() {
            bail!("the guest build did not produce {}", path.display());
        }
        println!(
            "cargo:rustc-env={}_WASM={}",
            g.to_uppercase(),
            path.display()
        );
    }
    Ok(())
}

/// `spin.toml`'s build command, run in its workdir (`host/spin`), into a
/// target directory of its own.
fn build_spin(root: &Path, out: &Path) -> anyhow::Result<()> {
    let dir = root.join("host/spin");
    for p in ["src", "Cargo.toml", "Cargo.lock"] {
        rerun_if_changed(&dir.join(p));
    }
    rerun_if_changed(&root.join("host/core/src"));
    rerun_if_changed(&root.join("host/core/Cargo.toml"));
    let target_dir = out.join("spin-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(SPIN_BUILD_ARGS)
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        // Under `cargo clippy` the lint driver and its flags would follow.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .status()
        .context("cannot run cargo to build the Spin component")?;
    if !status.success() {
        bail!("building the Spin component (host/spin) failed");
    }
    let path = target_dir.join("wasm32-wasip2/release/edgeward_spin.wasm");
    if !path.exists() {
        bail!("the Spin build did not produce {}", path.display());
    }
    println!("cargo:rustc-env=SPIN_WASM={}", path.display());
    println!(
        "cargo:rustc-env=SPIN_BUILD_COMMAND=cargo {}",
        SPIN_BUILD_ARGS.join(" ")
    );
    Ok(())
}

/// The Spin component's build, as `spin.toml` says it (a test checks).
const SPIN_BUILD_ARGS: [&str; 5] = [
    "build",
    "--target",
    "wasm32-wasip2",
    "--release",
    "--locked",
];

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}
