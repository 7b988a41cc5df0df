//! The audit log's entries: what is recorded of an exchange, and its canonical bytes.
//!
//! A port of `gateway/audit/entry.py`. An entry's bytes are what its leaf hash covers, so the
//! data plane must write exactly what Python's
//! `json.dumps(asdict(entry), sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
//! writes. The encoder is therefore written by hand, over the fields in sorted order, with
//! Python's string escapes: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, every other character
//! below U+0020 as `\u00xx` (lower-case hex), and everything else, DEL, U+2028 and emoji
//! included, as raw UTF-8.
//!
//! Decoding accepts only those bytes: it parses, encodes again and compares. It is stricter
//! than Python's `AuditEntry.decode` in one way: Python does not check the fields' types, so
//! it accepts canonical bytes such as `"version":1.0`, `"caller":5` or `"kind":"bogus"`, which
//! Python never writes; here they are refused.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The format version entries are written with.
pub const FORMAT_VERSION: u64 = 1;

/// The most characters an entry keeps of each text the caller chooses (Python's `TEXT_LIMITS`).
///
/// What the `audit_entry` columns hold: `PostgreSQL` refuses an over-long value, and with it
/// every entry of the same group commit, so longer text is [`bounded`] first.
pub const TEXT_LIMITS: [(&str, usize); 4] = [
    ("method", 512),
    ("purpose", 256),
    ("on_behalf_of", 256),
    ("request_id", 256),
];

/// `text` if it has at most `limit` characters, else `limit` characters standing for it.
///
/// Those are its start, then its length and SHA-256, as Python's `bounded` writes them:
/// `"<start>…[5000 characters, sha256 <hex>]"`. Characters are Unicode scalar values, as
/// Python counts them, so the start may split a grapheme just as Python's does.
#[must_use]
pub fn bounded(text: &str, limit: usize) -> Cow<'_, str> {
    let length = text.chars().count();
    if length <= limit {
        return Cow::Borrowed(text);
    }
    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    let tail = format!("\u{2026}[{length} characters, sha256 {digest}]");
    let keep = limit.saturating_sub(tail.chars().count());
    Cow::Owned(text.chars().take(keep).chain(tail.chars()).collect())
}

/// Which half of an exchange an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Written, and durable, before the call is forwarded upstream.
    Request,
    /// Written, and durable, before the answer is released to the caller.
    Completion,
}

impl Kind {
    /// The kind as entries spell it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Completion => "completion",
        }
    }
}

/// Why bytes are not an audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EntryError {
    /// Not UTF-8 JSON of an entry's fields and types.
    #[error("not an audit entry: {0}")]
    NotAnEntry(String),
    /// An entry, but not written as [`AuditEntry::encode`] writes it.
    #[error("audit entry bytes are not canonical")]
    NotCanonical,
}

/// One leaf of the audit log: identifiers, sizes, status and digests, never a payload.
///
/// A completion repeats the request's fields, so that it alone describes the exchange, and
/// names the request entry's leaf index; a refused call has only a completion.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Request or completion.
    pub kind: Kind,
    /// The exchange both entries share.
    pub exchange_id: String,
    /// The caller's SPIFFE ID.
    pub caller: Option<String>,
    /// The upstream the call was routed to.
    pub upstream: Option<String>,
    /// The gRPC method path.
    pub method: String,
    /// The declared purpose.
    pub purpose: Option<String>,
    /// Whom the caller acts for.
    pub on_behalf_of: Option<String>,
    /// The caller's request id.
    pub request_id: Option<String>,
    /// RFC 3339 UTC with microseconds.
    pub start_time: String,
    /// RFC 3339 UTC with microseconds.
    pub end_time: Option<String>,
    /// The gRPC status code.
    pub status_code: Option<i64>,
    /// The gRPC status name.
    pub status: Option<String>,
    /// Request message bytes.
    pub request_bytes: Option<u64>,
    /// Response message bytes.
    pub response_bytes: Option<u64>,
    /// Hex SHA-256 of the request messages.
    pub request_sha256: Option<String>,
    /// Hex SHA-256 of the response messages.
    pub response_sha256: Option<String>,
    /// The leaf index of the request entry, in a completion.
    pub request_leaf: Option<u64>,
    /// The format version.
    pub version: u64,
}

