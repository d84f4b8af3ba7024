//! Charts of the diagnostics.
