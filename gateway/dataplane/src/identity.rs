//! Who a peer is, and whether its certificate may stand for it.
//!
//! This mirrors `lienthong/identity.py` (a peer's identity is the single SPIFFE URI SAN of its
//! X.509-SVID, in trust domain `lienthong.local`) and the client-certificate checks of
//! `gateway/revocation.py` (a CA:TRUE leaf, a keyUsage without digitalSignature and an
//! extendedKeyUsage without clientAuth are refused), so that the compiled data plane accepts
//! and refuses exactly the certificates the Python gateway does. Issue 15 adds two refusals
//! the Python gateway could not make: RSA keys under 2048 bits, and signatures made with SHA-1
//! (or older digests). [`expect_identity`] is the check of the other leg: the upstream's
//! certificate must carry the identity its route names.
//!
//! Everything here works on the leaf's DER as the TLS stack hands it over, after the chain,
//! validity period and revocation were checked elsewhere: nothing here verifies a signature.
//! A refusal is a [`Refusal`], whose [`Refusal::reason`] is a short, fixed label for metrics and
//! for the `purpose` of a refused handshake's audit entry. The labels reuse the categories
//! `gateway/handshake_audit.py` records today (`KEY_USAGE`, `WRONG_PURPOSE`) and the call
//! refusal `NO_IDENTITY` of `gateway/admission.py`, in the same upper-case form. Errors never
//! quote the certificate's text: it is the peer's, of any length.

use std::fmt;

use x509_parser::asn1_rs::Oid;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{ExtendedKeyUsage, GeneralName, KeyUsage};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

/// The one trust domain whose SPIFFE IDs are identities here.
pub const TRUST_DOMAIN: &str = "lienthong.local";

/// The longest SPIFFE ID, in bytes: the SPIFFE ID specification's limit.
pub const MAX_SPIFFE_ID_BYTES: usize = 2048;

/// The smallest RSA modulus, in bits, that a certificate's key may have.
pub const MIN_RSA_BITS: usize = 2048;

const SPIFFE_PREFIX: &str = "spiffe://lienthong.local/";

/// Why a certificate may not authenticate its holder.
///
/// [`Refusal::reason`] is the stable label; `Display` is a sentence for people (the details of
/// an UNAUTHENTICATED answer, a log line), worded as `gateway/revocation.py` words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The certificate, or one of its extensions, cannot be parsed (or one is duplicated).
    Unparsable,
    /// The certificate carries no SPIFFE ID of our trust domain (not exactly one URI SAN,
    /// or one that is not a SPIFFE ID of `lienthong.local`).
    NoIdentity,
    /// The leaf is a CA certificate (basicConstraints cA is true).
    CaCertificate,
    /// Its keyUsage lacks digitalSignature.
    KeyUsage,
    /// Its extendedKeyUsage lacks the purpose of its leg: clientAuth, or serverAuth.
    WrongPurpose,
    /// Its key is RSA with a modulus under [`MIN_RSA_BITS`] bits.
    WeakRsaKey,
    /// It is signed with SHA-1, MD5, MD4 or MD2.
    WeakSignature,
    /// It carries a SPIFFE ID, but not the one expected of this peer.
    WrongIdentity,
}

impl Refusal {
    /// Every refusal, in declaration order: the label values a metric can take.
    pub const ALL: [Refusal; 8] = [
        Refusal::Unparsable,
        Refusal::NoIdentity,
        Refusal::CaCertificate,
        Refusal::KeyUsage,
        Refusal::WrongPurpose,
        Refusal::WeakRsaKey,
        Refusal::WeakSignature,
        Refusal::WrongIdentity,
    ];

    /// The refusal's stable label: a metric label value and an audit entry's `purpose`.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Refusal::Unparsable => "UNPARSABLE",
            Refusal::NoIdentity => "NO_IDENTITY",
            Refusal::CaCertificate => "CA_CERTIFICATE",
            Refusal::KeyUsage => "KEY_USAGE",
            Refusal::WrongPurpose => "WRONG_PURPOSE",
            Refusal::WeakRsaKey => "WEAK_RSA_KEY",
            Refusal::WeakSignature => "WEAK_SIGNATURE",
            Refusal::WrongIdentity => "WRONG_IDENTITY",
        }
    }

    const fn sentence(self) -> &'static str {
        match self {
            Refusal::Unparsable => "it or its extensions cannot be parsed",
            Refusal::NoIdentity => "the certificate carries no lienthong identity",
            Refusal::CaCertificate => "it is a CA certificate (basicConstraints cA is true)",
            Refusal::KeyUsage => "its keyUsage lacks digitalSignature",
            Refusal::WrongPurpose => {
                "its extendedKeyUsage lacks clientAuth (serverAuth, for an upstream)"
            }
            Refusal::WeakRsaKey => "its RSA key is shorter than 2048 bits",
            Refusal::WeakSignature => "it is signed with SHA-1 or an older digest",
            Refusal::WrongIdentity => "it carries another identity than the one expected",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.sentence())
    }
}

