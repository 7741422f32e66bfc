//! Device key files: made by `edgeward keygen`, read by split-mode `run`.

use crate::cli::Alg;
use anyhow::{Context as _, bail};
use edgeward_core::keys::{Ed25519Signer, Es256Signer, Signer, signer_from_pkcs8_pem};
use std::io::Write as _;
use std::path::Path;

/// Make a key pair, write the private key (0600, never over an existing
/// file), and return the public key in config form.
pub fn generate(alg: Alg, out: &Path) -> anyhow::Result<String> {
    let mut entropy = crate::embedded::os_entropy;
    let (pem, public) = match alg {
        Alg::Ed25519 => {
            let k = Ed25519Signer::generate(&mut entropy)?;
            (k.to_pkcs8_pem()?, k.public_key())
        }
        Alg::Es256 => {
            let k = Es256Signer::generate(&mut entropy)?;
            (k.to_pkcs8_pem()?, k.public_key())
        }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
    file.write_all(pem.as_bytes())?;
    Ok(public.to_string())
}

/// Read a device key, refusing a file others can read.
pub fn load(path: &Path) -> anyhow::Result<Box<dyn Signer>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read device key {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "device key {} is readable by group or others; run chmod 600 on it",
                path.display()
            );
        }
    }
    let pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read device key {}", path.display()))?,
    );
    signer_from_pkcs8_pem(&pem).with_context(|| format!("{} is not a device key", path.display()))
}
