//! Integration tests of the analysis feature.