impl std::error::Error for Refusal {}

/// Why a value or a certificate yields no SPIFFE ID; the messages of `lienthong/identity.py`,
/// without the offending text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The DER is no certificate, or its subjectAltName cannot be parsed or is duplicated.
    #[error("the certificate or its subjectAltName cannot be parsed")]
    Unparsable,
    /// The certificate has no subjectAltName extension.
    #[error("certificate has no subjectAltName, so no SPIFFE ID")]
    NoSubjectAltName,
    /// The certificate has not exactly one URI SAN (the count is given).
    #[error("an X.509-SVID has exactly one URI SAN; this certificate has {0}")]
    UriCount(usize),
    /// The value does not start with `spiffe://lienthong.local/`.
    #[error("not a SPIFFE ID of trust domain lienthong.local")]
    WrongTrustDomain,
    /// The value is longer than [`MAX_SPIFFE_ID_BYTES`] (its length is given).
    #[error("SPIFFE ID longer than 2048 bytes ({0} bytes)")]
    TooLong(usize),
    /// The value has nothing after the trust domain.
    #[error("SPIFFE ID of a workload needs a non-empty path")]
    EmptyPath,
    /// A path segment is empty, `.` or `..`, or has a byte outside `[A-Za-z0-9._-]`.
    #[error("SPIFFE ID path segments must match [A-Za-z0-9._-]+")]
    BadSegment,
}

impl IdentityError {
    /// The refusal this error amounts to: [`Refusal::Unparsable`] or [`Refusal::NoIdentity`].
    #[must_use]
    pub const fn refusal(self) -> Refusal {
        match self {
            IdentityError::Unparsable => Refusal::Unparsable,
            _ => Refusal::NoIdentity,
        }
    }
}

/// The path segments of a SPIFFE ID of [`TRUST_DOMAIN`], or why it is not one.
///
/// # Errors
///
/// Not in the trust domain, longer than [`MAX_SPIFFE_ID_BYTES`], an empty path, or a segment
/// that is empty, `.`, `..` or not of `[A-Za-z0-9._-]+` (which also refuses a trailing `/`,
/// queries, fragments and %-escapes).
pub fn spiffe_segments(spiffe_id: &str) -> Result<Vec<&str>, IdentityError> {
    let Some(path) = spiffe_id.strip_prefix(SPIFFE_PREFIX) else {
        return Err(IdentityError::WrongTrustDomain);
    };
    if spiffe_id.len() > MAX_SPIFFE_ID_BYTES {
        return Err(IdentityError::TooLong(spiffe_id.len()));
    }
    if path.is_empty() {
        return Err(IdentityError::EmptyPath);
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().all(|segment| is_segment(segment)) {
        Ok(segments)
    } else {
        Err(IdentityError::BadSegment)
    }
}

fn is_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// `value` itself if it is a SPIFFE ID of [`TRUST_DOMAIN`].
///
/// # Errors
///
/// As [`spiffe_segments`].
pub fn check_spiffe_id(value: &str) -> Result<&str, IdentityError> {
    spiffe_segments(value).map(|_| value)
}

/// The SPIFFE ID of a DER certificate: its one URI SAN, in our trust domain (X.509-SVID).
///
/// # Errors
///
/// The DER is no certificate or its subjectAltName cannot be parsed; it has no
/// subjectAltName or not exactly one URI in it; or that URI is not a SPIFFE ID of ours.
pub fn spiffe_id_of(der: &[u8]) -> Result<&str, IdentityError> {
    let certificate = parse(der).map_err(|_| IdentityError::Unparsable)?;
    spiffe_id_in(&certificate)
}

fn spiffe_id_in<'a>(certificate: &X509Certificate<'a>) -> Result<&'a str, IdentityError> {
    let san = certificate
        .subject_alternative_name()
        .map_err(|_| IdentityError::Unparsable)?
        .ok_or(IdentityError::NoSubjectAltName)?;
    let mut uris = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => check_spiffe_id(uri),
        (None, _) => Err(IdentityError::UriCount(0)),
        (Some(_), Some(_)) => Err(IdentityError::UriCount(2 + uris.count())),
    }
}

