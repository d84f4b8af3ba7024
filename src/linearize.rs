//! Relative distance from linearization (paper Fig. 6).
