//! Which caller may call which method, for which purpose: the gateway's access policy.
//!
//! This mirrors `Policy.decide` of `gateway/policy.py`, so that the compiled data plane
//! decides every call as the Python gateway does. The Python control plane stays the only
//! reader of the TOML policy language (`lienthong policy check`): it checks the file against
//! the contracts and hands over the compiled form, `Policy.to_json()`, which is all this
//! module reads. That document, version 1, is
//!
//! ```json
//! {"version": 1,
//!  "grants": [{"caller": "spiffe://…", "method": "/pkg.Service/Method", "purposes": ["…"]}],
//!  "prefix_grants": [{"caller": "spiffe://…/officers", "method": "…", "purposes": ["…"]}]}
//! ```
//!
//! A grant's caller is a SPIFFE ID; a prefix grant's caller is a prefix kept without its `/*`,
//! granting each caller exactly one path segment below it. Grants add up, and everything not
//! granted is denied. As in Python, a call is decided by two hash lookups whatever the number
//! of grants: its (caller, method), and its (parent path, method) among the prefix grants.
//! The test vectors of `tests/vectors/policy_decisions.json`, written by
//! `tools/policy_vectors.py` from `config/policy.toml`, hold both implementations to the same
//! answers.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize};

use crate::identity::check_spiffe_id;

/// The version of the compiled policy document this module reads.
pub const VERSION: u64 = 1;

/// The outcome of a policy check; anything but [`Decision::Allowed`] is a refusal reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Decision {
    /// The caller is granted the method for the declared purpose.
    Allowed,
    /// No grant names this caller (or its prefix) and method.
    NotGranted,
    /// The method is granted, but the call declares no purpose.
    MissingPurpose,
    /// The method is granted, but not for the declared purpose.
    PurposeNotGranted,
}

impl Decision {
    /// The decision's name, as Python's `Decision` spells it (an `ErrorInfo` reason).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "ALLOWED",
            Decision::NotGranted => "NOT_GRANTED",
            Decision::MissingPurpose => "MISSING_PURPOSE",
            Decision::PurposeNotGranted => "PURPOSE_NOT_GRANTED",
        }
    }

    /// Whether the call may go on.
    #[must_use]
    pub const fn is_allowed(self) -> bool {
        matches!(self, Decision::Allowed)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Why a compiled policy document cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The text is not JSON of the document's form (unknown keys included).
    #[error("the compiled policy is not a JSON policy document: {0}")]
    Json(#[from] serde_json::Error),
    /// The document is of another version than [`VERSION`].
    #[error("compiled policy version {0} is not supported: only version 1 is")]
    Version(u64),
    /// A grant's caller is not a SPIFFE ID of our trust domain.
    #[error("{table} {number}: the caller is not a SPIFFE ID of lienthong.local: {caller:?}")]
    Caller {
        /// `grants` or `prefix_grants`.
        table: &'static str,
        /// The grant's place in its list, from 1.
        number: usize,
        /// The caller as written.
        caller: String,
    },
    /// A grant's method is not a wire path `/package.Service/Method`.
    #[error("{table} {number}: the method is not a path /package.Service/Method: {method:?}")]
    Method {
        /// `grants` or `prefix_grants`.
        table: &'static str,
        /// The grant's place in its list, from 1.
        number: usize,
        /// The method as written.
        method: String,
    },
    /// A grant has no purposes, or one that is not a lower-case word with hyphens.
    #[error(
        "{table} {number}: purposes must be a non-empty list of lower-case words with hyphens"
    )]
    Purposes {
        /// `grants` or `prefix_grants`.
        table: &'static str,
        /// The grant's place in its list, from 1.
        number: usize,
    },
    /// Two grants of one list name the same caller and method.
    #[error("{table} {number}: a second grant for caller {caller:?} and method {method:?}")]
    Duplicate {
        /// `grants` or `prefix_grants`.
        table: &'static str,
        /// The second grant's place in its list, from 1.
        number: usize,
        /// The caller of both.
        caller: String,
        /// The method of both.
        method: String,
    },
}

