//! Object metadata rules: name and label validation (RFC 1123 / 1035, qualified names),
//! RFC 3339 timestamps, random uids, and the server-owned `metadata` fields.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// `(field, cause reason, message)` as used in `422 Invalid`.
pub type FieldError = (String, &'static str, String);

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Which rule a resource's names follow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NameRule {
    Subdomain,
    Label1123,
    Label1035,
}

/// Validate an object name; returns the message kube-apiserver gives, if invalid.
pub fn check_name(rule: NameRule, name: &str) -> Option<String> {
    let (ok, msg) = match rule {
        NameRule::Subdomain => (is_subdomain(name), DNS1123_SUBDOMAIN_MSG),
        NameRule::Label1123 => (is_label(name), DNS1123_LABEL_MSG),
        NameRule::Label1035 => (
            is_label(name) && name.as_bytes()[0].is_ascii_lowercase(),
            DNS1035_LABEL_MSG,
        ),
    };
    if ok {
        None
    } else {
        Some(format!("Invalid value: \"{name}\": {msg}"))
    }
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A label or annotation key: `[prefix/]name`.
pub fn is_qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty() && is_subdomain(prefix) && is_qualified_name_part(name)
        }
        None => is_qualified_name_part(key),
    }
}

/// A label value: empty or a qualified-name part.
pub fn is_label_value(v: &str) -> bool {
    v.is_empty() || is_qualified_name_part(v)
}

/// Field errors in `metadata.labels` and `metadata.annotations`.
pub fn check_labels_annotations(meta: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                errs.push((
                    "metadata.labels".to_string(),
                    "FieldValueInvalid",
                    format!("Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
                ));
            }
            if !v.as_str().is_some_and(is_label_value) {
                errs.push((
                    "metadata.labels".to_string(),
                    "FieldValueInvalid",
                    format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
                ));
            }
        }
    }
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            total += k.len() + v.as_str().map_or(0, str::len);
            if !is_qualified_name(k) {
                errs.push((
                    "metadata.annotations".to_string(),
                    "FieldValueInvalid",
                    format!("Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
                ));
            }
        }
        if total > 256 * 1024 {
            errs.push((
                "metadata.annotations".to_string(),
                "FieldValueTooLong",
                "Too long: must have at most 262144 bytes".to_string(),
            ));
        }
    }
    errs
}

/// Current time as RFC 3339 with seconds precision (`2006-01-02T15:04:05Z`).
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_rfc3339(secs)
}

/// Format seconds since the epoch as RFC 3339 UTC.
pub fn format_rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A random (version 4) UUID.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Five random characters from kube-apiserver's `generateName` alphabet.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(check_name(NameRule::Subdomain, "node-1.example").is_none());
        assert!(check_name(NameRule::Subdomain, "Node").is_some());
        assert!(check_name(NameRule::Label1123, "a.b").is_some());
        assert!(check_name(NameRule::Label1035, "1abc").is_some());
        assert!(check_name(NameRule::Label1035, "abc-1").is_none());
        assert!(is_qualified_name("routelet.io/asn"));
        assert!(!is_qualified_name("/asn"));
        assert!(!is_qualified_name("a b"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
    }

    #[test]
    fn time_and_uid() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_eq!(name_suffix().len(), 5);
    }
}
