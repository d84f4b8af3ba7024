//! One-click studies: the paper's experiments as ready-made run sets.
