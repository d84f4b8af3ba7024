//! The planner: from a compute budget to ranked concrete shapes and token counts.
