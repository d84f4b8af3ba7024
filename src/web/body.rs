//! Request bodies as typed values: a JSON object read within the body limit, integral floats
//! taken as the integers they are, and deserialized by serde into the handler's request type,
//! whose OpenAPI schema is derived on the same type. Errors name the offending field by its
//! path (`'data.vocab': invalid type: ...`).

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A JSON object body as `T`. Malformed JSON, a body that is not an object and an unknown
/// field are 400; a value of the wrong type or out of its domain, or a missing field, is 422
/// with the field's path.
pub(crate) fn json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    from_object(json_object(body)?)
}

/// [`json_body`] for bodies whose type holds no free-form JSON (`Value`) anywhere, such as a
/// worker's heartbeat with its metric batch: a well-formed object is deserialized straight from
/// the bytes, without building a JSON tree first; anything else takes [`json_body`]'s path, with
/// its conversions and error messages. (Where a type holds a `Value`, the tree path turns its
/// integral floats into integers, which this path would not.)
pub(crate) fn typed_json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body_bytes(body)?;
    // An array would deserialize into a struct positionally: only objects take the fast path.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && let Ok(value) = serde_json::from_slice(&bytes)
    {
        return Ok(value);
    }
    from_object(parse_object(&bytes)?)
}

/// A body error as a 400, for endpoints whose 422 means something else (the fits and analyses
/// answer 422 only for selections they refuse).
pub(crate) fn as_bad_request(error: ApiError) -> ApiError {
    match error {
        ApiError::Unprocessable(message) => ApiError::BadRequest(message),
        other => other,
    }
}

/// A deserialization error as `'path': message` (just the message at the top level), with
/// serde's backquotes as the single quotes of every other API message.
pub(crate) fn path_message<E: std::fmt::Display>(error: serde_path_to_error::Error<E>) -> String {
    let path = error.path().to_string();
    let inner = error.into_inner().to_string().replace('`', "'");
    if path == "." {
        inner
    } else {
        format!("'{path}': {inner}")
    }
}

/// An already parsed JSON object as `T`, with [`json_body`]'s errors.
pub(crate) fn from_object<T: DeserializeOwned>(object: Map<String, Value>) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(Value::Object(object)).map_err(|e| {
        let message = path_message(e);
        if message.contains("unknown field '") {
            ApiError::BadRequest(message)
        } else {
            ApiError::Unprocessable(message)
        }
    })
}

/// Numbers written with a zero fraction (`4.0`) as the integers they are, as JSON Schema counts
/// them, so that every integer field accepts them.
fn integral_floats_as_integers(value: &mut Value) {
    match value {
        Value::Number(number) => {
            if let Some(f) = number
                .as_f64()
                .filter(|f| number.is_f64() && f.fract() == 0.0)
            {
                // 2^63 and 2^64: the first floats outside each range.
                const TWO_63: f64 = 9_223_372_036_854_775_808.0;
                if (-TWO_63..TWO_63).contains(&f) {
                    *value = Value::from(f as i64);
                } else if (0.0..2.0 * TWO_63).contains(&f) {
                    *value = Value::from(f as u64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// Parses a JSON object body, mapping size and syntax problems to 413 and 400. Integral
/// floats become integers ([`integral_floats_as_integers`]).
pub(crate) fn json_object(
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, ApiError> {
    parse_object(&body_bytes(body)?)
}

/// The body's bytes; one over the size limit is 413.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => {
            ApiError::PayloadTooLarge("the request body is too large".into())
        }
        other => ApiError::BadRequest(other.body_text()),
    })
}

/// [`json_object`] of bytes already read.
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(mut map)) => {
            map.values_mut().for_each(integral_floats_as_integers);
            Ok(map)
        }
        Ok(_) => Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!("invalid JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_bodies_take_the_fast_path_and_fall_back_with_the_same_answers() {
        #[derive(Debug, serde::Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct Point {
            step: i64,
        }
        let body = |text: &str| Ok(Bytes::from(text.to_string()));
        let parsed = |text: &str| typed_json_body::<Point>(body(text));
        assert_eq!(parsed(r#" {"step": 4}"#).unwrap(), Point { step: 4 });
        // Integral floats, through the tree path.
        assert_eq!(parsed(r#"{"step": 4.0}"#).unwrap(), Point { step: 4 });
        // Positional arrays are not objects; unknown fields and wrong types keep their statuses.
        assert!(matches!(parsed("[4]"), Err(ApiError::BadRequest(m)) if m.contains("JSON object")));
        assert!(
            matches!(parsed(r#"{"step": 4, "x": 1}"#), Err(ApiError::BadRequest(m)) if m.contains("unknown field 'x'"))
        );
        assert!(
            matches!(parsed(r#"{"step": "4"}"#), Err(ApiError::Unprocessable(m)) if m.starts_with("'step'"))
        );
    }

    #[test]
    fn integral_floats_are_integers() {
        let mut value = json!({"a": 4.0, "b": [1.5, -0.0, 1e300], "c": {"d": 9.3e18}});
        value
            .as_object_mut()
            .unwrap()
            .values_mut()
            .for_each(integral_floats_as_integers);
        assert_eq!(value["a"], json!(4));
        assert!(value["a"].is_i64());
        assert_eq!(value["b"], json!([1.5, 0, 1e300]));
        assert!(value["c"]["d"].is_u64());
    }
}
