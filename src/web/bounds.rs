//! The ranges of the integers a run config may hold, published as the `minimum` and `maximum` of
//! the same fields in the OpenAPI document ([`super::openapi`]). The server enforces them in
//! [`crate::train::RunConfig::validate`] (so no size can overflow any arithmetic later, and no
//! `u64` that does not fit SQLite's `i64` is stored) and in [`crate::data::Corpus::open`]; the
//! tests below hold this table to both.

use crate::limits::{
    MAX_BATCH, MAX_CONTEXT, MAX_DEPTH, MAX_TOKENS, MAX_VAL_SEQUENCES, MAX_VOCAB, MAX_WIDTH,
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::train::RunConfig;

    /// A config with `key` set to `value`, the rest the defaults.
    fn config_with(key: &str, value: i64) -> Result<RunConfig, serde_json::Error> {
        let mut config = serde_json::to_value(RunConfig {
            width: 64,
            d_head: 32,
            base_width: 64,
            tokens: Some(1 << 20),
            ..RunConfig::default()
        })
        .unwrap();
        config[key] = json!(value);
        serde_json::from_value(config)
    }

    #[test]
    fn run_config_validation_holds_every_range() {
        for range in RUN_INTEGERS {
            let accepts =
                |value: i64| config_with(range.key, value).is_ok_and(|c| c.check_bounds().is_ok());
            assert!(accepts(range.max), "{} = {} refused", range.key, range.max);
            assert!(
                !accepts(range.min - 1),
                "{} = {} accepted",
                range.key,
                range.min - 1
            );
            if range.max < i64::MAX {
                assert!(
                    !accepts(range.max + 1),
                    "{} = {} accepted",
                    range.key,
                    range.max + 1
                );
            }
        }
        let huge = serde_json::to_value(RunConfig {
            seed: i64::MAX as u64 + 1,
            ..RunConfig::default()
        })
        .unwrap();
        let config: RunConfig = serde_json::from_value(huge).unwrap();
        assert!(config.check_bounds().is_err());
    }
}
