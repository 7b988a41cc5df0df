//! Admission of a call, on its headers alone: who is calling, may they, and is it routed.
//!
//! In the order of `gateway/admission.py` and `gateway/forwarding.py`: the caller's certificate
//! must carry an identity and be fit for a TLS client (`UNAUTHENTICATED` otherwise; revocation,
//! chain and validity were settled by the handshake); the declared metadata must be short and
//! the policy must grant the method for the declared purpose (`PERMISSION_DENIED`); the service
//! must have an upstream (`UNIMPLEMENTED`). Nothing here reads the request body, so a refused
//! call's messages are never read at all.

use http::HeaderMap;

use crate::identity::{client_certificate_problem, spiffe_id_of, Refusal};
use crate::metadata;
use crate::policy::{Decision, Policy};
use crate::status::{Code, Status};

/// The longest value of a declared metadata key (`gateway/admission.py`).
pub const MAX_METADATA_VALUE: usize = 256;

/// Who is at the other end of a connection, by the leaf certificate its handshake verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A caller with this SPIFFE ID and a certificate fit for a client.
    Caller(String),
    /// A peer whose calls are refused with `UNAUTHENTICATED`, and why.
    Refused(Refusal),
}

impl Peer {
    /// The peer of a connection whose client presented `leaf` (DER), if any.
    #[must_use]
    pub fn of_leaf(leaf: Option<&[u8]>) -> Self {
        let Some(der) = leaf else {
            return Peer::Refused(Refusal::NoIdentity);
        };
        // The identity first, then fitness: the order of the Python refusals.
        match spiffe_id_of(der) {
            Err(error) => Peer::Refused(error.refusal()),
            Ok(caller) => match client_certificate_problem(der) {
                Some(problem) => Peer::Refused(problem),
                None => Peer::Caller(caller.to_owned()),
            },
        }
    }
}

/// An admitted call: its verified caller and what routes it.
#[derive(Debug)]
pub struct Admitted<'p, R> {
    /// The caller's SPIFFE ID.
    pub caller: &'p str,
    /// The service's full name, from the path.
    pub service: &'p str,
    /// The route found for the service.
    pub route: R,
}

/// Admit the call to `path` with `headers` from `peer`, or say why not.
///
/// `route` finds the upstream of a service, by its full name.
///
/// # Errors
///
/// The refusal, as the status to answer with.
pub fn admit<'p, R>(
    peer: &'p Peer,
    path: &'p str,
    headers: &HeaderMap,
    policy: &Policy,
    route: impl FnOnce(&str) -> Option<R>,
) -> Result<Admitted<'p, R>, Status> {
    let caller = match peer {
        Peer::Caller(caller) => caller.as_str(),
        Peer::Refused(Refusal::NoIdentity) => {
            return Err(Status::new(
                Code::Unauthenticated,
                Refusal::NoIdentity.reason(),
                "the client certificate carries no lienthong identity",
            ))
        }
        Peer::Refused(refusal) => {
            return Err(Status::new(
                Code::Unauthenticated,
                refusal.reason(),
                refusal.to_string(),
            ))
        }
    };
    let declared = |key: &str| headers.get(key).and_then(|value| value.to_str().ok());
    if metadata::CALLER_SUPPLIED.iter().any(|key| {
        headers
            .get(*key)
            .is_some_and(|value| value.len() > MAX_METADATA_VALUE)
    }) {
        return Err(Status::new(
            Code::PermissionDenied,
            "METADATA_TOO_LONG",
            format!("metadata values are at most {MAX_METADATA_VALUE} characters"),
        ));
    }
    let purpose = declared(metadata::PURPOSE);
    let decision = policy.decide(caller, path, purpose);
    if decision != Decision::Allowed {
        return Err(Status::new(
            Code::PermissionDenied,
            decision.as_str(),
            explain(decision, caller, path, purpose),
        ));
    }
    // The policy grants only paths /package.Service/Method, so the split always succeeds.
    let service = service_of(path).unwrap_or_default();
    match route(service) {
        Some(route) => Ok(Admitted {
            caller,
            service,
            route,
        }),
        None => Err(Status::new(
            Code::Unimplemented,
            "NOT_ROUTED",
            format!("{service} is not routed"),
        )),
    }
}

/// The service of a path `/package.Service/Method`.
#[must_use]
pub fn service_of(path: &str) -> Option<&str> {
    path.strip_prefix('/')?
        .split_once('/')
        .map(|(service, _)| service)
}

