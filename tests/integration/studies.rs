//! Integration tests of the studies feature.
