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

/// The hash that RFC 5929 §4.1 names for a certificate signed with `oid` (dotted form):
/// the signature's own hash, with MD5 and SHA-1 replaced by SHA-256; `None` when the signature
/// uses no single hash (Ed25519, Ed448) or is unknown, where the binding is undefined.
fn end_point_hash(sig: &x509_parser::x509::AlgorithmIdentifier<'_>) -> Option<EndPointHash> {
    const RSA_PSS: &str = "1.2.840.113549.1.1.10";
    let oid = sig.algorithm.to_id_string();
    let hash_oid = if oid == RSA_PSS {
        match x509_parser::signature_algorithm::SignatureAlgorithm::try_from(sig).ok()? {
            x509_parser::signature_algorithm::SignatureAlgorithm::RSASSA_PSS(p) => {
                p.hash_algorithm_oid().to_id_string()
            }
            _ => return None,
        }
    } else {
        oid
    };
    match hash_oid.as_str() {
        // md5WithRSA, sha1WithRSA, ecdsa-with-SHA1, dsa-with-sha1, id-sha1, id-md5 (PSS).
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.10045.4.1"
        | "1.2.840.10040.4.3"
        | "1.3.14.3.2.26"
        | "1.2.840.113549.2.5" => Some(EndPointHash::Sha256),
        // sha224WithRSA, ecdsa-with-SHA224, id-sha224.
        "1.2.840.113549.1.1.14" | "1.2.840.10045.4.3.1" | "2.16.840.1.101.3.4.2.4" => {
            Some(EndPointHash::Sha224)
        }
        // sha256WithRSA, ecdsa-with-SHA256, dsa-with-sha256, id-sha256.
        "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.3.2"
        | "2.16.840.1.101.3.4.3.2"
        | "2.16.840.1.101.3.4.2.1" => Some(EndPointHash::Sha256),
        // sha384WithRSA, ecdsa-with-SHA384, id-sha384.
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" | "2.16.840.1.101.3.4.2.2" => {
            Some(EndPointHash::Sha384)
        }
        // sha512WithRSA, ecdsa-with-SHA512, id-sha512.
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" | "2.16.840.1.101.3.4.2.3" => {
            Some(EndPointHash::Sha512)
        }
        _ => None,
    }
}

/// The hash functions a `tls-server-end-point` binding can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndPointHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// The RFC 5929 §4 `tls-server-end-point` channel-binding data of the end-entity certificate
/// `cert` (DER): its hash with the function its signature uses (SHA-256 for MD5 and SHA-1).
/// `None` when the certificate cannot be parsed or its signature has no single hash.
pub fn server_end_point(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    use sha2::Digest;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let der = cert.as_ref();
    Some(match end_point_hash(&parsed.signature_algorithm)? {
        EndPointHash::Sha224 => sha2::Sha224::digest(der).to_vec(),
        EndPointHash::Sha256 => sha2::Sha256::digest(der).to_vec(),
        EndPointHash::Sha384 => sha2::Sha384::digest(der).to_vec(),
        EndPointHash::Sha512 => sha2::Sha512::digest(der).to_vec(),
    })
}

/// The `tls-server-end-point` data of the certificate at `paths` (the first of its chain),
/// computed once when the listeners are set up; `None` when it is undefined for that certificate.
pub fn end_point_of(paths: &CertPaths) -> Result<Option<Vec<u8>>, TlsError> {
    let (certs, _) = load_pair(paths)?;
    Ok(certs.first().and_then(server_end_point))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> CertificateDer<'static> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name);
        CertificateDer::from_pem_file(path).expect("fixture")
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn the_end_point_hash_follows_the_certificate_signature() {
        // Expected values: `openssl x509 -outform der | openssl dgst -sha256/-sha384/-sha512`.
        for (name, expected) in [
            (
                "rsa-sha256.pem",
                "cf951b1a7ee135368b7a0b2ae1884f0ccc45b950b3d04f00cc18f0268e4ade5a",
            ),
            (
                "ecdsa-sha384.pem",
                "bc3d092fb6316f9882cba4c5737dcf2e5c9966b8d34c10b9ce7590fb6a476104b873a717ffcb6be4bf9104d606d15239",
            ),
            // SHA-1-signed: SHA-256 instead (RFC 5929 §4.1).
            (
                "rsa-sha1.pem",
                "42387c1360712b7e30f13484c3fe1a8ec9918abe9c66103bb9d0d2119238f9a7",
            ),
            // RSASSA-PSS: the hash named in its parameters.
            (
                "rsa-pss-sha512.pem",
                "8f4456977e15f69de9ae16f13c0e018f85264ce4e8a6f4790e02cd22417a9240699b219deda8a9bb223acd32fb1175470b86821daf221ed8c10d9431d40754c7",
            ),
        ] {
            let got = server_end_point(&fixture(name)).expect(name);
            assert_eq!(hex(&got), expected, "{name}");
        }
        // Ed25519 signs without a separate hash: the binding is undefined, not offered.
        assert_eq!(server_end_point(&fixture("ed25519.pem")), None);
        assert_eq!(
            server_end_point(&CertificateDer::from(vec![0x30, 0x03])),
            None
        );
    }

    #[test]
    fn a_generated_certificate_has_a_sha256_end_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = ensure_certificate(None, dir.path(), &["localhost".into()]).expect("cert");
        let (certs, _) = load_pair(&paths).expect("pair");
        let value = end_point_of(&paths).expect("read").expect("defined");
        use sha2::Digest;
        assert_eq!(value, sha2::Sha256::digest(certs[0].as_ref()).to_vec());
    }
}
