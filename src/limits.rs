//! What one run may cost the machine: bounds on every size a request can name, and an
//! estimate of a run's peak memory checked before it is queued (admission control).
//!
//! The bounds are checked by [`crate::train::RunConfig::validate`], so the CLI and the server
//! share them; they are far beyond any proxy model and exist so that no arithmetic on a
//! config overflows and no request names a model the machine cannot even describe. The
//! memory estimate is checked by the server only (`--max-run-memory-gib`): the CLI trains
//! whatever its user asks for.

use crate::model::Positions;
use crate::train::RunConfig;

/// Largest model width `N` (also of `base_width`).
pub const MAX_WIDTH: usize = 16_384;
/// Largest model depth `L` (also of `base_depth`).
pub const MAX_DEPTH: usize = 1024;
/// Largest batch, in sequences per step.
pub const MAX_BATCH: usize = 65_536;
/// Largest context length `T`, in tokens.
pub const MAX_CONTEXT: usize = 65_536;
/// Largest model vocabulary `V` (the built-in and nanoGPT corpora stop at 65536 already).
pub const MAX_VOCAB: usize = 1 << 20;
/// Most validation sequences.
pub const MAX_VAL_SEQUENCES: usize = 65_536;
/// Largest token budget of one run, explicit (`tokens`) or implied (`tokens_per_param` times
/// the non-embedding parameters): 10^13, several times any published training run.
pub const MAX_TOKENS: f64 = 1e13;

/// Bytes per `f32`, the dtype of every weight, gradient, moment and activation.
const F32: f64 = 4.0;

/// Activations kept for the backward pass per block, in floats per token and unit of width
/// (`B T N` floats each). Counting tensors gives about 30: the block input and its two LayerNorm
/// outputs, `qkv` (3), the scaled queries, the attention output before and after the head
/// merge, the projection, the MLP's `4N` hidden layer before and after the activation and its
/// square (12), the MLP output, the residual sums, LayerNorm statistics, and the gradients alive
/// while the block is differentiated; 28 is the value fitted to measured peaks (see
/// [`estimate_run_memory`]).
const STREAM_FLOATS: f64 = 28.0;
/// Attention maps of `B H T T` floats per block: the scores, the scores plus the causal/ALiBi
/// bias and the softmax probabilities are kept, and the gradients of the probabilities and of
/// the scores exist transiently while the block is differentiated; fitted: 3.5.
const ATTENTION_FLOATS: f64 = 3.5;
/// Copies of the `B T V` logits alive at the loss: the logits, their scaled copy, the
/// log-softmax and its intermediates, and in the backward pass the gradient of the logits;
/// fitted: 5.5.
const LOGIT_FLOATS: f64 = 5.5;
/// Extra copies of the weights alive at the optimizer step (the updated tensors are built while
/// the old ones are still referenced).
const WEIGHT_COPIES_AT_STEP: f64 = 1.0;
/// The process itself and allocator slack: code, the runtime, the built-in corpus's tables, the
/// validation set, pools of freed memory (a minimal run peaks at 26 MiB).
pub const RUNTIME_OVERHEAD_BYTES: u64 = 96 << 20;
/// Rows of the validation set evaluated at once (the trainer's `ROWS_PER_CHUNK`).
const VALIDATION_ROWS_PER_CHUNK: usize = 16;

/// A run's estimated peak memory, in bytes, by where it goes. See [`estimate_run_memory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemoryEstimate {
    /// Trainable parameters `P_total`, embeddings and unembedding included.
    pub parameters: u64,
    /// The `f32` weights, and the copies built at the optimizer step: `4 P (1 + 1)` bytes.
    pub weights_bytes: u64,
    /// The `f32` gradients: `4 P` bytes.
    pub gradients_bytes: u64,
    /// AdamW's first and second moments: `8 P` bytes.
    pub optimizer_bytes: u64,
    /// Activations of one training step kept for the backward pass (or of a validation
    /// forward pass, when larger).
    pub activations_bytes: u64,
    /// The process itself ([`RUNTIME_OVERHEAD_BYTES`]).
    pub overhead_bytes: u64,
}

impl MemoryEstimate {
    /// The estimated peak: every part added (saturating).
    pub fn total_bytes(&self) -> u64 {
        self.weights_bytes
            .saturating_add(self.gradients_bytes)
            .saturating_add(self.optimizer_bytes)
            .saturating_add(self.activations_bytes)
            .saturating_add(self.overhead_bytes)
    }

