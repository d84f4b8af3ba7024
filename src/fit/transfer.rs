//! Learning-rate transfer across depth or width: the optimal LR per size and its drift.