impl AuditEntry {
    /// An entry of `kind` for a new exchange (a fresh id) of `method` begun at `start_time`,
    /// every other field empty: the exchange fills in what it learns.
    #[must_use]
    pub fn begun(kind: Kind, method: String, start_time: String) -> Self {
        AuditEntry {
            kind,
            exchange_id: uuid::Uuid::now_v7().to_string(),
            caller: None,
            upstream: None,
            method,
            purpose: None,
            on_behalf_of: None,
            request_id: None,
            start_time,
            end_time: None,
            status_code: None,
            status: None,
            request_bytes: None,
            response_bytes: None,
            request_sha256: None,
            response_sha256: None,
            request_leaf: None,
            version: FORMAT_VERSION,
        }
    }

    /// The canonical bytes of the entry, which its leaf hash covers.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512);
        // Sorted by name, as Python's sort_keys orders them.
        out.push('{');
        field(&mut out, "caller", self.caller.as_deref().map(Value::Str));
        field(
            &mut out,
            "end_time",
            self.end_time.as_deref().map(Value::Str),
        );
        field(&mut out, "exchange_id", Some(Value::Str(&self.exchange_id)));
        field(&mut out, "kind", Some(Value::Str(self.kind.as_str())));
        field(&mut out, "method", Some(Value::Str(&self.method)));
        field(
            &mut out,
            "on_behalf_of",
            self.on_behalf_of.as_deref().map(Value::Str),
        );
        field(&mut out, "purpose", self.purpose.as_deref().map(Value::Str));
        field(
            &mut out,
            "request_bytes",
            self.request_bytes.map(Value::Unsigned),
        );
        field(
            &mut out,
            "request_id",
            self.request_id.as_deref().map(Value::Str),
        );
        field(
            &mut out,
            "request_leaf",
            self.request_leaf.map(Value::Unsigned),
        );
        field(
            &mut out,
            "request_sha256",
            self.request_sha256.as_deref().map(Value::Str),
        );
        field(
            &mut out,
            "response_bytes",
            self.response_bytes.map(Value::Unsigned),
        );
        field(
            &mut out,
            "response_sha256",
            self.response_sha256.as_deref().map(Value::Str),
        );
        field(&mut out, "start_time", Some(Value::Str(&self.start_time)));
        field(&mut out, "status", self.status.as_deref().map(Value::Str));
        field(&mut out, "status_code", self.status_code.map(Value::Signed));
        field(
            &mut out,
            "upstream",
            self.upstream.as_deref().map(Value::Str),
        );
        field(&mut out, "version", Some(Value::Unsigned(self.version)));
        out.pop(); // the last field's comma
        out.push('}');
        out.into_bytes()
    }

    /// Parse entry bytes.
    ///
    /// # Errors
    ///
    /// [`EntryError::NotAnEntry`] unless they are UTF-8 JSON holding exactly the fields, of
    /// their types; [`EntryError::NotCanonical`] unless they are the entry's encoding.
    pub fn decode(data: &[u8]) -> Result<Self, EntryError> {
        let text = std::str::from_utf8(data).map_err(|e| EntryError::NotAnEntry(e.to_string()))?;
        let entry: Self =
            serde_json::from_str(text).map_err(|e| EntryError::NotAnEntry(e.to_string()))?;
        // A missing optional field parses as null; the comparison refuses it with the rest.
        if entry.encode() != data {
            return Err(EntryError::NotCanonical);
        }
        Ok(entry)
    }
}

#[derive(Clone, Copy)]
enum Value<'a> {
    Str(&'a str),
    Signed(i64),
    Unsigned(u64),
}

/// Append `"name":value,` (`null` for `None`).
fn field(out: &mut String, name: &str, value: Option<Value>) {
    push_string(out, name);
    out.push(':');
    match value {
        None => out.push_str("null"),
        Some(Value::Str(text)) => push_string(out, text),
        Some(Value::Signed(number)) => write!(out, "{number}").expect("writing to a String"),
        Some(Value::Unsigned(number)) => write!(out, "{number}").expect("writing to a String"),
    }
    out.push(',');
}