    /// One line: `about 48.3 GiB at peak (parameters 2.4 GiB, gradients 1.2 GiB, optimizer
    /// 2.4 GiB, activations 44.7 GiB)`.
    pub fn describe(&self) -> String {
        format!(
            "about {} at peak (parameters {}, gradients {}, optimizer {}, activations {})",
            human_bytes(self.total_bytes()),
            human_bytes(self.weights_bytes),
            human_bytes(self.gradients_bytes),
            human_bytes(self.optimizer_bytes),
            human_bytes(self.activations_bytes),
        )
    }

    /// `Ok` when the estimate fits `limit_bytes`, else the refusal naming both, about `what`:
    /// `this run needs about ... at peak (...), above the server's limit of 17.9 GiB
    /// (--max-run-memory-gib)`.
    pub fn admit(&self, limit_bytes: u64, what: &str) -> Result<(), String> {
        if self.total_bytes() <= limit_bytes {
            return Ok(());
        }
        Err(format!(
            "{what} needs {}, above the server's limit of {} (--max-run-memory-gib)",
            self.describe(),
            human_bytes(limit_bytes)
        ))
    }
}

/// Bytes for people: `512 MiB`, `17.9 GiB`, `2.0 TiB` (binary units), `1.2e9 TiB` beyond.
pub fn human_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB * KIB {
        format!("{:.0} KiB", b / KIB)
    } else if b < KIB * KIB * KIB {
        format!("{:.0} MiB", b / (KIB * KIB))
    } else if b < KIB.powi(4) {
        format!("{:.1} GiB", b / KIB.powi(3))
    } else if b < KIB.powi(4) * 1e4 {
        format!("{:.1} TiB", b / KIB.powi(4))
    } else {
        format!("{:.1e} TiB", b / KIB.powi(4))
    }
}

/// The vocabulary a run's model has: `config.vocab`, else its corpus's (the built-in corpus's
/// and nanoGPT's declared vocab, 256 for byte-level text). Tokenized text without `vocab` counts
/// as 256 here, since only its tokenizer file knows better: the server reads it at admission
/// ([`RunConfig::with_tokenizer_vocab`]) and checks memory again.
pub fn model_vocab(config: &RunConfig) -> usize {
    use crate::data::DataSource;
    config.vocab.unwrap_or(match &config.data {
        DataSource::Builtin { vocab, .. } | DataSource::NanoGpt { vocab, .. } => *vocab,
        DataSource::Text { .. } => 256,
    })
}