/// The compiled policy: granted purposes per (caller, method) and per (prefix, method).
///
/// Made with [`Policy::from_json`] (or serde) from `Policy.to_json()` of `gateway/policy.py`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    grants: HashMap<(String, String), Purposes>,
    prefix_grants: HashMap<(String, String), Purposes>,
}

impl Policy {
    /// Read the compiled policy document.
    ///
    /// # Errors
    ///
    /// Not JSON of the document's form, another version, or a grant that is not one (see
    /// [`PolicyError`]).
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        Self::from_document(serde_json::from_str(text)?)
    }

    /// Whether `caller` may call `method` (`/pkg.Service/Method`) for `purpose`.
    ///
    /// An empty purpose is no purpose, as in Python.
    #[must_use]
    pub fn decide(&self, caller: &str, method: &str, purpose: Option<&str>) -> Decision {
        let exact = self.grants.get(&(caller, method) as &dyn Key);
        // A caller with no "/" has the empty parent and itself as last segment, as Python's
        // rpartition gives; an empty last segment is no caller one segment below the prefix.
        let (parent, last) = caller.rsplit_once('/').unwrap_or(("", caller));
        let prefixed = if last.is_empty() {
            None
        } else {
            self.prefix_grants.get(&(parent, method) as &dyn Key)
        };
        if exact.is_none() && prefixed.is_none() {
            return Decision::NotGranted;
        }
        let Some(purpose) = purpose.filter(|purpose| !purpose.is_empty()) else {
            return Decision::MissingPurpose;
        };
        if [exact, prefixed]
            .into_iter()
            .flatten()
            .any(|purposes| purposes.contains(purpose))
        {
            Decision::Allowed
        } else {
            Decision::PurposeNotGranted
        }
    }

    /// How many (caller, method) pairs the exact grants name.
    #[must_use]
    pub fn exact_grants(&self) -> usize {
        self.grants.len()
    }

    /// How many (prefix, method) pairs the prefix grants name.
    #[must_use]
    pub fn prefix_grants(&self) -> usize {
        self.prefix_grants.len()
    }

    fn from_document(document: Document) -> Result<Self, PolicyError> {
        if document.version != VERSION {
            return Err(PolicyError::Version(document.version));
        }
        Ok(Policy {
            grants: table("grants", document.grants)?,
            prefix_grants: table("prefix_grants", document.prefix_grants)?,
        })
    }
}

impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let document = Document::deserialize(deserializer)?;
        Policy::from_document(document).map_err(serde::de::Error::custom)
    }
}

/// The compiled policy document, version 1, as `Policy.to_json()` writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u64,
    grants: Vec<Grant>,
    prefix_grants: Vec<Grant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Grant {
    caller: String,
    method: String,
    purposes: Vec<String>,
}

fn table(
    name: &'static str,
    grants: Vec<Grant>,
) -> Result<HashMap<(String, String), Purposes>, PolicyError> {
    let mut table = HashMap::with_capacity(grants.len());
    for (index, grant) in grants.into_iter().enumerate() {
        let number = index + 1;
        if check_spiffe_id(&grant.caller).is_err() {
            return Err(PolicyError::Caller {
                table: name,
                number,
                caller: grant.caller,
            });
        }
        if !is_method_path(&grant.method) {
            return Err(PolicyError::Method {
                table: name,
                number,
                method: grant.method,
            });
        }
        let purposes = Purposes::new(grant.purposes).ok_or(PolicyError::Purposes {
            table: name,
            number,
        })?;
        let key = (grant.caller, grant.method);
        if table.contains_key(&key) {
            let (caller, method) = key;
            return Err(PolicyError::Duplicate {
                table: name,
                number,
                caller,
                method,
            });
        }
        table.insert(key, purposes);
    }
    Ok(table)
}