/// Why a verified certificate may not authenticate a TLS client, or `None` if it may.
///
/// Refused, in this order: a certificate or extension that cannot be parsed (or a duplicated
/// extension), a CA certificate, a keyUsage without digitalSignature, an extendedKeyUsage
/// without clientAuth (as `gateway/revocation.py`), then a signature with SHA-1 or an older
/// digest and an RSA key under [`MIN_RSA_BITS`] bits (issue 15). The identity is not looked
/// at: a certificate of the CA without one is refused per call, with [`Refusal::NoIdentity`].
#[must_use]
pub fn client_certificate_problem(der: &[u8]) -> Option<Refusal> {
    parse(der)
        .and_then(|certificate| fitness(&certificate, Leg::Client))
        .err()
}

/// Whether an upstream's verified certificate carries exactly `expected_spiffe_id`.
///
/// The certificate must also be fit for a TLS server, with the checks of
/// [`client_certificate_problem`] except that an extendedKeyUsage, if present, must include
/// serverAuth; these are made first.
///
/// # Errors
///
/// The first problem found; [`Refusal::NoIdentity`] without a SPIFFE ID of ours, and
/// [`Refusal::WrongIdentity`] with another one.
pub fn expect_identity(der: &[u8], expected_spiffe_id: &str) -> Result<(), Refusal> {
    let certificate = parse(der)?;
    fitness(&certificate, Leg::Server)?;
    let found = spiffe_id_in(&certificate).map_err(IdentityError::refusal)?;
    if found == expected_spiffe_id {
        Ok(())
    } else {
        Err(Refusal::WrongIdentity)
    }
}

/// Which end of a TLS connection a certificate authenticates.
#[derive(Clone, Copy)]
enum Leg {
    Client,
    Server,
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, Refusal> {
    match X509Certificate::from_der(der) {
        Ok(([], certificate)) => Ok(certificate),
        _ => Err(Refusal::Unparsable),
    }
}

fn fitness(certificate: &X509Certificate<'_>, leg: Leg) -> Result<(), Refusal> {
    let uses = Uses::of(certificate)?;
    if uses.ca {
        return Err(Refusal::CaCertificate);
    }
    if uses.key_usage.is_some_and(|key| !key.digital_signature()) {
        return Err(Refusal::KeyUsage);
    }
    if uses
        .extended
        .is_some_and(|extended| !leg.allowed_by(extended))
    {
        return Err(Refusal::WrongPurpose);
    }
    if is_weak_signature(&certificate.signature_algorithm)?
        || is_weak_signature(&certificate.tbs_certificate.signature)?
    {
        return Err(Refusal::WeakSignature);
    }
    if rsa_bits(certificate.public_key())?.is_some_and(|bits| bits < MIN_RSA_BITS) {
        return Err(Refusal::WeakRsaKey);
    }
    Ok(())
}

impl Leg {
    fn allowed_by(self, extended: &ExtendedKeyUsage<'_>) -> bool {
        // As the Python check: anyExtendedKeyUsage does not stand in for the purpose.
        match self {
            Leg::Client => extended.client_auth,
            Leg::Server => extended.server_auth,
        }
    }
}

/// The extensions that say what a certificate may be used for.
struct Uses<'c> {
    ca: bool,
    key_usage: Option<&'c KeyUsage>,
    extended: Option<&'c ExtendedKeyUsage<'c>>,
}

impl<'c> Uses<'c> {
    fn of(certificate: &'c X509Certificate<'_>) -> Result<Self, Refusal> {
        let extensions = certificate.extensions();
        // x509-parser keeps a known extension it cannot parse as a ParseError, which its
        // accessors would report as absent: a garbled basicConstraints must not read as CA:FALSE.
        let garbled = extensions
            .iter()
            .any(|extension| extension.parsed_extension().error().is_some());
        let duplicated = extensions.iter().enumerate().any(|(index, extension)| {
            extensions[index + 1..]
                .iter()
                .any(|other| other.oid == extension.oid)
        });
        if garbled || duplicated {
            return Err(Refusal::Unparsable);
        }
        let unparsable = |_| Refusal::Unparsable;
        let constraints = certificate.basic_constraints().map_err(unparsable)?;
        Ok(Uses {
            ca: constraints.is_some_and(|constraints| constraints.value.ca),
            key_usage: certificate
                .key_usage()
                .map_err(unparsable)?
                .map(|key| key.value),
            extended: certificate
                .extended_key_usage()
                .map_err(unparsable)?
                .map(|extended| extended.value),
        })
    }
}

