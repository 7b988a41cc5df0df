//! The gateway's log: one JSON object per line on standard output, as the Python services
//! write them (`lienthong/logs.py`): `event`, `level`, `service`, `timestamp`, then the
//! event's own fields. Fields are identifiers, digests and sizes, never personal data.

use std::io::Write as _;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::exchange::rfc3339;

/// Write the event `event` at `level` ("info", "warning", "error") with `fields` (an object).
pub fn event(level: &str, event: &str, fields: Value) {
    let mut line = match fields {
        Value::Object(fields) => fields,
        _ => Map::new(),
    };
    line.insert("event".to_owned(), Value::from(event));
    line.insert("level".to_owned(), Value::from(level));
    line.insert("service".to_owned(), Value::from("gateway"));
    line.insert(
        "timestamp".to_owned(),
        Value::from(rfc3339(SystemTime::now())),
    );
    let mut text = Value::Object(line).to_string();
    text.push('\n');
    // A log that cannot be written must not fail the call it describes.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