/// A JSON string as Python's `json.dumps(..., ensure_ascii=False)` writes it.
fn push_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if c < ' ' => write!(out, "\\u{:04x}", u32::from(c)).expect("writing to a String"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_is_what_python_bounds_it_to() {
        // Expected values from gateway/audit/entry.py's bounded.
        assert_eq!(bounded("xxxxx", 5), "xxxxx");
        assert_eq!(
            bounded("xxxxxx", 5),
            "\u{2026}[6 characters, sha256 \
             b7fb217694ae2d305e766608d250f797daa984e4ac4b5fa638a729be352f2fcd]"
        );
        let text = "\u{e9}".repeat(300);
        let accents = bounded(&text, 256);
        assert_eq!(
            accents,
            format!(
                "{}\u{2026}[300 characters, sha256 \
                 7250b66610f8b7dbd6f5e5426d2143bcba6d826cedb4bea8a358695da78db023]",
                "\u{e9}".repeat(166)
            )
        );
        let flags = format!("/a.v1.S/{}", "\u{1f1fb}\u{1f1f3}".repeat(600));
        let bounded_flags = bounded(&flags, 512);
        assert_eq!(bounded_flags.chars().count(), 512);
        assert_eq!(
            bounded_flags
                .find('\u{2026}')
                .map(|at| bounded_flags[..at].chars().count()),
            Some(421)
        );
        assert!(bounded_flags.ends_with(
            "[1208 characters, sha256 \
             de316e7d2f0773754fef4aa78ffba6cd4a9d8826dd5a9611cd3c53d4cc3ef47e]"
        ));
    }

    fn request() -> AuditEntry {
        AuditEntry {
            kind: Kind::Request,
            exchange_id: "x-1".into(),
            caller: Some("spiffe://lienthong.local/moj/civil-registry".into()),
            upstream: None,
            method: "/a.v1.S/M".into(),
            purpose: Some("audit".into()),
            on_behalf_of: None,
            request_id: None,
            start_time: "2024-05-01T08:30:00.123456Z".into(),
            end_time: None,
            status_code: None,
            status: None,
            request_bytes: None,
            response_bytes: None,
            request_sha256: None,
            response_sha256: None,
            request_leaf: None,
            version: FORMAT_VERSION,
        }
    }

    #[test]
    fn an_entry_is_sorted_compact_json_with_every_field() {
        let encoded = String::from_utf8(request().encode()).expect("UTF-8");
        assert_eq!(
            encoded,
            concat!(
                r#"{"caller":"spiffe://lienthong.local/moj/civil-registry","end_time":null,"#,
                r#""exchange_id":"x-1","kind":"request","method":"/a.v1.S/M","#,
                r#""on_behalf_of":null,"purpose":"audit","request_bytes":null,"#,
                r#""request_id":null,"request_leaf":null,"request_sha256":null,"#,
                r#""response_bytes":null,"response_sha256":null,"#,
                r#""start_time":"2024-05-01T08:30:00.123456Z","status":null,"#,
                r#""status_code":null,"upstream":null,"version":1}"#
            )
        );
        let value: serde_json::Value = serde_json::from_str(&encoded).expect("JSON");
        let keys: Vec<&String> = value.as_object().expect("an object").keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(AuditEntry::decode(encoded.as_bytes()), Ok(request()));
    }

    #[test]
    fn strings_are_escaped_as_python_escapes_them() {
        let mut out = String::new();
        push_string(
            &mut out,
            "\"\\\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}\u{2028}é🇻🇳/",
        );
        assert_eq!(
            out,
            "\"\\\"\\\\\\n\\r\\t\\b\\f\\u0000\\u001f\u{7f}\u{2028}é🇻🇳/\""
        );
    }

    #[test]
    fn other_bytes_for_the_same_entry_are_refused() {
        let good = String::from_utf8(request().encode()).expect("UTF-8");
        for bad in [
            good.replace(',', ", "),
            good.replace(r#""kind":"request""#, r#""kind":"\u0072equest""#),
            good.replace(r#","upstream":null"#, ""),
            format!("{good}\n"),
        ] {
            assert!(AuditEntry::decode(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(matches!(
            AuditEntry::decode(b"\xff"),
            Err(EntryError::NotAnEntry(_))
        ));
        let spaced = good.replace(":null", ": null");
        assert_eq!(
            AuditEntry::decode(spaced.as_bytes()),
            Err(EntryError::NotCanonical)
        );
    }
}
