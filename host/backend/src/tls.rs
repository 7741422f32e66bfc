//! The backend's key material: a private CA, the server certificate it signs,
//! the token signing key and the nonce HMAC key, all in one data directory
//! with owner-only permissions.
//!
//! [`init_registry`] adds the registry database and the first admin
//! principal's credential to the same directory.
//!
//! Devices pin the CA (`edgeward run --ca ca.pem`), so the backend needs no
//! public PKI certificate and a stolen web-PKI certificate cannot impersonate
//! it.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

/// CA certificate, handed to devices.
pub const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
/// Server certificate chain.
pub const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server-key.pem";
const SIGNING_KEY: &str = "signing-key";
const NONCE_KEY: &str = "nonce-key";
/// The registry database.
pub const REGISTRY_DB: &str = "edgeward.db";
/// The first admin's credential, written by [`init_registry`].
pub const ADMIN_CREDENTIAL: &str = "admin-credential";
/// The name of the first admin principal.
pub const FIRST_ADMIN: &str = "admin";

/// Key material could not be created or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyMaterialError {
    /// The data directory already holds key material.
    #[error(
        "{0} already holds key material; pass --force to replace it (existing tokens and devices' CA pins stop working)"
    )]
    Exists(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// The I/O error kind.
        reason: String,
    },
    /// A file holds something that is not what it should be.
    #[error("{path}: {reason}")]
    Invalid {
        /// Which file.
        path: PathBuf,
        /// What is wrong (never the file's content).
        reason: &'static str,
    },
    /// Certificate generation failed.
    #[error("cannot create certificates: {0}")]
    Certificate(String),
    /// A key file is readable by others.
    #[error("{0} is readable by group or others; run chmod 600 on it")]
    Permissions(PathBuf),
    /// The registry database could not be created or written.
    #[error("the registry: {0}")]
    Registry(#[source] crate::store::StoreError),
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> KeyMaterialError + '_ {
    move |e| KeyMaterialError::Io {
        path: path.to_owned(),
        reason: e.kind().to_string(),
    }
}

/// The backend's loaded secrets.
pub struct KeyMaterial {
    /// 32-byte seed of the token signing key.
    pub signing_seed: Zeroizing<[u8; 32]>,
    /// 32-byte HMAC key for nonces.
    pub nonce_key: Zeroizing<[u8; 32]>,
    /// TLS server configuration (certificate chain and key).
    pub tls: Arc<rustls::ServerConfig>,
}

/// Create a data directory: CA, server certificate for `names` (plus
/// `localhost`, `127.0.0.1`, `::1`), signing and nonce keys. `random`
/// supplies the symmetric keys (the certificate keys come from ring's RNG).
pub fn init(
    dir: &Path,
    names: &[String],
    force: bool,
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<(), KeyMaterialError> {
    if dir.join(SIGNING_KEY).exists() && !force {
        return Err(KeyMaterialError::Exists(dir.to_owned()));
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(dir))?;
    }
    let cert_err = |e: rcgen::Error| KeyMaterialError::Certificate(e.to_string());

    let ca_key = KeyPair::generate().map_err(cert_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "edgeward backend CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_err)?;

    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    sans.extend(names.iter().cloned());
    let server_key = KeyPair::generate().map_err(cert_err)?;
    let mut server_params = CertificateParams::new(sans).map_err(cert_err)?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "edgeward backend");
    let issuer = Issuer::new(ca_params, ca_key);
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .map_err(cert_err)?;

    let mut signing = Zeroizing::new([0u8; 32]);
    random(signing.as_mut());
    let mut nonce = Zeroizing::new([0u8; 32]);
    random(nonce.as_mut());

    write_file(&dir.join(CA_CERT), ca_cert.pem().as_bytes(), false)?;
    write_file(
        &dir.join(CA_KEY),
        issuer.key().serialize_pem().as_bytes(),
        true,
    )?;
    write_file(&dir.join(SERVER_CERT), server_cert.pem().as_bytes(), false)?;
    write_file(
        &dir.join(SERVER_KEY),
        server_key.serialize_pem().as_bytes(),
        true,
    )?;
    write_file(
        &dir.join(SIGNING_KEY),
        hex::encode(signing.as_ref()).as_bytes(),
        true,
    )?;
    write_file(
        &dir.join(NONCE_KEY),
        hex::encode(nonce.as_ref()).as_bytes(),
        true,
    )?;
    Ok(())
}