/// Whether `text` is `/package.Service/Method`: two non-empty parts after a leading `/`.
fn is_method_path(text: &str) -> bool {
    text.strip_prefix('/')
        .and_then(|path| path.split_once('/'))
        .is_some_and(|(service, method)| {
            !service.is_empty() && !method.is_empty() && !method.contains('/')
        })
}

/// Whether `text` is a purpose: lower-case words of letters and digits joined by hyphens,
/// starting with a letter (`gateway/policy.py`'s `^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$`).
fn is_purpose(text: &str) -> bool {
    text.starts_with(|first: char| first.is_ascii_lowercase())
        && text.split('-').all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
        })
}

/// The purposes granted for one (caller, method): a few words, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Purposes(Box<[String]>);

impl Purposes {
    fn new(mut purposes: Vec<String>) -> Option<Self> {
        if purposes.is_empty() || !purposes.iter().all(|purpose| is_purpose(purpose)) {
            return None;
        }
        purposes.sort_unstable();
        purposes.dedup();
        Some(Purposes(purposes.into_boxed_slice()))
    }

    fn contains(&self, purpose: &str) -> bool {
        self.0
            .binary_search_by(|granted| granted.as_str().cmp(purpose))
            .is_ok()
    }
}

/// A (caller, method) pair: owned as a table's key, borrowed for a lookup, so that a call is
/// decided without building a key. Hashed and compared as the tuple `(String, String)` is.
trait Key {
    fn caller(&self) -> &str;
    fn method(&self) -> &str;
}

impl Key for (String, String) {
    fn caller(&self) -> &str {
        &self.0
    }

    fn method(&self) -> &str {
        &self.1
    }
}

impl Key for (&str, &str) {
    fn caller(&self) -> &str {
        self.0
    }

    fn method(&self) -> &str {
        self.1
    }
}

impl<'a> Borrow<dyn Key + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn Key + 'a) {
        self
    }
}

impl Hash for dyn Key + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // What the derived Hash of (String, String) does: each field's str, in order.
        self.caller().hash(state);
        self.method().hash(state);
    }
}

impl PartialEq for dyn Key + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.caller() == other.caller() && self.method() == other.method()
    }
}

