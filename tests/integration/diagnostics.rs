//! Integration tests of the diagnostics feature.
