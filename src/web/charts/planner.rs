//! Charts of the planner.
