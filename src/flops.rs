//! Parameter and training-FLOP counts for the pre-LN GPT of [`crate::model`].
//!
//! Conventions follow section 4 of the CompleteP spec (Dey et al. 2025, arXiv 2505.01618), which
//! counts a multiply-add as 2 FLOPs and the backward pass as twice the forward:
//!
//! - non-embedding parameters `P = L (12 N^2 + 13 N) + 2 N` with biases and LayerNorms
//!   (QKV `3N^2 + 3N`, attention output `N^2 + N`, MLP `8N^2 + 5N`, two LayerNorms `4N`, final
//!   LayerNorm `2N`); without linear biases the `9N` per block goes;
//! - training FLOPs for `D` tokens at context `T` and vocabulary `V`:
//!   `C = D (6 P + 6 N V + 12 L N T)`: weight matmuls, the unembedding, and attention scores plus
//!   values (`2 * 2 N T` per token per block forward, times 3 for forward + backward).
//!
//! The components are kept apart so that imported runs can bring their own count and so that
//! shapes can be compared exactly: at a fixed parameter count the attention term grows as the
//! width/depth ratio `N:L` shrinks.

use serde::{Deserialize, Serialize};

/// Non-embedding parameters of a model of width `width` (N) and depth `depth` (L blocks):
/// `L (12 N^2 + 13 N) + 2 N` with linear biases, `L (12 N^2 + 4 N) + 2 N` without.
/// Excludes token and position embeddings and the unembedding.
pub fn params_non_embedding(width: usize, depth: usize, biases: bool) -> u64 {
    let n = width as u64;
    let l = depth as u64;
    let per_block_vectors = if biases { 13 * n } else { 4 * n };
    l * (12 * n * n + per_block_vectors) + 2 * n
}

/// Training FLOPs split by where they are spent, for a number of tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlopBreakdown {
    /// `6 P D`: the matmuls with non-embedding weights (the "6ND" of Kaplan et al. 2020).
    pub dense: f64,
    /// `6 N V D`: the unembedding matmul.
    pub unembedding: f64,
    /// `12 L N T D`: attention scores and attention-weighted values.
    pub attention: f64,
}

impl FlopBreakdown {
    /// FLOPs of training on `tokens` tokens with the given shape (see the module docs).
    pub fn for_tokens(
        width: usize,
        depth: usize,
        context: usize,
        vocab: usize,
        biases: bool,
        tokens: u64,
    ) -> FlopBreakdown {
        let d = tokens as f64;
        let (n, l, t, v) = (width as f64, depth as f64, context as f64, vocab as f64);
        FlopBreakdown {
            dense: 6.0 * params_non_embedding(width, depth, biases) as f64 * d,
            unembedding: 6.0 * n * v * d,
            attention: 12.0 * l * n * t * d,
        }
    }

    /// `C`, the sum of the components.
    pub fn total(&self) -> f64 {
        self.dense + self.unembedding + self.attention
    }

    /// The breakdown scaled to another token count (FLOPs are linear in tokens).
    pub fn scaled(&self, factor: f64) -> FlopBreakdown {
        FlopBreakdown {
            dense: self.dense * factor,
            unembedding: self.unembedding * factor,
            attention: self.attention * factor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_matches_the_layer_by_layer_sum() {
        for (n, l) in [(64, 1), (128, 4), (256, 2), (1024, 32)] {
            let n64 = n as u64;
            let qkv = 3 * n64 * n64 + 3 * n64;
            let proj = n64 * n64 + n64;
            let mlp = 4 * n64 * n64 + 4 * n64 + 4 * n64 * n64 + n64;
            let norms = 4 * n64;
            let expected = l as u64 * (qkv + proj + mlp + norms) + 2 * n64;
            assert_eq!(params_non_embedding(n, l, true), expected);
            assert_eq!(
                params_non_embedding(n, l, false),
                expected - l as u64 * 9 * n64
            );
        }
    }

    #[test]
    fn flops_components_and_total() {
        let f = FlopBreakdown::for_tokens(128, 4, 128, 256, true, 1000);
        let p = params_non_embedding(128, 4, true) as f64;
        assert_eq!(f.dense, 6.0 * p * 1000.0);
        assert_eq!(f.unembedding, 6.0 * 128.0 * 256.0 * 1000.0);
        assert_eq!(f.attention, 12.0 * 4.0 * 128.0 * 128.0 * 1000.0);
        assert_eq!(f.total(), f.dense + f.unembedding + f.attention);
        assert_eq!(f.scaled(2.0).total(), 2.0 * f.total());
    }
}
