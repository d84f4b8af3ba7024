//! Charts of the scaling analysis.
