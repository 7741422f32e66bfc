//! Embedded mode: a backend in the runtime's own process.
//!
//! The registry is a real SQLite database, in memory. Nothing is skipped: the runtime still attests with a device key and
//! exchanges the attestation for tokens, through the same [`TokenService`].
//! The differences are where the keys come from — fresh ones made at start-up
//! and held in memory only — and the device: a key made here, registered as
//! the reserved device `embedded`, which only code in this process can hold.

use crate::exchange::{ServiceKeys, SharedEntropy, TokenService};
use crate::forward::{Backend, BackendError};
use crate::import::import;
use crate::secrets::SecretError;
use crate::store::{SqliteStore, Store};
use edgeward_core::clock::Clock;
use edgeward_core::config::Config;
use edgeward_core::keys::{Ed25519Signer, Signer};
use edgeward_core::secret::{Secret, SecretSource};
use std::sync::Arc;
use zeroize::Zeroizing;

/// An in-process backend and the key of the in-process device.
pub struct Embedded {
    /// The backend (also the runtime's `TokenExchange` and `Egress`).
    pub backend: Backend,
    /// The in-process device's key.
    pub device_key: Arc<dyn Signer>,
}

/// Build an in-process backend. `entropy` supplies every key made here.
pub fn embedded(
    config: &Config,
    read_secret: impl FnMut(&SecretSource) -> Result<Secret, SecretError>,
    clock: Arc<dyn Clock>,
    entropy: SharedEntropy,
) -> Result<Embedded, BackendError> {
    let mut signing_seed = Zeroizing::new([0u8; 32]);
    let mut nonce_key = Zeroizing::new([0u8; 32]);
    let mut epoch = [0u8; 8];
    let device_key = {
        let mut e = entropy.lock().map_err(|_| BackendError::Entropy)?;
        e.fill(signing_seed.as_mut());
        e.fill(nonce_key.as_mut());
        e.fill(&mut epoch);
        Ed25519Signer::generate(&mut **e).map_err(|_| BackendError::Entropy)?
    };
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().map_err(BackendError::Store)?);
    let now = clock.now();
    {
        let mut e = entropy.lock().map_err(|_| BackendError::Entropy)?;
        import(store.as_ref(), config, now, || {
            let mut id = [0u8; 16];
            e.fill(&mut id);
            hex::encode(id)
        })
        .map_err(|e| BackendError::Tokens(e.to_string()))?;
    }
    let tokens = TokenService::new(
        store,
        config.backend.clone(),
        ServiceKeys {
            signing_seed: &signing_seed,
            nonce_key: &nonce_key,
            boot_epoch: u64::from_be_bytes(epoch),
        },
        Some(device_key.public_key()),
        clock,
        entropy,
    )
    .map_err(|e| BackendError::Tokens(e.to_string()))?;
    let backend = Backend::with_secrets(Arc::new(tokens), read_secret)?;
    Ok(Embedded {
        backend,
        device_key: Arc::new(device_key),
    })
}