/// Estimated peak memory of training `config` with a model vocabulary of `vocab` on the CPU
/// backend, in bytes, by part. Pure arithmetic in `f64`, so absurd shapes give huge numbers,
/// never an overflow; the parts saturate at `u64::MAX`.
///
/// With width `N`, depth `L`, heads `H = N / d_head`, context `T`, vocabulary `V` and batch
/// `B` (all counts; every float is an `f32`, 4 bytes):
///
/// * parameters `P = V N` (token embedding) `+ T N` (learned positions only)
///   `+ L (12 N^2 + 13 N) + 2 N` (blocks and final LayerNorm, as [`crate::flops`] counts them;
///   `4 N` instead of `13 N` without biases) `+ N V` (unembedding, unless tied);
/// * weights `4 P (1 + 1)` bytes (the weights, and the new ones built at the optimizer step
///   before the old ones are dropped), gradients `4 P`, AdamW moments `8 P`;
/// * activations of a training step `4 (L (28 B T N + 3.5 B H T^2) + 5.5 B T V + H T^2)`
///   bytes: per block 28 floats per token and unit of width and 3.5 attention maps of `B H T T`
///   (scores, biased scores, probabilities, and their gradients during backward), then 5.5
///   copies of the logits `B T V` at the loss, and the shared `H T T` attention bias. The
///   validation pass (forward only, 16 rows at a time, one block's tensors alive at once) is
///   counted instead when it is larger;
/// * the process itself, [`RUNTIME_OVERHEAD_BYTES`] (96 MiB).
///
/// Calibration: maximum resident set size of `shapewise train` (debug build with dependencies
/// optimised, burn-flex on 2 cores, built-in corpus, `d_head` 64 unless said, measured with
/// `/usr/bin/time -v`, 1 to 10 steps and the validation pass) against this estimate:
///
/// | shape N x L, context T, batch B, vocab V | dominated by | measured | estimate | ratio |
/// |---|---|---|---|---|
/// | 32 x 1, T 16, B 1, V 256 (`d_head` 32) | the process | 26 MiB | 97 MiB | 3.8 |
/// | 256 x 4, T 128, B 16, V 256 | activations | 423 MiB | 450 MiB | 1.06 |
/// | 1024 x 4, T 64, B 4, V 256 | parameters | 1079 MiB | 1195 MiB | 1.11 |
/// | 128 x 4, T 512, B 16, V 256 (`d_head` 32) | attention maps | 1401 MiB | 1504 MiB | 1.07 |
/// | 128 x 1, T 64, B 16, V 65536 | logits | 1631 MiB | 1844 MiB | 1.13 |
/// | 256 x 8, T 128, B 64, V 256 | activations | 2301 MiB | 2503 MiB | 1.09 |
/// | 512 x 8, T 256, B 32, V 256 | activations | 4833 MiB | 6004 MiB | 1.24 |
///
/// So the estimate is an upper-ish bound: 6% to 24% above the measured peak once the run is
/// larger than the process itself. Other backends (GPU, ndarray) are not calibrated.
pub fn estimate_run_memory(config: &RunConfig, vocab: usize) -> MemoryEstimate {
    let n = config.width as f64;
    let l = config.depth as f64;
    let t = config.context as f64;
    let v = vocab as f64;
    let b = config.batch as f64;
    let heads = n / config.d_head.max(1) as f64;

    let per_block_vectors = if config.biases { 13.0 } else { 4.0 };
    let blocks = l * (12.0 * n * n + per_block_vectors * n) + 2.0 * n;
    let positions = match config.positions {
        Positions::Learned => t * n,
        Positions::Alibi => 0.0,
    };
    let unembedding = if config.tied_embeddings { 0.0 } else { n * v };
    let parameters = v * n + positions + blocks + unembedding;

    // Floats alive for `rows` sequences: every block's kept for backward (training), or one
    // block's at a time (forward only: each block's tensors go once the next block has run).
    let activations = |rows: f64, backward: bool| {
        let per_block = STREAM_FLOATS * rows * t * n + ATTENTION_FLOATS * rows * heads * t * t;
        let kept = if backward { l * per_block } else { per_block };
        kept + LOGIT_FLOATS * rows * t * v + heads * t * t
    };
    let eval_rows = config.val_sequences.min(VALIDATION_ROWS_PER_CHUNK) as f64;
    let activation_floats = activations(b, true).max(activations(eval_rows, false));

    let bytes = |floats: f64| (floats * F32) as u64;
    MemoryEstimate {
        parameters: parameters as u64,
        weights_bytes: bytes(parameters * (1.0 + WEIGHT_COPIES_AT_STEP)),
        gradients_bytes: bytes(parameters),
        optimizer_bytes: bytes(2.0 * parameters),
        activations_bytes: bytes(activation_floats),
        overhead_bytes: RUNTIME_OVERHEAD_BYTES,
    }
}

/// [`estimate_run_memory`]'s total, in bytes.
pub fn estimate_run_memory_bytes(config: &RunConfig, vocab: usize) -> u64 {
    estimate_run_memory(config, vocab).total_bytes()
}

/// The default limit on one run's estimated peak memory: the machine's memory less a quarter
/// for the server and the operating system, shared among `workers` concurrent runs.
pub fn default_max_run_memory_bytes(workers: usize) -> u64 {
    let total = machine_memory_bytes().unwrap_or(8 << 30);
    total / 4 * 3 / workers.max(1) as u64
}

