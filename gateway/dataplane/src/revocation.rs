//! Which callers' certificates the CRLs revoke, asked on every call (issue 15).
//!
//! The handshake already refuses a revoked certificate (`tls::server_config`), but a
//! connection made before the revocation lives on: each call is
//! checked against the CRLs as they are now, so that a certificate revoked while its caller
//! stays connected is refused within the reload interval. Every CRL must be signed by a CA of
//! the bundle, and counts only for certificates that CA issued; the leaf only.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::prelude::{parse_x509_certificate, parse_x509_crl};

use crate::tls::{pem_all, TlsError};

fn refused(path: &Path, problem: String) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        problem,
    }
}

/// The CRLs of `path`: its PEM sections, or the whole file as one DER CRL (what
/// `openssl crl -outform DER` writes), told apart by the PEM armour.
fn crls_in(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|error| refused(path, error.to_string()))?;
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        pem_all(path, "CRL")
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    }
}

/// A certificate as the CRLs name it: its issuer's name (DER) and its serial number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Listing {
    issuer: Vec<u8>,
    serial: Vec<u8>,
}

impl Listing {
    /// The listing of the certificate `der`; `None` if it cannot be parsed.
    #[must_use]
    pub fn of(der: &[u8]) -> Option<Self> {
        let (_, certificate) = parse_x509_certificate(der).ok()?;
        Some(Listing {
            issuer: certificate.issuer().as_raw().to_vec(),
            serial: certificate.raw_serial().to_vec(),
        })
    }
}

/// The revoked certificates of the CRLs, as last read.
#[derive(Debug, Default)]
pub struct Revoked {
    listed: HashSet<Listing>,
}

impl Revoked {
    /// Read the CA bundle and the CRLs, each file PEM (one CRL or more) or a single DER CRL.
    ///
    /// # Errors
    ///
    /// A file cannot be read or holds no CRL, a CRL cannot be parsed, or no CA of the bundle
    /// signed it: a CRL that cannot be trusted is refused rather than ignored, so that a
    /// start fails loudly and a reload keeps the last good list (what it revoked stays
    /// revoked), as a CRL replaced by another CA's is most likely a mistake or an attack.
    pub fn load(ca_bundle: &Path, crl_paths: &[PathBuf]) -> Result<Self, TlsError> {
        let cas: Vec<CertificateDer<'static>> = pem_all(ca_bundle, "certificate")?;
        let cas: Vec<_> = cas
            .iter()
            .filter_map(|der| parse_x509_certificate(der).ok().map(|(_, ca)| ca))
            .collect();
        let mut listed = HashSet::new();
        for path in crl_paths {
            for der in crls_in(path)? {
                let (_, crl) = parse_x509_crl(&der)
                    .map_err(|error| refused(path, format!("a CRL cannot be parsed: {error}")))?;
                let signed_by_a_ca = cas.iter().any(|ca| {
                    ca.subject().as_raw() == crl.issuer().as_raw()
                        && crl.verify_signature(ca.public_key()).is_ok()
                });
                if !signed_by_a_ca {
                    return Err(refused(
                        path,
                        format!(
                            "a CRL of {} is signed by no CA of {}",
                            crl.issuer(),
                            ca_bundle.display()
                        ),
                    ));
                }
                let issuer = crl.issuer().as_raw().to_vec();
                listed.extend(crl.iter_revoked_certificates().map(|revoked| Listing {
                    issuer: issuer.clone(),
                    serial: revoked.raw_serial().to_vec(),
                }));
            }
        }
        Ok(Revoked { listed })
    }

    /// Whether the certificate so listed is revoked.
    #[must_use]
    pub fn lists(&self, listing: &Listing) -> bool {
        self.listed.contains(listing)
    }

    /// How many certificates are revoked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.listed.len()
    }

    /// Whether none is.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }
}
