//! TLS set-up: load the configured certificate, or make a self-signed one on first start and reuse it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Certificate generation or rustls configuration failed.
    #[error("tls: {0}")]
    Setup(String),
}

/// Paths of the certificate and key actually used.
#[derive(Clone, Debug)]
pub struct CertPaths {
    /// PEM certificate chain.
    pub certificate: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Returns the configured paths, or those of a self-signed certificate in `data_dir/tls/`, made if missing.
pub fn ensure_certificate(
    configured: Option<(&Path, &Path)>,
    data_dir: &Path,
    hosts: &[String],
) -> Result<CertPaths, TlsError> {
    if let Some((c, k)) = configured {
        return Ok(CertPaths {
            certificate: c.to_path_buf(),
            key: k.to_path_buf(),
        });
    }
    let dir = data_dir.join("tls");
    let paths = CertPaths {
        certificate: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    if paths.certificate.exists() && paths.key.exists() {
        return Ok(paths);
    }
    std::fs::create_dir_all(&dir).map_err(|source| TlsError::Io {
        path: dir.clone(),
        source,
    })?;
    let generated = rcgen::generate_simple_self_signed(hosts.to_vec())
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    write_private(&paths.key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&paths.certificate, generated.cert.pem()).map_err(|source| TlsError::Io {
        path: paths.certificate.clone(),
        source,
    })?;
    tracing::info!(path = %paths.certificate.display(), "generated a self-signed certificate");
    Ok(paths)
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|source| TlsError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads the PEM certificate chain and private key of `paths`.
pub fn load_pair(
    paths: &CertPaths,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.certificate)
        .map_err(|e| TlsError::Pem {
            path: paths.certificate.clone(),
            reason: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: paths.certificate.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: paths.certificate.clone(),
            reason: "no certificate found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&paths.key).map_err(|e| TlsError::Pem {
        path: paths.key.clone(),
        reason: e.to_string(),
    })?;
    Ok((certs, key))
}

/// Builds a rustls server configuration (ring provider, TLS 1.2+) from PEM files.
pub fn server_config(paths: &CertPaths) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, key) = load_pair(paths)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    Ok(Arc::new(cfg))
}
