//! Reading request bodies and query strings field by field.
//!
//! This does what `#[serde(deny_unknown_fields)]` does (an unknown field is
//! an error, naming it) and one thing derive cannot: a value of the wrong
//! type is reported with the name of its field, not a line and column. Each
//! route lists its fields once; reading one that is not listed is a bug
//! caught by a debug assertion.

use super::AdminError;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// A JSON object body with a known set of fields.
pub(super) struct Body {
    map: Map<String, Value>,
    allowed: &'static [&'static str],
}

impl Body {
    /// Parse `bytes` as a JSON object whose keys are all in `allowed`.
    pub(super) fn parse(
        bytes: &[u8],
        allowed: &'static [&'static str],
    ) -> Result<Body, AdminError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            AdminError::invalid("body", format!("not valid JSON: {}", scrub(&e.to_string())))
        })?;
        let Value::Object(map) = value else {
            return Err(AdminError::invalid("body", "must be a JSON object"));
        };
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(AdminError::invalid(
                shown(unknown),
                format!("unknown field; this route takes {}", allowed.join(", ")),
            ));
        }
        Ok(Body { map, allowed })
    }

    /// An optional field; JSON `null` counts as absent.
    pub(super) fn opt<T: DeserializeOwned>(
        &mut self,
        name: &'static str,
    ) -> Result<Option<T>, AdminError> {
        debug_assert!(self.allowed.contains(&name), "{name} is not listed");
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| AdminError::invalid(name, scrub(&e.to_string()))),
        }
    }

    /// A required field.
    pub(super) fn req<T: DeserializeOwned>(&mut self, name: &'static str) -> Result<T, AdminError> {
        self.opt(name)?
            .ok_or_else(|| AdminError::invalid(name, "missing: this field is required"))
    }
}

/// A query string with a known set of parameters, each given at most once.
pub(super) struct Query {
    params: HashMap<String, String>,
    allowed: &'static [&'static str],
}

impl Query {
    /// Parse a URI's query (`None`: there is none).
    pub(super) fn parse(
        query: Option<&str>,
        allowed: &'static [&'static str],
    ) -> Result<Query, AdminError> {
        let mut params = HashMap::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                let takes = if allowed.is_empty() {
                    "this route takes no query parameters".to_owned()
                } else {
                    format!("this route takes {}", allowed.join(", "))
                };
                return Err(AdminError::invalid(
                    shown(&k),
                    format!("unknown query parameter; {takes}"),
                ));
            }
            if params
                .insert(k.clone().into_owned(), v.into_owned())
                .is_some()
            {
                return Err(AdminError::invalid(shown(&k), "given more than once"));
            }
        }
        Ok(Query { params, allowed })
    }

    /// A text parameter.
    pub(super) fn text(&self, name: &'static str) -> Option<&str> {
        debug_assert!(self.allowed.contains(&name), "{name} is not listed");
        self.params.get(name).map(String::as_str)
    }

    /// A non-negative integer parameter.
    pub(super) fn number(&self, name: &'static str) -> Result<Option<u64>, AdminError> {
        self.text(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| AdminError::invalid(name, "must be a non-negative integer"))
            })
            .transpose()
    }
}

/// A caller-supplied field name, safe to echo: at most 64 characters, with
/// control characters escaped.
pub(super) fn shown(name: &str) -> String {
    let cut: String = name.chars().take(64).collect();
    let escaped: String = cut.escape_debug().collect();
    if name.chars().count() > 64 {
        format!("{escaped}…")
    } else {
        escaped
    }
}

/// serde's messages quote the offending value (`invalid type: string
/// "…"`): drop quoted parts, so nothing a caller pasted by mistake (a
/// credential in the wrong field) is echoed into answers or the audit log.
pub(super) fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_quotes = false;
    for ch in message.chars() {
        if ch == '"' {
            if !in_quotes {
                out.push_str("<value>");
            }
            in_quotes = !in_quotes;
            continue;
        }
        if !in_quotes {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[&str] = &["name", "ttl_s"];

    fn field_of(e: AdminError) -> Option<String> {
        e.field().map(str::to_owned)
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = Body::parse(br#"{"name":"a","colour":"red"}"#, FIELDS)
            .err()
            .expect("refused");
        assert_eq!(field_of(e), Some("colour".into()));
    }

    #[test]
    fn type_errors_name_the_field_and_do_not_echo_the_value() {
        let mut b = Body::parse(br#"{"ttl_s":"sk_live_secret"}"#, FIELDS).expect("parse");
        let e = b.opt::<u64>("ttl_s").expect_err("refused");
        let text = e.to_string();
        assert!(text.starts_with("ttl_s: "), "{text}");
        assert!(!text.contains("sk_live"), "{text}");
    }

    #[test]
    fn missing_and_null() {
        let mut b = Body::parse(br#"{"ttl_s":null}"#, FIELDS).expect("parse");
        assert_eq!(b.opt::<u64>("ttl_s").expect("null is absent"), None);
        let e = b.req::<String>("name").expect_err("required");
        assert_eq!(field_of(e), Some("name".into()));
        assert!(Body::parse(b"[1]", FIELDS).is_err());
        assert!(Body::parse(b"{", FIELDS).is_err());
    }

    #[test]
    fn queries() {
        let q = Query::parse(Some("name=a%20b&ttl_s=5"), FIELDS).expect("parse");
        assert_eq!(q.text("name"), Some("a b"));
        assert_eq!(q.number("ttl_s").expect("number"), Some(5));
        assert!(Query::parse(Some("name=a&name=b"), FIELDS).is_err());
        let e = Query::parse(Some("x\u{1b}=1"), FIELDS)
            .err()
            .expect("unknown");
        assert_eq!(field_of(e), Some("x\\u{1b}".into()));
        let q = Query::parse(Some("ttl_s=-1"), FIELDS).expect("parse");
        assert!(q.number("ttl_s").is_err());
    }
}