/// Create the registry database in a data directory (if it is not there)
/// and, if it has no admin principal yet, the first one: [`FIRST_ADMIN`]
/// with the admin role and a random 32-byte credential (hex), written to
/// [`ADMIN_CREDENTIAL`] with mode 0600. Returns that file's path, or `None`
/// when the registry already had principals (they are kept as they are).
pub fn init_registry(
    dir: &Path,
    now: u64,
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<Option<PathBuf>, KeyMaterialError> {
    use crate::store::{AdminRecord, Role, SqliteStore, Store as _};
    use sha2::Digest as _;
    let store = SqliteStore::open(&dir.join(REGISTRY_DB)).map_err(KeyMaterialError::Registry)?;
    if !store
        .admins()
        .map_err(KeyMaterialError::Registry)?
        .is_empty()
    {
        return Ok(None);
    }
    let mut raw = Zeroizing::new([0u8; 32]);
    random(raw.as_mut());
    let credential = Zeroizing::new(hex::encode(raw.as_ref()));
    let path = dir.join(ADMIN_CREDENTIAL);
    // The file first: a principal whose credential was never written down
    // would lock everyone out.
    write_file(&path, credential.as_bytes(), true)?;
    let added = store.add_admin(&AdminRecord {
        name: FIRST_ADMIN.to_owned(),
        roles: vec![Role::Admin],
        credential_hash: sha2::Sha256::digest(credential.as_bytes()).into(),
        created_at: now,
    });
    if let Err(e) = added {
        let _ = std::fs::remove_file(&path);
        return Err(KeyMaterialError::Registry(e));
    }
    Ok(Some(path))
}

/// Load a data directory made by [`init`].
pub fn load(dir: &Path) -> Result<KeyMaterial, KeyMaterialError> {
    let signing_seed = read_key32(&dir.join(SIGNING_KEY))?;
    let nonce_key = read_key32(&dir.join(NONCE_KEY))?;
    let cert_path = dir.join(SERVER_CERT);
    let key_path = dir.join(SERVER_KEY);
    check_private(&key_path)?;
    use rustls::pki_types::pem::PemObject as _;
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls::pki_types::CertificateDer::pem_file_iter(&cert_path)
            .map_err(|_| KeyMaterialError::Invalid {
                path: cert_path.clone(),
                reason: "not a PEM certificate file",
            })?
            .collect::<Result<_, _>>()
            .map_err(|_| KeyMaterialError::Invalid {
                path: cert_path.clone(),
                reason: "not a PEM certificate file",
            })?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key_path).map_err(|_| {
        KeyMaterialError::Invalid {
            path: key_path.clone(),
            reason: "not a PEM private key",
        }
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KeyMaterialError::Certificate(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|_| KeyMaterialError::Invalid {
            path: key_path,
            reason: "the key does not match the certificate",
        })?;
    Ok(KeyMaterial {
        signing_seed,
        nonce_key,
        tls: Arc::new(tls),
    })
}

fn read_key32(path: &Path) -> Result<Zeroizing<[u8; 32]>, KeyMaterialError> {
    check_private(path)?;
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io_err(path))?);
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), out.as_mut()).map_err(|_| KeyMaterialError::Invalid {
        path: path.to_owned(),
        reason: "expected 64 hex digits",
    })?;
    Ok(out)
}

/// Refuse key files others can read: a leaked signing key mints tokens.
fn check_private(path: &Path) -> Result<(), KeyMaterialError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(KeyMaterialError::Permissions(path.to_owned()));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), KeyMaterialError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(io_err(path))?;
    #[cfg(unix)]
    if private {
        // `mode` only applies when the file is created; --force may reuse one.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(path))?;
    }
    file.write_all(bytes).map_err(io_err(path))
}