// Object identifiers, by their arcs.
const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113_549, 1, 1, 1];
const RSASSA_PSS: &[u64] = &[1, 2, 840, 113_549, 1, 1, 10];
/// Signature algorithms whose digest is SHA-1, SHA-0, MD5, MD4 or MD2.
const WEAK_SIGNATURES: &[&[u64]] = &[
    &[1, 2, 840, 113_549, 1, 1, 2], // md2WithRSAEncryption
    &[1, 2, 840, 113_549, 1, 1, 3], // md4WithRSAEncryption
    &[1, 2, 840, 113_549, 1, 1, 4], // md5WithRSAEncryption
    &[1, 2, 840, 113_549, 1, 1, 5], // sha1WithRSAEncryption
    &[1, 2, 840, 10_040, 4, 3],     // dsa-with-sha1
    &[1, 2, 840, 10_045, 4, 1],     // ecdsa-with-SHA1
    &[1, 3, 14, 3, 2, 13],          // dsaWithSHA (SHA-0), OIW
    &[1, 3, 14, 3, 2, 15],          // shaWithRSASignature (SHA-0), OIW
    &[1, 3, 14, 3, 2, 25],          // md5WithRSASignature, OIW
    &[1, 3, 14, 3, 2, 27],          // dsaWithSHA1, OIW
    &[1, 3, 14, 3, 2, 29],          // sha1WithRSASignature, OIW
];
/// Digests too weak to sign with: an RSASSA-PSS signature's hash.
const WEAK_DIGESTS: &[&[u64]] = &[
    &[1, 2, 840, 113_549, 2, 2], // md2
    &[1, 2, 840, 113_549, 2, 4], // md4
    &[1, 2, 840, 113_549, 2, 5], // md5
    &[1, 3, 14, 3, 2, 26],       // sha1
];

fn is(oid: &Oid<'_>, arcs: &[u64]) -> bool {
    oid.iter()
        .is_some_and(|found| found.eq(arcs.iter().copied()))
}

fn is_weak_signature(algorithm: &AlgorithmIdentifier<'_>) -> Result<bool, Refusal> {
    let oid = &algorithm.algorithm;
    if is(oid, RSASSA_PSS) {
        // RFC 4055: the parameters are required; an absent hash means SHA-1.
        let parameters = algorithm.parameters.as_ref().ok_or(Refusal::Unparsable)?;
        let pss = RsaSsaPssParams::try_from(parameters).map_err(|_| Refusal::Unparsable)?;
        let digest = pss.hash_algorithm_oid();
        return Ok(WEAK_DIGESTS.iter().any(|weak| is(digest, weak)));
    }
    Ok(WEAK_SIGNATURES.iter().any(|weak| is(oid, weak)))
}

/// The bit length of an RSA key's modulus, or `None` for a key of another kind.
fn rsa_bits(key: &SubjectPublicKeyInfo<'_>) -> Result<Option<usize>, Refusal> {
    let oid = &key.algorithm.algorithm;
    if !is(oid, RSA_ENCRYPTION) && !is(oid, RSASSA_PSS) {
        return Ok(None);
    }
    let (_, rsa) =
        RSAPublicKey::from_der(&key.subject_public_key.data).map_err(|_| Refusal::Unparsable)?;
    Ok(Some(bit_length(rsa.modulus)))
}