/// The `PERMISSION_DENIED` message, as `gateway/admission.py` words it.
fn explain(decision: Decision, caller: &str, path: &str, purpose: Option<&str>) -> String {
    match (decision, purpose) {
        (Decision::MissingPurpose, _) => {
            "every call must declare its purpose in the lienthong-purpose metadata".to_owned()
        }
        (Decision::PurposeNotGranted, Some(purpose)) => {
            format!("{caller} is not granted {path} for purpose '{purpose}'")
        }
        _ => format!("{caller} is not granted {path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const ALICE: &str = "spiffe://lienthong.local/moj/officers/alice";
    const REGISTER: &str = "/test.v1.BirthService/Register";

    fn policy() -> Policy {
        Policy::from_json(&format!(
            r#"{{"version": 1, "grants": [{{"caller": "{ALICE}", "method": "{REGISTER}",
                "purposes": ["registration"]}}], "prefix_grants": []}}"#
        ))
        .expect("a policy")
    }

    fn headers(purpose: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            metadata::PURPOSE,
            HeaderValue::from_str(purpose).expect("ascii"),
        );
        headers
    }

    fn code(result: Result<Admitted<'_, ()>, Status>) -> (Code, &'static str) {
        let status = result.expect_err("refused");
        (status.code, status.reason)
    }

    #[test]
    fn a_granted_routed_call_is_admitted() {
        let peer = Peer::Caller(ALICE.to_owned());
        let admitted = admit(
            &peer,
            REGISTER,
            &headers("registration"),
            &policy(),
            |service| (service == "test.v1.BirthService").then_some(7),
        )
        .expect("admitted");
        assert_eq!(admitted.caller, ALICE);
        assert_eq!(admitted.service, "test.v1.BirthService");
        assert_eq!(admitted.route, 7);
    }

    #[test]
    fn refusals_come_in_the_order_of_the_python_gateway() {
        let policy = policy();
        let good = headers("registration");
        let caller = Peer::Caller(ALICE.to_owned());
        let routed = |_: &str| Some(());
        let unrouted = |_: &str| None::<()>;
        let anonymous = Peer::of_leaf(None);
        assert_eq!(
            code(admit(&anonymous, REGISTER, &good, &policy, routed)),
            (Code::Unauthenticated, "NO_IDENTITY")
        );
        let ca = Peer::Refused(Refusal::CaCertificate);
        assert_eq!(
            code(admit(&ca, REGISTER, &good, &policy, routed)),
            (Code::Unauthenticated, "CA_CERTIFICATE")
        );
        let long = headers(&"a".repeat(MAX_METADATA_VALUE + 1));
        assert_eq!(
            code(admit(&caller, REGISTER, &long, &policy, routed)),
            (Code::PermissionDenied, "METADATA_TOO_LONG")
        );
        assert_eq!(
            code(admit(
                &caller,
                REGISTER,
                &headers("statistics"),
                &policy,
                routed
            )),
            (Code::PermissionDenied, "PURPOSE_NOT_GRANTED")
        );
        assert_eq!(
            code(admit(&caller, REGISTER, &HeaderMap::new(), &policy, routed)),
            (Code::PermissionDenied, "MISSING_PURPOSE")
        );
        assert_eq!(
            code(admit(
                &caller,
                "/test.v1.BirthService/Other",
                &good,
                &policy,
                routed
            )),
            (Code::PermissionDenied, "NOT_GRANTED")
        );
        assert_eq!(
            code(admit(&caller, REGISTER, &good, &policy, unrouted)),
            (Code::Unimplemented, "NOT_ROUTED")
        );
    }

    #[test]
    fn messages_say_what_the_python_ones_say() {
        let peer = Peer::Caller(ALICE.to_owned());
        let status = admit(&peer, REGISTER, &headers("statistics"), &policy(), |_| {
            Some(())
        })
        .expect_err("refused");
        assert_eq!(
            status.message,
            format!("{ALICE} is not granted {REGISTER} for purpose 'statistics'")
        );
    }

    #[test]
    fn the_service_is_the_first_part_of_the_path() {
        assert_eq!(service_of("/a.B/C"), Some("a.B"));
        assert_eq!(service_of("a.B/C"), None);
        assert_eq!(service_of("/a.B"), None);
    }
}
