//! Both TLS legs of the gateway, with rustls and its `ring` provider.
//!
//! The server leg requires a client certificate chaining to the callers' CA (whether the
//! CRLs revoke it is asked on every call, `revocation`), with an RSA key of at least 2048 bits, no SHA-1 (or
//! weaker) signature, and a key usage that allows signing: those fail the handshake (issue
//! 15), as `BoringSSL` fails a key usage without `digitalSignature` for the Python gateway. Its
//! identity and its other fitness are not looked at here: a certificate without an identity
//! completes the handshake and its calls are refused with UNAUTHENTICATED.
//!
//! The upstream leg verifies the upstream's chain against the upstreams' CA, and in place
//! of the host name, the SPIFFE ID its route names ([`crate::identity::expect_identity`]):
//! the development PKI names every server `localhost`, so a name proves nothing about which
//! system answers, while the identity does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};

use crate::config::TlsFiles;
use crate::identity;

/// The only application protocol either leg speaks.
const H2: &[u8] = b"h2";

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read, or holds nothing of what it should.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refuses the material (a key that does not match its certificate, a bad CRL).
    #[error("the TLS material is refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier cannot be built (a CRL that cannot be parsed).
    #[error("the client certificate verifier cannot be built: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, problem: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

/// Every PEM section of type `T` in `path`, at least one.
pub(crate) fn pem_all<T: PemObject>(path: &Path, what: &str) -> Result<Vec<T>, TlsError> {
    let items = T::pem_file_iter(path)
        .map_err(|error| file_error(path, error))?
        .collect::<Result<Vec<T>, _>>()
        .map_err(|error| file_error(path, error))?;
    if items.is_empty() {
        return Err(file_error(path, format!("holds no PEM {what}")));
    }
    Ok(items)
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in pem_all::<CertificateDer<'static>>(path, "certificate")? {
        roots
            .add(certificate)
            .map_err(|error| file_error(path, format!("a CA certificate is refused: {error}")))?;
    }
    Ok(Arc::new(roots))
}

/// Our certificate chain and private key.
fn own_chain_and_key(
    files: &TlsFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = pem_all(&files.certificate, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(&files.private_key)
        .map_err(|error| file_error(&files.private_key, error))?;
    Ok((chain, key))
}

/// The server leg: client certificates required, verified against the CA and the CRLs.
///
/// # Errors
///
/// A file cannot be read or holds no usable material.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    // No CRLs here: they are applied per call (`revocation`), not at the handshake, so that
    // a revoked caller's calls are refused REVOKED and recorded under its certificate's
    // identity, where a refused handshake could only say "revoked, by someone".
    let verifier = WebPkiClientVerifier::builder_with_provider(
        roots(&files.ca_certificate)?,
        provider.clone(),
    )
    .build()?;
    let ca_subjects = pem_all::<CertificateDer<'static>>(&files.ca_certificate, "certificate")?
        .iter()
        .filter_map(|ca| {
            x509_parser::parse_x509_certificate(ca)
                .ok()
                .map(|(_, ca)| ca.subject().as_raw().to_vec())
        })
        .collect();
    let verifier = Arc::new(StrongCallers {
        webpki: verifier,
        ca_subjects,
    });
    let (chain, key) = own_chain_and_key(files)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![H2.to_vec()];
    Ok(Arc::new(config))
}

/// webpki's verdict on a caller's chain, then no weak key or signature in the leaf, and a
/// key usage that allows signing (as `BoringSSL` refuses it for the Python gateway).
///
/// A leaf whose issuer is none of our CAs is refused as of an unknown issuer, whatever else
/// webpki found first (a self-signed certificate is often CA:TRUE too): the category an
/// operator acts on is "not ours", as the Python gateway's.
#[derive(Debug)]
struct StrongCallers {
    webpki: Arc<dyn ClientCertVerifier>,
    /// The subjects (DER) of the CAs of the bundle.
    ca_subjects: Vec<Vec<u8>>,
}

impl StrongCallers {
    fn issued_by_a_ca(&self, leaf: &[u8]) -> bool {
        x509_parser::parse_x509_certificate(leaf).is_ok_and(|(_, leaf)| {
            self.ca_subjects
                .iter()
                .any(|subject| subject.as_slice() == leaf.issuer().as_raw())
        })
    }
}

impl ClientCertVerifier for StrongCallers {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = match self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(_) if !self.issued_by_a_ca(end_entity.as_ref()) => {
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                ))
            }
            verdict => verdict?,
        };
        match identity::client_certificate_problem(end_entity.as_ref()) {
            Some(
                refusal @ (identity::Refusal::WeakRsaKey
                | identity::Refusal::WeakSignature
                | identity::Refusal::KeyUsage),
            ) => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(refusal)),
            ))),
            _ => Ok(verified),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The gateway's client credentials for the upstream leg, read once for every route.
pub struct UpstreamCredentials {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl UpstreamCredentials {
    /// Read the CA, certificate and key files of the upstream leg.
    ///
    /// # Errors
    ///
    /// A file cannot be read or holds no usable material.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let (chain, key) = own_chain_and_key(files)?;
        Ok(UpstreamCredentials {
            provider: provider(),
            roots: roots(&files.ca_certificate)?,
            chain,
            key,
        })
    }

    /// A client configuration that accepts only an upstream carrying `identity`.
    ///
    /// # Errors
    ///
    /// rustls refuses the client certificate or key.
    pub fn for_identity(&self, identity: &str) -> Result<Arc<ClientConfig>, TlsError> {
        let verifier = Arc::new(UpstreamIdentity {
            roots: self.roots.clone(),
            algorithms: self.provider.signature_verification_algorithms,
            identity: identity.to_owned(),
        });
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![H2.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Verifies an upstream's chain as rustls's `WebPkiServerVerifier` does, then its identity
/// where that verifier would check the host name.
#[derive(Debug)]
struct UpstreamIdentity {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    identity: String,
}

impl ServerCertVerifier for UpstreamIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let certificate = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &certificate,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        identity::expect_identity(end_entity.as_ref(), &self.identity).map_err(|refusal| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                refusal,
            ))))
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS server name for a host: an IP address as such, anything else as a DNS name.
///
/// Only SNI sees it: [`UpstreamIdentity`] checks the identity instead.
///
/// # Errors
///
/// The host is neither an IP address nor a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned()).map_err(|_| format!("{host:?} is no TLS server name"))
}