/// The bit length of a big-endian unsigned integer (leading zero bytes ignored).
fn bit_length(bytes: &[u8]) -> usize {
    let significant = bytes
        .iter()
        .position(|&byte| byte != 0)
        .map_or(&[][..], |start| &bytes[start..]);
    match significant.first() {
        None => 0,
        Some(&first) => (significant.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, Certificate, CertificateParams, CustomExtension, DnType,
        ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
        SignatureAlgorithm,
    };

    const REGISTRY: &str = "spiffe://lienthong.local/moj/civil-registry";
    const POPULATION: &str = "spiffe://lienthong.local/mps/population";

    /// A CA, and leaves issued by it.
    struct Ca {
        certificate: Certificate,
        key: KeyPair,
    }

    impl Ca {
        fn new() -> Self {
            let mut params = CertificateParams::default();
            params
                .distinguished_name
                .push(DnType::CommonName, "lienthong test CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().expect("a CA key");
            let certificate = params.self_signed(&key).expect("a CA certificate");
            Ca { certificate, key }
        }

        fn issue(&self, params: CertificateParams) -> Vec<u8> {
            let key = KeyPair::generate().expect("a leaf key");
            self.issue_for(params, &key)
        }

        fn issue_for(&self, params: CertificateParams, key: &impl PublicKeyData) -> Vec<u8> {
            params
                .signed_by(key, &self.certificate, &self.key)
                .expect("a leaf certificate")
                .der()
                .to_vec()
        }
    }

    fn uri(value: &str) -> SanType {
        SanType::URI(value.try_into().expect("an IA5 string"))
    }

    /// A good client's parameters: one SPIFFE ID, CA:FALSE, digitalSignature, clientAuth.
    fn client(spiffe_id: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "a lienthong system");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.subject_alt_names = vec![uri(spiffe_id)];
        params
    }

    fn server(spiffe_id: &str) -> CertificateParams {
        let mut params = client(spiffe_id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params
    }

    /// An RSA public key whose modulus has exactly `bits` bits, for rcgen to certify: rcgen
    /// (with ring) can neither make nor import an RSA key this small, but it certifies any
    /// public key. The modulus is no product of primes; only its length matters here.
    struct RsaKey {
        der: Vec<u8>,
    }

    impl RsaKey {
        fn of_bits(bits: usize) -> Self {
            let mut modulus = vec![0xa5_u8; bits.div_ceil(8)];
            modulus[0] = 1 << ((bits - 1) % 8);
            if let Some(last) = modulus.last_mut() {
                *last |= 1;
            }
            let integer = |value: &[u8]| {
                let mut content = Vec::new();
                if value[0] & 0x80 != 0 {
                    content.push(0);
                }
                content.extend_from_slice(value);
                der(0x02, &content)
            };
            let mut fields = integer(&modulus);
            fields.extend(integer(&[0x01, 0x00, 0x01]));
            RsaKey {
                der: der(0x30, &fields),
            }
        }
    }

    impl PublicKeyData for RsaKey {
        fn der_bytes(&self) -> &[u8] {
            &self.der
        }

        fn algorithm(&self) -> &SignatureAlgorithm {
            &rcgen::PKCS_RSA_SHA256
        }
    }

    /// A DER type-length-value.
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let length = content.len();
        let mut out = vec![tag];
        if length < 0x80 {
            out.push(u8::try_from(length).expect("short"));
        } else {
            let bytes: Vec<u8> = length
                .to_be_bytes()
                .into_iter()
                .skip_while(|&byte| byte == 0)
                .collect();
            out.push(0x80 | u8::try_from(bytes.len()).expect("a length of lengths"));
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }

    fn fixture(name: &str) -> &'static [u8] {
        match name {
            "rsa1024" => include_bytes!("../tests/fixtures/rsa1024.der"),
            "rsa2048" => include_bytes!("../tests/fixtures/rsa2048.der"),
            "rsa_sha1" => include_bytes!("../tests/fixtures/rsa_sha1.der"),
            "rsa_md5" => include_bytes!("../tests/fixtures/rsa_md5.der"),
            "rsa_pss_sha1" => include_bytes!("../tests/fixtures/rsa_pss_sha1.der"),
            "rsa_pss_sha256" => include_bytes!("../tests/fixtures/rsa_pss_sha256.der"),
            "ecdsa_sha1" => include_bytes!("../tests/fixtures/ecdsa_sha1.der"),
            _ => panic!("no fixture {name}"),
        }
    }

    // --- SPIFFE IDs, as lienthong/identity.py ------------------------------------------------

    #[test]
    fn a_spiffe_id_of_our_trust_domain_yields_its_segments() {
        assert_eq!(
            spiffe_segments("spiffe://lienthong.local/moj/officers/alice-2.b_c"),
            Ok(vec!["moj", "officers", "alice-2.b_c"])
        );
        assert_eq!(check_spiffe_id(REGISTRY), Ok(REGISTRY));
    }

    #[test]
    fn values_that_are_no_spiffe_id_of_ours_are_refused() {
        let cases = [
            (
                "spiffe://elsewhere.org/moj/x",
                IdentityError::WrongTrustDomain,
            ),
            (
                "spiffe://lienthong.localx/moj",
                IdentityError::WrongTrustDomain,
            ),
            (
                "SPIFFE://lienthong.local/moj",
                IdentityError::WrongTrustDomain,
            ),
            (
                "https://lienthong.local/moj",
                IdentityError::WrongTrustDomain,
            ),
            ("spiffe://lienthong.local", IdentityError::WrongTrustDomain),
            ("spiffe://lienthong.local/", IdentityError::EmptyPath),
            ("spiffe://lienthong.local/moj/", IdentityError::BadSegment),
            ("spiffe://lienthong.local/moj//x", IdentityError::BadSegment),
            (
                "spiffe://lienthong.local/moj/./x",
                IdentityError::BadSegment,
            ),
            ("spiffe://lienthong.local/moj/..", IdentityError::BadSegment),
            (
                "spiffe://lienthong.local/moj/a%2Fb",
                IdentityError::BadSegment,
            ),
            (
                "spiffe://lienthong.local/moj/a?b",
                IdentityError::BadSegment,
            ),
            (
                "spiffe://lienthong.local/moj/a#b",
                IdentityError::BadSegment,
            ),
            (
                "spiffe://lienthong.local/moj/a b",
                IdentityError::BadSegment,
            ),
            (
                "spiffe://lienthong.local/moj/officers/*",
                IdentityError::BadSegment,
            ),
            (
                "spiffe://lienthong.local/moj/đinh",
                IdentityError::BadSegment,
            ),
        ];
        for (value, error) in cases {
            assert_eq!(spiffe_segments(value), Err(error), "{value}");
            assert_eq!(check_spiffe_id(value), Err(error), "{value}");
        }
    }

    #[test]
    fn a_spiffe_id_may_have_2048_bytes_and_no_more() {
        let longest = format!("{SPIFFE_PREFIX}{}", "a".repeat(2048 - SPIFFE_PREFIX.len()));
        assert_eq!(longest.len(), MAX_SPIFFE_ID_BYTES);
        assert!(check_spiffe_id(&longest).is_ok());
        let longer = format!("{longest}b");
        assert_eq!(check_spiffe_id(&longer), Err(IdentityError::TooLong(2049)));
    }

    // --- The identity of a certificate ----------------------------------------------------

    #[test]
    fn a_good_client_certificate_has_its_identity_and_no_problem() {
        let der = Ca::new().issue(client(REGISTRY));
        assert_eq!(spiffe_id_of(&der), Ok(REGISTRY));
        assert_eq!(client_certificate_problem(&der), None);
    }

    #[test]
    fn a_certificate_without_exactly_one_uri_san_has_no_identity() {
        let ca = Ca::new();
        let mut none = client(REGISTRY);
        none.subject_alt_names = vec![];
        let mut dns_only = client(REGISTRY);
        dns_only.subject_alt_names = vec![SanType::DnsName("localhost".try_into().expect("dns"))];
        let mut two = client(REGISTRY);
        two.subject_alt_names = vec![uri(REGISTRY), uri(POPULATION)];
        let mut with_dns = client(REGISTRY);
        with_dns
            .subject_alt_names
            .push(SanType::DnsName("localhost".try_into().expect("dns")));
        assert_eq!(
            spiffe_id_of(&ca.issue(none)),
            Err(IdentityError::NoSubjectAltName)
        );
        assert_eq!(
            spiffe_id_of(&ca.issue(dns_only)),
            Err(IdentityError::UriCount(0))
        );
        assert_eq!(
            spiffe_id_of(&ca.issue(two)),
            Err(IdentityError::UriCount(2))
        );
        assert_eq!(spiffe_id_of(&ca.issue(with_dns)), Ok(REGISTRY));
    }

    #[test]
    fn a_certificate_of_another_trust_domain_or_with_bad_segments_has_no_identity() {
        let ca = Ca::new();
        for (value, error) in [
            (
                "spiffe://elsewhere.org/moj/civil-registry",
                IdentityError::WrongTrustDomain,
            ),
            (
                "spiffe://lienthong.local/moj/../mps",
                IdentityError::BadSegment,
            ),
            ("spiffe://lienthong.local/moj//x", IdentityError::BadSegment),
            ("spiffe://lienthong.local/moj/x/", IdentityError::BadSegment),
            ("spiffe://lienthong.local/", IdentityError::EmptyPath),
        ] {
            let der = ca.issue(client(value));
            assert_eq!(spiffe_id_of(&der), Err(error), "{value}");
            assert_eq!(error.refusal(), Refusal::NoIdentity);
            // The identity is no concern of the handshake: such a certificate is refused per call.
            assert_eq!(client_certificate_problem(&der), None, "{value}");
        }
    }

    #[test]
    fn bytes_that_are_no_certificate_are_unparsable() {
        let der = Ca::new().issue(client(REGISTRY));
        let mut trailing = der.clone();
        trailing.push(0);
        for bytes in [
            &b""[..],
            b"not a certificate",
            &der[..der.len() - 1],
            &trailing,
        ] {
            assert_eq!(spiffe_id_of(bytes), Err(IdentityError::Unparsable));
            assert_eq!(client_certificate_problem(bytes), Some(Refusal::Unparsable));
            assert_eq!(expect_identity(bytes, REGISTRY), Err(Refusal::Unparsable));
        }
        assert_eq!(IdentityError::Unparsable.refusal(), Refusal::Unparsable);
    }

    // --- Client certificates, as gateway/revocation.py ---------------------------------------

    #[test]
    fn a_ca_certificate_may_not_authenticate_a_client() {
        let ca = Ca::new();
        let mut leaf = client(REGISTRY);
        leaf.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        assert_eq!(
            client_certificate_problem(&ca.issue(leaf)),
            Some(Refusal::CaCertificate)
        );
        assert_eq!(
            client_certificate_problem(ca.certificate.der()),
            Some(Refusal::CaCertificate)
        );
    }

    #[test]
    fn a_key_usage_without_digital_signature_may_not_authenticate_a_client() {
        let mut leaf = client(REGISTRY);
        leaf.key_usages = vec![KeyUsagePurpose::KeyAgreement];
        assert_eq!(
            client_certificate_problem(&Ca::new().issue(leaf)),
            Some(Refusal::KeyUsage)
        );
    }

    #[test]
    fn a_server_only_certificate_may_not_authenticate_a_client() {
        let mut any = client(REGISTRY);
        any.extended_key_usages = vec![ExtendedKeyUsagePurpose::Any];
        let ca = Ca::new();
        for params in [server(REGISTRY), any] {
            assert_eq!(
                client_certificate_problem(&ca.issue(params)),
                Some(Refusal::WrongPurpose)
            );
        }
    }

    #[test]
    fn without_key_usage_extensions_or_basic_constraints_a_certificate_is_fit() {
        let mut bare = client(REGISTRY);
        bare.is_ca = IsCa::NoCa;
        bare.key_usages = vec![];
        bare.extended_key_usages = vec![];
        assert_eq!(client_certificate_problem(&Ca::new().issue(bare)), None);
    }

    #[test]
    fn a_garbled_or_duplicated_extension_makes_a_certificate_unparsable() {
        let ca = Ca::new();
        let mut garbled = client(REGISTRY);
        garbled.is_ca = IsCa::NoCa;
        // basicConstraints whose content is an INTEGER, not a SEQUENCE.
        garbled.custom_extensions = vec![CustomExtension::from_oid_content(
            &[2, 5, 29, 19],
            vec![0x02, 0x01, 0x01],
        )];
        let mut duplicated = client(REGISTRY);
        duplicated.custom_extensions = vec![CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            der(0x30, &der(0x86, POPULATION.as_bytes())),
        )];
        let garbled = ca.issue(garbled);
        let duplicated = ca.issue(duplicated);
        // x509-parser reads both, and alone would take the garbled cA flag for absent.
        let (_, parsed) = X509Certificate::from_der(&garbled).expect("parsed");
        assert!(matches!(parsed.basic_constraints(), Ok(None)));
        assert!(X509Certificate::from_der(&duplicated).is_ok());
        for der in [garbled, duplicated] {
            assert_eq!(client_certificate_problem(&der), Some(Refusal::Unparsable));
            assert_eq!(expect_identity(&der, REGISTRY), Err(Refusal::Unparsable));
        }
    }

    // --- Issue 15: weak keys and signatures --------------------------------------------------

    #[test]
    fn rsa_keys_under_2048_bits_are_refused() {
        let ca = Ca::new();
        for (bits, problem) in [
            (1024, Some(Refusal::WeakRsaKey)),
            (2047, Some(Refusal::WeakRsaKey)),
            (2048, None),
            (4096, None),
        ] {
            let der = ca.issue_for(client(REGISTRY), &RsaKey::of_bits(bits));
            assert_eq!(client_certificate_problem(&der), problem, "{bits} bits");
        }
    }

    #[test]
    fn rsa_keys_made_by_openssl_are_measured_alike() {
        assert_eq!(
            client_certificate_problem(fixture("rsa1024")),
            Some(Refusal::WeakRsaKey)
        );
        assert_eq!(client_certificate_problem(fixture("rsa2048")), None);
        assert_eq!(spiffe_id_of(fixture("rsa1024")), Ok(REGISTRY));
    }

    #[test]
    fn signatures_with_sha1_or_md5_are_refused() {
        for name in ["rsa_sha1", "rsa_md5", "rsa_pss_sha1", "ecdsa_sha1"] {
            assert_eq!(
                client_certificate_problem(fixture(name)),
                Some(Refusal::WeakSignature),
                "{name}"
            );
            assert_eq!(spiffe_id_of(fixture(name)), Ok(REGISTRY), "{name}");
        }
        assert_eq!(client_certificate_problem(fixture("rsa_pss_sha256")), None);
    }

    #[test]
    fn a_weak_upstream_is_refused_too() {
        let der = Ca::new().issue_for(server(POPULATION), &RsaKey::of_bits(1024));
        assert_eq!(expect_identity(&der, POPULATION), Err(Refusal::WeakRsaKey));
    }

    #[test]
    fn the_bit_length_ignores_leading_zeros() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[0, 1]), 1);
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x7f, 0xff]), 15);
    }

    // --- The upstream leg ------------------------------------------------------------------

    #[test]
    fn an_upstream_must_carry_exactly_the_expected_identity() {
        let ca = Ca::new();
        let population = ca.issue(server(POPULATION));
        assert_eq!(expect_identity(&population, POPULATION), Ok(()));
        assert_eq!(
            expect_identity(&population, REGISTRY),
            Err(Refusal::WrongIdentity)
        );
        let deeper = format!("{POPULATION}/x");
        assert_eq!(
            expect_identity(&population, &deeper),
            Err(Refusal::WrongIdentity)
        );
        let mut anonymous = server(POPULATION);
        anonymous.subject_alt_names = vec![SanType::DnsName("localhost".try_into().expect("dns"))];
        assert_eq!(
            expect_identity(&ca.issue(anonymous), POPULATION),
            Err(Refusal::NoIdentity)
        );
    }

    #[test]
    fn an_upstream_needs_server_auth_if_it_names_purposes() {
        let ca = Ca::new();
        let mut both = server(POPULATION);
        both.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let mut none = server(POPULATION);
        none.extended_key_usages = vec![];
        assert_eq!(expect_identity(&ca.issue(both), POPULATION), Ok(()));
        assert_eq!(expect_identity(&ca.issue(none), POPULATION), Ok(()));
        assert_eq!(
            expect_identity(&ca.issue(client(POPULATION)), POPULATION),
            Err(Refusal::WrongPurpose)
        );
        let mut ca_leaf = server(POPULATION);
        ca_leaf.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        assert_eq!(
            expect_identity(&ca.issue(ca_leaf), POPULATION),
            Err(Refusal::CaCertificate)
        );
    }

    // --- The labels ------------------------------------------------------------------------

    #[test]
    fn reasons_are_distinct_upper_snake_case_labels() {
        let reasons: Vec<&str> = Refusal::ALL
            .iter()
            .map(|refusal| refusal.reason())
            .collect();
        for (index, reason) in reasons.iter().enumerate() {
            assert!(!reasons[index + 1..].contains(reason), "{reason} twice");
            assert!(reason
                .bytes()
                .all(|byte| byte.is_ascii_uppercase() || byte == b'_'));
        }
        // The names gateway/handshake_audit.py and gateway/admission.py already record.
        assert_eq!(Refusal::KeyUsage.reason(), "KEY_USAGE");
        assert_eq!(Refusal::WrongPurpose.reason(), "WRONG_PURPOSE");
        assert_eq!(Refusal::NoIdentity.reason(), "NO_IDENTITY");
        // The sentences say what the Python ones say.
        assert!(Refusal::CaCertificate
            .to_string()
            .contains("CA certificate"));
        assert!(Refusal::KeyUsage.to_string().contains("digitalSignature"));
    }
}
