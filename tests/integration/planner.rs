//! Integration tests of the planner feature.
