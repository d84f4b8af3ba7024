//! The ranges of the integers a run config may hold, checked on the JSON of a request before it
//! becomes a [`crate::train::RunConfig`] (so no size can overflow any arithmetic later, and no
//! `u64` that does not fit SQLite's `i64` is stored), and published as the `minimum` and
//! `maximum` of the same fields in the OpenAPI document ([`super::openapi`]): one table, so the
//! server and its description cannot disagree.

use super::error::ApiError;
use crate::limits::{
    MAX_BATCH, MAX_CONTEXT, MAX_DEPTH, MAX_TOKENS, MAX_VAL_SEQUENCES, MAX_VOCAB, MAX_WIDTH,
};
use serde_json::{Map, Value};

/// An integer field and its inclusive range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IntRange {
    pub key: &'static str,
    pub min: i64,
    pub max: i64,
}

const fn range(key: &'static str, min: i64, max: i64) -> IntRange {
    IntRange { key, min, max }
}

/// Every integer field of a run config, with its range: the bounds of [`crate::limits`], which
/// [`crate::train::RunConfig::validate`] checks again for the CLI.
pub(crate) const RUN_INTEGERS: [IntRange; 13] = [
    range("width", 1, MAX_WIDTH as i64),
    range("depth", 1, MAX_DEPTH as i64),
    range("d_head", 1, MAX_WIDTH as i64),
    range("context", 1, MAX_CONTEXT as i64),
    range("vocab", 1, MAX_VOCAB as i64),
    range("base_width", 1, MAX_WIDTH as i64),
    range("base_depth", 1, MAX_DEPTH as i64),
    range("batch", 1, MAX_BATCH as i64),
    range("tokens", 1, MAX_TOKENS as i64),
    range("seed", 0, i64::MAX),
    range("log_every", 1, i64::MAX),
    range("eval_every", 1, i64::MAX),
    range("val_sequences", 1, MAX_VAL_SEQUENCES as i64),
];

/// The fields of each kind of `data` source, with the ranges of its integers.
pub(crate) const DATA_FIELDS: [(&str, &[&str], &[IntRange]); 3] = [
    (
        "builtin",
        &["seed", "vocab"],
        &[range("seed", 0, i64::MAX), range("vocab", 16, 65_536)],
    ),
    ("text", &["path", "tokenizer"], &[]),
    ("nano_gpt", &["dir", "vocab"], &[range("vocab", 1, 65_536)]),
];

/// The range of a run config's integer field.
pub(crate) fn run_integer(key: &str) -> Option<IntRange> {
    RUN_INTEGERS.iter().copied().find(|r| r.key == key)
}

/// Refuses an integer outside its range (422). Values that are not integers are left to the
/// deserializer, which refuses them with its own message.
fn check(value: &Value, range: &IntRange, at: &str) -> Result<(), ApiError> {
    let Value::Number(number) = value else {
        return Ok(());
    };
    let inside = match number.as_i64() {
        Some(n) => (range.min..=range.max).contains(&n),
        // A u64 above i64::MAX.
        None => !number.is_u64(),
    };
    if inside {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(format!(
            "'{at}' must be an integer from {} to {}, got {number}",
            range.min, range.max
        )))
    }
}

/// Checks the integers of a run config given as JSON (a create-run body, or one grid point of
/// a sweep) against [`RUN_INTEGERS`], and its `data` source: the fields of its kind only, its
/// integers within [`DATA_FIELDS`].
pub(crate) fn check_run_numbers(config: &Map<String, Value>) -> Result<(), ApiError> {
    for range in &RUN_INTEGERS {
        if let Some(value) = config.get(range.key) {
            check(value, range, range.key)?;
        }
    }
    let Some(Value::Object(data)) = config.get("data") else {
        return Ok(());
    };
    let Some(Value::String(kind)) = data.get("kind") else {
        return Ok(());
    };
    let Some((_, fields, ranges)) = DATA_FIELDS.iter().find(|(k, ..)| k == kind) else {
        return Ok(());
    };
    if let Some(unknown) = data
        .keys()
        .find(|k| *k != "kind" && !fields.contains(&k.as_str()))
    {
        return Err(ApiError::Unprocessable(format!(
            "unknown field '{unknown}' in 'data' of kind '{kind}': it has {}",
            fields.join(", ")
        )));
    }
    for range in ranges.iter() {
        if let Some(value) = data.get(range.key) {
            check(value, range, &format!("data.{}", range.key))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn checked(value: Value) -> Result<(), ApiError> {
        check_run_numbers(value.as_object().unwrap())
    }

    #[test]
    fn integers_outside_their_range_are_refused() {
        assert!(checked(json!({"width": 256, "depth": 8, "seed": 0})).is_ok());
        assert!(
            checked(json!({"width": 16384, "depth": 1024, "tokens": 10_000_000_000_000_u64}))
                .is_ok()
        );
        for bad in [
            json!({"width": 9_223_372_036_854_775_808_u64}),
            json!({"width": 16385}),
            json!({"width": 0}),
            json!({"depth": -1}),
            json!({"seed": 9_223_372_036_854_775_808_u64}),
            json!({"log_every": 0}),
            json!({"tokens": 10_000_000_000_001_u64}),
            json!({"data": {"kind": "builtin", "seed": 0, "vocab": 15}}),
            json!({"data": {"kind": "builtin", "seed": 0, "vocab": 256, "extra": 1}}),
            json!({"data": {"kind": "nano_gpt", "dir": "d", "vocab": 65537}}),
        ] {
            assert!(
                matches!(checked(bad.clone()), Err(ApiError::Unprocessable(_))),
                "{bad}"
            );
        }
        // Not integers: left to the deserializer.
        assert!(checked(json!({"width": "wide", "depth": 2.5, "data": 3})).is_ok());
    }
}
