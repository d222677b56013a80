//! Named text fields from a request body in any of the three encodings
//! browsers and scripts send: `multipart/form-data` (`fetch` with `FormData`),
//! `application/x-www-form-urlencoded` (`URLSearchParams`, `curl -d`) and a
//! JSON object. Used by `POST /auth` and the account endpoints.

use bytes::Bytes;
use serde_json::Value;

/// The body is not a readable form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Malformed body: {0}")]
pub struct Malformed(pub String);

/// The wanted fields that were present; a field sent twice counts once, first wins.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    /// Reads the fields named in `wanted` from `bytes`; others are ignored.
    /// In JSON, `null` counts as absent and any other non-string is malformed.
    pub async fn parse(content_type: Option<&str>, bytes: Bytes, wanted: &[&str]) -> Result<Form, Malformed> {
        let essence = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|ct| ct.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let mut form = Form::default();
        match essence.as_str() {
            "multipart/form-data" => {
                form.read_multipart(content_type.unwrap_or_default(), bytes, wanted)
                    .await?
            }
            "application/json" => form.read_json(&bytes, wanted)?,
            // Form encoding is what `fetch` sends for URLSearchParams, and curl -d by default.
            "application/x-www-form-urlencoded" | "" => {
                for (key, value) in form_urlencoded::parse(&bytes) {
                    form.add(wanted, &key, value.into_owned());
                }
            }
            other => return Err(Malformed(format!("unsupported content type {other}"))),
        }
        Ok(form)
    }

    /// The field's value, if it was sent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn add(&mut self, wanted: &[&str], key: &str, value: String) {
        if wanted.contains(&key) && self.get(key).is_none() {
            self.fields.push((key.to_owned(), value));
        }
    }

    fn read_json(&mut self, bytes: &[u8], wanted: &[&str]) -> Result<(), Malformed> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| Malformed(e.to_string()))?;
        let object = value
            .as_object()
            .ok_or_else(|| Malformed("expected a JSON object".into()))?;
        for key in wanted {
            match object.get(*key) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => self.add(wanted, key, s.clone()),
                Some(_) => return Err(Malformed(format!("{key} must be a string"))),
            }
        }
        Ok(())
    }

    async fn read_multipart(&mut self, content_type: &str, bytes: Bytes, wanted: &[&str]) -> Result<(), Malformed> {
        let boundary = multer::parse_boundary(content_type).map_err(|e| Malformed(e.to_string()))?;
        let stream = futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(bytes) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        while let Some(field) = multipart.next_field().await.map_err(|e| Malformed(e.to_string()))? {
            let name = field.name().map(str::to_owned);
            let value = field.text().await.map_err(|e| Malformed(e.to_string()))?;
            if let Some(name) = name {
                self.add(wanted, &name, value);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn parse(content_type: &str, body: &str) -> Result<Form, Malformed> {
        run(Form::parse(
            Some(content_type),
            Bytes::from(body.to_owned()),
            &["a", "b"],
        ))
    }

    #[test]
    fn reads_wanted_fields_in_every_encoding() {
        let form = parse("application/x-www-form-urlencoded", "a=1%3A&c=x&a=2").unwrap();
        assert_eq!((form.get("a"), form.get("b"), form.get("c")), (Some("1:"), None, None));
        let json = parse("application/json", r#"{"a":"1","b":null,"c":5}"#).unwrap();
        assert_eq!((json.get("a"), json.get("b")), (Some("1"), None));
        let body = "--B\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\nvalue\r\n--B--\r\n";
        assert_eq!(
            parse("multipart/form-data; boundary=B", body).unwrap().get("b"),
            Some("value")
        );
        let none = run(Form::parse(None, Bytes::from("a=x"), &["a"])).unwrap();
        assert_eq!(none.get("a"), Some("x"));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(parse("application/json", "{nope").is_err());
        assert!(parse("application/json", "[1]").is_err());
        assert!(parse("application/json", r#"{"a":5}"#).is_err());
        assert!(parse("multipart/form-data", "x").is_err());
        assert!(parse("image/png", "x").is_err());
    }
}