impl Eq for dyn Key + '_ {}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFICERS: &str = "spiffe://lienthong.local/moj/officers";
    const ALICE: &str = "spiffe://lienthong.local/moj/officers/alice";
    const REGISTRY: &str = "spiffe://lienthong.local/moj/civil-registry";
    const REGISTER: &str = "/test.v1.BirthService/Register";
    const ISSUE: &str = "/test.v1.PinService/Issue";

    fn document(grants: &str, prefix_grants: &str) -> String {
        format!(r#"{{"version": 1, "grants": [{grants}], "prefix_grants": [{prefix_grants}]}}"#)
    }

    fn grant(caller: &str, method: &str, purposes: &str) -> String {
        format!(r#"{{"caller": "{caller}", "method": "{method}", "purposes": [{purposes}]}}"#)
    }

    fn policy(grants: &str, prefix_grants: &str) -> Policy {
        Policy::from_json(&document(grants, prefix_grants)).expect("a policy")
    }

    fn officers() -> Policy {
        policy("", &grant(OFFICERS, REGISTER, r#""registration""#))
    }

    #[derive(Deserialize)]
    struct Vectors {
        policy: Policy,
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        caller: String,
        method: String,
        purpose: Option<String>,
        decision: Decision,
        why: String,
    }

    #[test]
    fn every_case_of_the_python_vectors_is_decided_alike() {
        let text = include_str!("../../../tests/vectors/policy_decisions.json");
        let vectors: Vectors = serde_json::from_str(text).expect("the vectors");
        assert!(vectors.policy.exact_grants() > 0);
        assert!(vectors.policy.prefix_grants() > 0);
        assert!(vectors.cases.len() > 100, "{} cases", vectors.cases.len());
        for decision in [
            Decision::Allowed,
            Decision::NotGranted,
            Decision::MissingPurpose,
            Decision::PurposeNotGranted,
        ] {
            assert!(vectors.cases.iter().any(|case| case.decision == decision));
        }
        for case in &vectors.cases {
            let decided =
                vectors
                    .policy
                    .decide(&case.caller, &case.method, case.purpose.as_deref());
            assert_eq!(
                decided, case.decision,
                "{} {} {:?} ({})",
                case.caller, case.method, case.purpose, case.why
            );
        }
    }

    #[test]
    fn a_prefix_grant_allows_every_caller_one_segment_below_it_and_no_other() {
        let policy = officers();
        let decide = |caller: &str| policy.decide(caller, REGISTER, Some("registration"));
        assert_eq!(decide(ALICE), Decision::Allowed);
        assert_eq!(decide(&format!("{OFFICERS}/bob-2")), Decision::Allowed);
        for caller in [
            OFFICERS,
            &format!("{OFFICERS}/"),
            &format!("{ALICE}/laptop"),
            "spiffe://lienthong.local/moj/officer-portal",
            "spiffe://lienthong.local/moj/officersx/alice",
            "spiffe://lienthong.local/mps/officers/alice",
            "spiffe://lienthong.local/moj/alice",
            "alice",
            "",
        ] {
            assert_eq!(decide(caller), Decision::NotGranted, "{caller}");
        }
    }

    #[test]
    fn a_granted_method_needs_a_granted_purpose() {
        let policy = officers();
        assert_eq!(
            policy.decide(ALICE, REGISTER, Some("statistics")),
            Decision::PurposeNotGranted
        );
        assert_eq!(
            policy.decide(ALICE, REGISTER, None),
            Decision::MissingPurpose
        );
        assert_eq!(
            policy.decide(ALICE, REGISTER, Some("")),
            Decision::MissingPurpose
        );
        assert_eq!(
            policy.decide(ALICE, ISSUE, Some("registration")),
            Decision::NotGranted
        );
        assert_eq!(policy.decide(ALICE, ISSUE, None), Decision::NotGranted);
    }

    #[test]
    fn exact_and_prefix_grants_for_one_caller_add_up() {
        let policy = policy(
            &[
                grant(ALICE, REGISTER, r#""supervision""#),
                grant(ALICE, ISSUE, r#""registration""#),
            ]
            .join(","),
            &grant(OFFICERS, REGISTER, r#""registration""#),
        );
        assert_eq!(policy.exact_grants(), 2);
        assert_eq!(policy.prefix_grants(), 1);
        for (caller, method, purpose, decision) in [
            (ALICE, REGISTER, "registration", Decision::Allowed),
            (ALICE, REGISTER, "supervision", Decision::Allowed),
            (ALICE, ISSUE, "registration", Decision::Allowed),
            (
                "spiffe://lienthong.local/moj/officers/bob",
                REGISTER,
                "supervision",
                Decision::PurposeNotGranted,
            ),
            (
                "spiffe://lienthong.local/moj/officers/bob",
                ISSUE,
                "registration",
                Decision::NotGranted,
            ),
        ] {
            assert_eq!(
                policy.decide(caller, method, Some(purpose)),
                decision,
                "{caller} {method} {purpose}"
            );
        }
    }

    #[test]
    fn an_exact_grant_is_for_that_caller_only() {
        let policy = policy(&grant(REGISTRY, ISSUE, r#""birth-registration""#), "");
        assert_eq!(
            policy.decide(REGISTRY, ISSUE, Some("birth-registration")),
            Decision::Allowed
        );
        for caller in [
            &format!("{REGISTRY}/x"),
            "spiffe://lienthong.local/moj",
            "spiffe://lienthong.local/moj/civil-registryx",
        ] {
            assert_eq!(
                policy.decide(caller, ISSUE, Some("birth-registration")),
                Decision::NotGranted,
                "{caller}"
            );
        }
    }

    #[test]
    fn decisions_are_spelled_as_in_python() {
        let names: Vec<String> = [
            Decision::Allowed,
            Decision::NotGranted,
            Decision::MissingPurpose,
            Decision::PurposeNotGranted,
        ]
        .iter()
        .map(|decision| {
            let json = serde_json::to_string(decision).expect("json");
            assert_eq!(json, format!("\"{decision}\""));
            decision.as_str().to_owned()
        })
        .collect();
        assert_eq!(
            names,
            [
                "ALLOWED",
                "NOT_GRANTED",
                "MISSING_PURPOSE",
                "PURPOSE_NOT_GRANTED"
            ]
        );
        assert!(Decision::Allowed.is_allowed());
        assert!(!Decision::PurposeNotGranted.is_allowed());
    }

    #[test]
    fn an_empty_policy_denies_everything() {
        let policy = policy("", "");
        assert_eq!(policy, Policy::default());
        assert_eq!(
            policy.decide(ALICE, REGISTER, Some("registration")),
            Decision::NotGranted
        );
    }

    #[test]
    fn documents_that_are_not_a_compiled_policy_are_refused() {
        let good = grant(ALICE, REGISTER, r#""registration""#);
        let cases = [
            String::new(),
            "[]".to_owned(),
            r#"{"version": 1, "grants": []}"#.to_owned(),
            document(&good, "").replace(r#""version": 1"#, r#""version": 2"#),
            document(&good, "").replace(r#""version": 1"#, r#""version": "1""#),
            document(&good, "").replace('}', r#", "extra": true}"#),
            document(&good, &good),
            document(&[good.clone(), good.clone()].join(","), ""),
            document(&grant("spiffe://elsewhere.org/x", REGISTER, r#""a""#), ""),
            document(&grant(&format!("{OFFICERS}/*"), REGISTER, r#""a""#), ""),
            document(&grant(ALICE, "test.v1.BirthService/Register", r#""a""#), ""),
            document(&grant(ALICE, "/test.v1.BirthService", r#""a""#), ""),
            document(&grant(ALICE, "/test.v1.BirthService/A/B", r#""a""#), ""),
            document(&grant(ALICE, REGISTER, ""), ""),
            document(&grant(ALICE, REGISTER, r#""""#), ""),
            document(&grant(ALICE, REGISTER, r#""Registration""#), ""),
            document(&grant(ALICE, REGISTER, r#""registration-""#), ""),
            document(&grant(ALICE, REGISTER, r#""1st""#), ""),
        ];
        // The same grant in both lists is two grants, not a duplicate.
        assert!(Policy::from_json(&cases[6]).is_ok());
        for (index, text) in cases.iter().enumerate() {
            if index == 6 {
                continue;
            }
            assert!(Policy::from_json(text).is_err(), "accepted: {text}");
            assert!(
                serde_json::from_str::<Policy>(text).is_err(),
                "accepted: {text}"
            );
        }
        assert!(matches!(
            Policy::from_json(&cases[3]),
            Err(PolicyError::Version(2))
        ));
        assert!(matches!(
            Policy::from_json(&cases[7]),
            Err(PolicyError::Duplicate { number: 2, .. })
        ));
    }

    #[test]
    fn purposes_follow_the_policy_language() {
        for good in ["audit", "birth-registration", "a1-b2-3"] {
            assert!(is_purpose(good), "{good}");
        }
        for bad in ["", "-a", "a-", "a--b", "A", "1a", "a_b", "a b", "đ"] {
            assert!(!is_purpose(bad), "{bad}");
        }
    }

    #[test]
    fn borrowed_and_owned_keys_hash_alike() {
        use std::collections::hash_map::RandomState;
        use std::hash::BuildHasher;
        let state = RandomState::new();
        let owned = (ALICE.to_owned(), REGISTER.to_owned());
        let borrowed: &dyn Key = &(ALICE, REGISTER);
        assert_eq!(state.hash_one(&owned), state.hash_one(borrowed));
    }
}