/// Physical memory, from `/proc/meminfo` (Linux); `None` elsewhere.
fn machine_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DataSource;

    fn shape(width: usize, depth: usize, context: usize, batch: usize) -> RunConfig {
        RunConfig {
            width,
            depth,
            d_head: 64.min(width),
            context,
            batch,
            data: DataSource::Builtin {
                seed: 0,
                vocab: 256,
            },
            ..RunConfig::default()
        }
    }

    fn total(config: &RunConfig) -> u64 {
        estimate_run_memory_bytes(config, model_vocab(config))
    }

    #[test]
    fn the_estimate_grows_with_every_size() {
        let base = shape(256, 4, 128, 16);
        let mut last = total(&base);
        for width in [512, 1024, 2048] {
            let now = total(&shape(width, 4, 128, 16));
            assert!(now > last, "width {width}: {now} <= {last}");
            last = now;
        }
        let mut last = total(&base);
        for depth in [8, 16, 64] {
            let now = total(&shape(256, depth, 128, 16));
            assert!(now > last, "depth {depth}");
            last = now;
        }
        let mut last = total(&base);
        for batch in [32, 64, 1024] {
            let now = total(&shape(256, 4, 128, batch));
            assert!(now > last, "batch {batch}");
            last = now;
        }
        let mut last = total(&base);
        for context in [256, 1024, 4096] {
            let now = total(&shape(256, 4, context, 16));
            assert!(now > last, "context {context}");
            last = now;
        }
        assert!(estimate_run_memory_bytes(&base, 65536) > estimate_run_memory_bytes(&base, 256));
        // Tying the unembedding saves its N V parameters.
        let tied = RunConfig {
            tied_embeddings: true,
            ..base.clone()
        };
        let (a, b) = (
            estimate_run_memory(&base, 256),
            estimate_run_memory(&tied, 256),
        );
        assert_eq!(a.parameters - b.parameters, 256 * 256);
    }

    #[test]
    fn the_estimate_is_near_a_measured_peak() {
        // Measured: `shapewise train --width 256 --depth 4 --context 128 --batch 16` (vocab 256)
        // peaks at 423 MiB of resident memory.
        let estimate = estimate_run_memory(&shape(256, 4, 128, 16), 256);
        let measured = 423u64 << 20;
        let ratio = estimate.total_bytes() as f64 / measured as f64;
        assert!((1.0..1.5).contains(&ratio), "{estimate:?}: ratio {ratio}");
        // P = V N + L (12 N^2 + 13 N) + 2 N + N V.
        assert_eq!(
            estimate.parameters,
            2 * 256 * 256 + 4 * (12 * 256 * 256 + 13 * 256) + 2 * 256
        );
        assert_eq!(estimate.weights_bytes, 8 * estimate.parameters);
        assert_eq!(estimate.gradients_bytes, 4 * estimate.parameters);
        assert_eq!(estimate.optimizer_bytes, 8 * estimate.parameters);
        // A GPT-2-small shape (124M + 39M parameters, batch 8 of 1024 tokens, untied, no fused
        // attention) needs tens of GiB in f32.
        let gpt2 = RunConfig {
            d_head: 64,
            ..shape(768, 12, 1024, 8)
        };
        let gib = estimate_run_memory_bytes(&gpt2, 50304) as f64 / (1u64 << 30) as f64;
        assert!((20.0..80.0).contains(&gib), "{gib} GiB");
    }

    #[test]
    fn absurd_shapes_saturate_instead_of_overflowing() {
        let absurd = RunConfig {
            width: 1 << 40,
            depth: 1 << 63,
            d_head: 1,
            context: usize::MAX,
            batch: usize::MAX,
            ..RunConfig::default()
        };
        let estimate = estimate_run_memory(&absurd, usize::MAX);
        assert_eq!(estimate.total_bytes(), u64::MAX);
        assert!(estimate.admit(1 << 40, "this run").is_err());
        // Validation refuses such a config before anything else computes with it.
        let err = absurd.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "'width' must be an integer from 1 to 16384, got 1099511627776"
        );
    }

    #[test]
    fn refusals_name_the_estimate_and_the_limit() {
        let estimate = estimate_run_memory(&shape(4096, 32, 128, 16), 256);
        assert!(estimate.admit(u64::MAX, "this run").is_ok());
        let message = estimate.admit(2 << 30, "this run").unwrap_err();
        assert!(message.starts_with("this run needs about "), "{message}");
        assert!(
            message.contains(" GiB at peak (parameters ") && message.contains(", optimizer "),
            "{message}"
        );
        assert!(
            message.ends_with("above the server's limit of 2.0 GiB (--max-run-memory-gib)"),
            "{message}"
        );
        assert_eq!(human_bytes(300 << 20), "300 MiB");
        assert_eq!(human_bytes(19_219_683_328), "17.9 GiB");
        assert_eq!(human_bytes(3 << 40), "3.0 TiB");
    }
}
