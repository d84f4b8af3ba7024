//! Width/depth tolerance at matched compute: loss against log(N:L), its optimum and the
//! range of shapes within 1% of it.
