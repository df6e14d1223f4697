//! Peer certificates of server-to-server streams: is the chain trusted (system roots plus
//! `s2s.ca_files`), and does it name the domain (RFC 6120 §13.7.1.2, RFC 7590)? The identity is
//! read structurally from the subjectAltName: dNSName (with webpki's wildcard rules), SRV-ID
//! `_xmpp-server.DOMAIN` and XmppAddr `DOMAIN`; the subject DN is never consulted.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, Error, RootCertStore};
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;

use crate::config::S2sConfig;
use crate::tls::TlsError;

/// OID of id-on-xmppAddr (RFC 6120 §13.7.1.4).
const XMPP_ADDR: &str = "1.3.6.1.5.5.7.8.5";
/// OID of id-on-dnsSRV (RFC 4985).
const DNS_SRV: &str = "1.3.6.1.5.5.7.8.7";

/// The trust anchors peer certificates are checked against.
pub struct Trust {
    verifier: Option<Arc<WebPkiServerVerifier>>,
}

impl Trust {
    /// Loads the system roots (when `s2s.system_roots`) and every `s2s.ca_files` PEM.
    pub fn load(cfg: &S2sConfig) -> Result<Trust, TlsError> {
        let mut roots = RootCertStore::empty();
        if cfg.system_roots {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
        for path in &cfg.ca_files {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| TlsError::Pem {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            let (_, bad) = roots.add_parsable_certificates(certs);
            if bad > 0 {
                return Err(TlsError::Pem {
                    path: path.clone(),
                    reason: format!("{bad} certificate(s) could not be used as trust anchors"),
                });
            }
        }
        if roots.is_empty() {
            return Ok(Trust { verifier: None });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        Ok(Trust {
            verifier: Some(verifier),
        })
    }

    /// Whether `chain` (end entity first) is trusted now and names `domain`.
    pub fn valid_for(&self, chain: &[CertificateDer<'_>], domain: &str) -> bool {
        let (Some(verifier), Some((ee, rest))) = (&self.verifier, chain.split_first()) else {
            return false;
        };
        let Ok(name) = ServerName::try_from(domain.to_string()) else {
            return false;
        };
        match verifier.verify_server_cert(ee, rest, &name, &[], UnixTime::now()) {
            Ok(_) => true,
            // The chain is good but no dNSName matches: an XMPP identity may.
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => names_xmpp_identity(ee, domain),
            Err(_) => false,
        }
    }
}

/// Whether the certificate's subjectAltName has an XmppAddr or `_xmpp-server` SRV-ID for `domain`.
pub fn names_xmpp_identity(der: &[u8], domain: &str) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let srv = format!("_xmpp-server.{domain}");
    san.value.general_names.iter().any(|n| match n {
        GeneralName::OtherName(oid, value) => {
            match (oid.to_id_string().as_str(), string_value(value)) {
                (XMPP_ADDR, Some(v)) => v.eq_ignore_ascii_case(domain),
                (DNS_SRV, Some(v)) => v.eq_ignore_ascii_case(&srv),
                _ => false,
            }
        }
        _ => false,
    })
}

/// The string inside an otherName value: `[0] EXPLICIT` wrapping a UTF8String or IA5String.
fn string_value(der: &[u8]) -> Option<&str> {
    let (tag, inner) = tlv(der)?;
    let (tag, s) = if tag == 0xA0 {
        tlv(inner)?
    } else {
        (tag, inner)
    };
    match tag {
        0x0C | 0x16 => std::str::from_utf8(s).ok(),
        _ => None,
    }
}

/// One DER tag-length-value: the tag and the value bytes (short and long definite lengths).
fn tlv(der: &[u8]) -> Option<(u8, &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = if len < 0x80 {
        (usize::from(len), rest)
    } else {
        let n = usize::from(len & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    rest.get(..len).map(|v| (tag, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        OtherNameValue, SanType,
    };

    fn ca() -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let cert = p.self_signed(&key).expect("ca");
        (cert, Issuer::new(p, key))
    }

    fn leaf(issuer: &Issuer<'static, KeyPair>, sans: Vec<SanType>) -> rcgen::Certificate {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        p.signed_by(&key, issuer).expect("leaf")
    }

    fn trust(ca: &rcgen::Certificate) -> (Trust, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.pem()).expect("write");
        let cfg = S2sConfig {
            system_roots: false,
            ca_files: vec![path],
            ..S2sConfig::default()
        };
        (Trust::load(&cfg).expect("trust"), dir)
    }

    #[test]
    fn dns_name_xmpp_addr_and_srv_id_authenticate_their_domain_only() {
        let (ca_cert, issuer) = ca();
        let (t, _dir) = trust(&ca_cert);
        let dns = leaf(
            &issuer,
            vec![SanType::DnsName("a.example".try_into().expect("name"))],
        );
        assert!(t.valid_for(&[dns.der().clone()], "a.example"));
        assert!(!t.valid_for(&[dns.der().clone()], "b.example"));
        let xmpp = leaf(
            &issuer,
            vec![SanType::OtherName((
                vec![1, 3, 6, 1, 5, 5, 7, 8, 5],
                OtherNameValue::Utf8String("c.example".into()),
            ))],
        );
        assert!(t.valid_for(&[xmpp.der().clone()], "c.example"));
        assert!(!t.valid_for(&[xmpp.der().clone()], "a.example"));
        let srv = leaf(
            &issuer,
            vec![SanType::OtherName((
                vec![1, 3, 6, 1, 5, 5, 7, 8, 7],
                OtherNameValue::Utf8String("_xmpp-server.d.example".into()),
            ))],
        );
        assert!(t.valid_for(&[srv.der().clone()], "d.example"));
        assert!(!t.valid_for(&[srv.der().clone()], "xmpp-server.d.example"));
    }

    #[test]
    fn untrusted_chains_and_empty_stores_authenticate_nothing() {
        let (ca_cert, _) = ca();
        let (_, other) = ca();
        let (t, _dir) = trust(&ca_cert);
        let stranger = leaf(
            &other,
            vec![SanType::DnsName("a.example".try_into().expect("name"))],
        );
        assert!(!t.valid_for(&[stranger.der().clone()], "a.example"));
        assert!(!t.valid_for(&[], "a.example"));
        let none = Trust::load(&S2sConfig {
            system_roots: false,
            ..S2sConfig::default()
        })
        .expect("trust");
        assert!(!none.valid_for(&[stranger.der().clone()], "a.example"));
    }

    #[test]
    fn malformed_other_names_are_ignored() {
        assert_eq!(string_value(&[0xA0, 0x03, 0x0C, 0x01, b'x']), Some("x"));
        assert_eq!(string_value(&[0xA0, 0x05, 0x0C, 0x09, b'x']), None);
        assert_eq!(string_value(&[0xA0]), None);
        assert_eq!(string_value(&[0xA0, 0x85, 1, 1, 1, 1, 1]), None);
        assert!(!names_xmpp_identity(b"not a certificate", "a.example"));
    }
}
