//! `edgeward serve`: the backend as a TLS service.

use anyhow::Context as _;
use edgeward_backend::exchange::{ServiceKeys, SharedEntropy, TokenService};
use edgeward_backend::import::import;
use edgeward_backend::store::{SqliteStore, Store};
use edgeward_backend::{Backend, admin, service, tls};
use edgeward_core::clock::{Clock, SystemClock};
use edgeward_core::config::Config;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

pub async fn run(
    config: &Config,
    data_dir: &Path,
    listen: Option<SocketAddr>,
    danger_plaintext_http: bool,
    admin_socket: &Path,
) -> anyhow::Result<ExitCode> {
    let keys = tls::load(data_dir).with_context(|| {
        format!(
            "cannot load key material (run `edgeward init --data-dir {}` first)",
            data_dir.display()
        )
    })?;
    let entropy: SharedEntropy = Arc::new(Mutex::new(Box::new(crate::embedded::os_entropy)));
    let mut epoch = [0u8; 8];
    crate::embedded::os_entropy(&mut epoch);
    let db = data_dir.join("edgeward.db");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&db)
            .with_context(|| format!("cannot open the registry {}", db.display()))?,
    );
    // A new registry is seeded from the config; afterwards the registry is
    // the source of truth and `edgeward import` applies config changes.
    if store.agents()?.is_empty() && store.grants()?.is_empty() && store.devices()?.is_empty() {
        let summary = import(store.as_ref(), config, SystemClock.now(), || {
            let mut id = [0u8; 16];
            crate::embedded::os_entropy(&mut id);
            hex::encode(id)
        })?;
        tracing::info!(?summary, "seeded the registry from the config");
    }
    let tokens = TokenService::new(
        store,
        config.backend.clone(),
        ServiceKeys {
            signing_seed: &keys.signing_seed,
            nonce_key: &keys.nonce_key,
            boot_epoch: u64::from_be_bytes(epoch),
        },
        None,
        Arc::new(SystemClock),
        Arc::clone(&entropy),
    )
    .context("cannot start the token service")?;
    let tokens = Arc::new(tokens);
    let backend = Backend::new(Arc::clone(&tokens)).context("cannot start the backend")?;
    let addr = listen.unwrap_or(config.backend.listen);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    // The admin API is bound before anything is printed: once the
    // "listening" line is out, both listeners accept.
    let admin_listener = admin::bind_admin_socket(admin_socket).with_context(|| {
        format!(
            "cannot listen on the admin socket {}",
            admin_socket.display()
        )
    })?;
    let tls = if danger_plaintext_http {
        tracing::warn!(
            "DANGER: serving plain HTTP; tokens and guest requests travel in clear text"
        );
        println!("listening on http://{local} (DANGER: no TLS)");
        None
    } else {
        println!("listening on https://{local}");
        Some(keys.tls)
    };
    // On stderr: stdout carries only the one "listening" line that scripts
    // and tests read (and a reader may close the pipe after it).
    tracing::info!("admin API on {}", admin_socket.display());
    let admin = admin::serve_admin(admin_listener, admin::AdminContext::new(tokens, entropy));
    tokio::select! {
        served = service::serve(listener, tls, backend) => served?,
        served = admin => served.context("the admin API stopped")?,
    }
    Ok(ExitCode::SUCCESS)
}
