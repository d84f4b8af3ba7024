//! Token corpora: where a run's tokens come from, how they are batched, and the
//! fixed validation set every run on a corpus is scored against.
//!
//! A [`Corpus`] hands out sequences of `T + 1` integer tokens (`T` is the model's
//! context length): the model reads the first `T` and predicts the last `T`.
//! Three sources exist:
//!
//! * **Text** files (one file or a folder of them), tokenised byte by byte
//!   (vocab 256) or by a Hugging Face tokenizer (`tokenizer.json`, read from
//!   disk, never downloaded; the vocab is its largest id plus one). The last
//!   10% of the tokens are held out for validation.
//! * **nanoGPT** `train.bin` / `val.bin` files of little-endian `u16` tokens.
//! * The **built-in** generated corpus, the one sweeps normally use. Its point
//!   is that the generator knows the true conditional distribution
//!   `p(x_t | x_<t)` at every position, so the *irreducible* loss (the entropy
//!   floor, in nats/token) is known exactly on the validation set, and
//!   scaling-law fits do not have to guess it.
//!
//! # The built-in corpus
//!
//! Every sequence is an independent *document* of exactly `T + 1` tokens,
//! generated from its own seed, so any training row `(run seed, step, row)` can
//! be produced without generating earlier ones, and the supply never runs out
//! (no epochs, no repetition). Validation document `i` is seeded from the corpus
//! seed and `i` alone, so it is the same for every run, and with a different
//! domain tag than training documents, so the two streams never coincide.
//!
//! With vocab `V`, `K = V / 16` topics and the reserved id `COPY = V - 1`:
//!
//! * Token 0 is a topic `t` in `[0, K)`, Zipf-distributed (`P(t) ∝ (t+1)^-1`).
//!   Topic ids double as ordinary tokens later in documents.
//! * Every later token is drawn from a mixture of
//!   - an order-1 table conditioned on (topic, previous token), weight 0.35,
//!   - an order-2 table conditioned on the previous 2 tokens, weight 0.30,
//!   - an order-3 table conditioned on the previous 3 tokens, weight 0.25,
//!   - a per-topic unigram, weight 0.07,
//!   - the `COPY` token, weight 0.03.
//!
//!   No table is stored: the row for a context is a sparse distribution
//!   regenerated on demand from a hash of (corpus seed, order, context tokens).
//!   It puts Zipf weights `(rank+1)^-1.2` on `s_k` distinct ids (never `COPY`),
//!   with `s_1 = 12`, `s_2 = 6`, `s_3 = 3`. Higher orders are sharper but have
//!   exponentially many contexts, so learning them takes capacity: bigger
//!   models keep finding loss to remove, as on real text. Components whose
//!   context does not exist yet (order `k` needs `k` earlier tokens; `COPY`
//!   needs `C + 1`, see below) are dropped and the rest renormalised.
//!
//!   Rows are not drawn uniformly from the vocab, which would leave unigram and
//!   bigram statistics almost flat and a small model nothing to learn before it
//!   can memorise whole contexts. As in language, ids have Zipf(1) global
//!   frequencies; each token `b` has a fixed pool of 24 plausible followers
//!   drawn by frequency, and every order's row after `b` picks its support
//!   from that pool (favouring the pool's first entries). So unigram
//!   statistics help, bigram statistics help more, and each higher order
//!   sharpens the prediction further. The topic unigram is different: 32 ids
//!   drawn uniformly (topic words are globally rare, locally common).
//! * `COPY` is an induction task that rewards depth: when `COPY` is emitted at
//!   position `j` after the token `a = x_{j-1}`, the next `C = 6` tokens are a
//!   verbatim copy of the 6 tokens that followed the most recent earlier
//!   occurrence of `a` (at a position before `j - 1`), or of `x_1..` if `a` did
//!   not occur. Copied tokens have probability 1. A `COPY` id that is itself
//!   copied is a literal and does not start another copy. Copies are truncated
//!   at the end of the document.
//!
//! The generative state (topic, last 3 tokens, copy progress) is a
//! deterministic function of the tokens seen so far, so the oracle sees
//! everything the generator does: its mean `-ln p` over the validation set is
//! the loss of the best possible model, measured on exactly those tokens.
//!
//! For vocab 256 and context 128, on 64 validation sequences: entropy floor
//! 2.13, bigram model (fitted on 200k tokens) 3.13, unigram entropy 4.62
//! nats/token.
//!
//! # Reading files safely
//!
//! File corpora read regular files only: a FIFO, a device or a socket is refused
//! from its file type, looked up before anything is opened (opening a FIFO
//! blocks), and files are opened non-blocking and checked again once open. One
//! corpus reads at most [`MAX_DATA_BYTES`] (2 GiB) in all, and a text folder may
//! hold at most [`MAX_DATA_FILES`] entries nested at most [`MAX_DATA_DEPTH`]
//! deep. [`confine`] additionally keeps a source under a set of folders (the
//! server's data roots), for callers that read paths they did not choose.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rng::{SplitMix64, mix64};

/// Where a run's tokens come from, chosen by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSource {
    /// The generated corpus (see the module docs). `seed` fixes its content,
    /// `vocab` its token count (between [`BUILTIN_MIN_VOCAB`] and
    /// [`BUILTIN_MAX_VOCAB`]).
    Builtin {
        /// Seed of the corpus content (not of any run).
        seed: u64,
        /// Number of distinct token ids.
        vocab: usize,
    },
    /// A UTF-8 text file, or a folder of them (read recursively, hidden entries
    /// skipped, files sorted by path and joined with `b'\n'`). Regular files
    /// only, at most [`MAX_DATA_BYTES`] in all.
    Text {
        /// The file or folder.
        #[schema(value_type = String)]
        path: PathBuf,
        /// A Hugging Face `tokenizer.json` (at most [`MAX_TOKENIZER_BYTES`]);
        /// its vocab is its largest id plus one. Without it, tokens are bytes
        /// (vocab 256).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>)]
        tokenizer: Option<PathBuf>,
    },
    /// nanoGPT format: `dir/train.bin` and `dir/val.bin`, `u16` little-endian
    /// tokens, all `< vocab`.
    NanoGpt {
        /// Folder holding `train.bin` and `val.bin`.
        #[schema(value_type = String)]
        dir: PathBuf,
        /// Vocab size the data was tokenised with (at most 65536).
        vocab: usize,
    },
}

/// Smallest vocab of the built-in corpus (it needs at least one topic, `V / 16`).
pub const BUILTIN_MIN_VOCAB: usize = 16;
/// Largest vocab of the built-in corpus: ids fit a `u16`, as nanoGPT's do.
pub const BUILTIN_MAX_VOCAB: usize = 65536;
/// Largest supported context length, in tokens; far beyond any proxy model,
/// it keeps `batch * (T + 1)` arithmetic well inside `usize`.
pub const MAX_CONTEXT: usize = 1 << 20;
/// Largest nanoGPT vocab: its tokens are stored as `u16`.
const NANOGPT_MAX_VOCAB: usize = 1 << 16;
/// Text corpora hold out the last `1 / TEXT_VAL_DIVISOR` of their tokens.
const TEXT_VAL_DIVISOR: usize = 10;
/// Most bytes one file corpus reads: its text files together, or `train.bin` and
/// `val.bin` together. 2 GiB, held in memory as `u16` tokens (4 GiB for text).
pub const MAX_DATA_BYTES: u64 = 2 << 30;
/// Largest `tokenizer.json` read (Llama 3's is 9 MB, Gemma's 34 MB).
pub const MAX_TOKENIZER_BYTES: u64 = 64 << 20;
/// Text is encoded by a tokenizer in pieces of about this many bytes, each
/// ending at a line break (or at the end of the text), so that no single
/// encoding holds the offsets and strings of a whole corpus.
const TOKENIZER_PIECE_BYTES: usize = 1 << 20;
/// Most entries (files and folders; hidden entries are skipped, not counted) a
/// text folder may hold, however deep.
pub const MAX_DATA_FILES: usize = 10_000;
/// Deepest nesting of folders in a text folder.
pub const MAX_DATA_DEPTH: usize = 64;

/// Why a corpus could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The context length is 0 or absurdly large.
    #[error("context length must be between 1 and {max} tokens, got {got}", max = MAX_CONTEXT)]
    Context {
        /// The context length asked for.
        got: usize,
    },
    /// The built-in corpus was asked for an unsupported vocab.
    #[error(
        "builtin vocab must be between {min} and {max}, got {0}",
        min = BUILTIN_MIN_VOCAB,
        max = BUILTIN_MAX_VOCAB
    )]
    BuiltinVocab(usize),
    /// A nanoGPT vocab that `u16` tokens cannot use.
    #[error("nanoGPT vocab must be between 1 and 65536 (tokens are u16), got {0}")]
    NanoGptVocab(usize),
    /// A file or folder that should exist does not.
    #[error("data file not found: {} ({expected})", .path.display())]
    NotFound {
        /// What was looked for.
        path: PathBuf,
        /// What the source expects to find there.
        expected: String,
    },
    /// A text folder without any (non-hidden) files.
    #[error("no text files in folder {}", .0.display())]
    NoTextFiles(PathBuf),
    /// A text file that is not UTF-8.
    #[error("{} is not valid UTF-8 (byte {byte})", .path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Offset of the first byte that is not part of valid UTF-8.
        byte: usize,
    },
    /// A nanoGPT file whose byte length is odd, so it cannot hold `u16` tokens.
    #[error(
        "{} has an odd length of {bytes} bytes: nanoGPT .bin files hold 2-byte u16 tokens",
        .path.display()
    )]
    OddLength {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        bytes: usize,
    },
    /// A stored token outside the declared vocab.
    #[error(
        "token {token} in {} is >= vocab {vocab}: pass the vocab size the data was tokenized with",
        .path.display()
    )]
    TokenOutOfRange {
        /// The first offending token.
        token: u32,
        /// The file holding it.
        path: PathBuf,
        /// The vocab that was declared.
        vocab: usize,
    },
    /// Not even one validation window of `T + 1` tokens fits.
    #[error(
        "{} has too few tokens for one validation sequence of {needed} tokens \
         ({have} validation tokens): use more data or a shorter context",
        .path.display()
    )]
    TooFewValidation {
        /// The file or folder.
        path: PathBuf,
        /// `T + 1`.
        needed: usize,
        /// Validation tokens available.
        have: usize,
    },
    /// Not even one training window of `T + 1` tokens fits.
    #[error(
        "{} has too few tokens for one training sequence of {needed} tokens \
         ({have} training tokens): use more data or a shorter context",
        .path.display()
    )]
    TooFewTraining {
        /// The file or folder.
        path: PathBuf,
        /// `T + 1`.
        needed: usize,
        /// Training tokens available.
        have: usize,
    },
    /// Neither a regular file nor a folder: a FIFO, a device, a socket.
    #[error(
        "{} is not a regular file: data must be regular files or folders of them",
        .0.display()
    )]
    NotRegular(PathBuf),
    /// More bytes than one corpus may read.
    #[error(
        "{} holds more than {limit} bytes of data, the most one corpus reads",
        .path.display()
    )]
    TooLarge {
        /// The file or folder.
        path: PathBuf,
        /// [`MAX_DATA_BYTES`].
        limit: u64,
    },
    /// A text folder with too many entries or nested too deep.
    #[error(
        "{} holds more than {files} files and folders or nests them deeper than {depth}",
        .0.display(),
        files = MAX_DATA_FILES,
        depth = MAX_DATA_DEPTH
    )]
    TooManyFiles(PathBuf),
    /// A tokenizer file that the `tokenizers` library cannot load or use.
    #[error("{} is not a usable Hugging Face tokenizer.json: {reason}", .path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What the library said.
        reason: String,
    },
    /// A path that resolves outside the allowed folders (see [`confine`]).
    #[error("{} lies outside the data roots", .0.display())]
    OutsideRoots(PathBuf),
    /// Any other IO failure.
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        /// The file or folder being read.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Mean oracle cross-entropy: the irreducible loss of the built-in corpus on
/// its validation set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EntropyFloor {
    /// Mean of `-ln p(x_t | x_<t)` under the true distribution, in nats/token.
    pub nats_per_token: f64,
    /// Standard error of that mean: sample standard deviation over positions
    /// divided by `sqrt(tokens)`. Positions within a document are correlated,
    /// so treat it as a lower bound on the true uncertainty.
    pub standard_error: f64,
    /// Number of prediction positions averaged (`sequences * T`).
    pub tokens: usize,
}

/// An opened token source, ready to hand out training batches and the
/// validation set for one context length.
pub struct Corpus {
    context: usize,
    source: Source,
}

/// Shows the one-line description rather than millions of tokens.
impl std::fmt::Debug for Corpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Corpus")
            .field("source", &self.describe())
            .field("context", &self.context)
            .finish()
    }
}

enum Source {
    Builtin(Builtin),
    Stored(Stored),
}

impl Corpus {
    /// Opens (and for files, reads and validates) a source. `context` is the
    /// model's context length `T`; every sequence handed out has `T + 1` tokens
    /// (inputs are the first `T`, targets the last `T`).
    pub fn open(source: &DataSource, context: usize) -> Result<Corpus, DataError> {
        if context == 0 || context > MAX_CONTEXT {
            return Err(DataError::Context { got: context });
        }
        let window = context + 1;
        let source = match source {
            DataSource::Builtin { seed, vocab } => Source::Builtin(Builtin::new(*seed, *vocab)?),
            DataSource::Text { path, tokenizer } => {
                Source::Stored(Stored::text(path, tokenizer.as_deref(), window)?)
            }
            DataSource::NanoGpt { dir, vocab } => {
                Source::Stored(Stored::nanogpt(dir, *vocab, window)?)
            }
        };
        Ok(Corpus { context, source })
    }

    /// Number of distinct token ids; every token handed out is below it.
    pub fn vocab_size(&self) -> usize {
        match &self.source {
            Source::Builtin(b) => b.vocab,
            Source::Stored(s) => s.vocab,
        }
    }

    /// The context length `T` the corpus was opened for.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Tokens for training step `step`: `batch` sequences of `context + 1`
    /// tokens, row-major, length `batch * (context + 1)`. Deterministic in
    /// (corpus content, `seed`, `step`, `batch`), and row `r` does not depend on
    /// `batch`. Never draws from validation data.
    pub fn train_batch(&self, seed: u64, step: u64, batch: usize) -> Vec<u32> {
        let window = self.context + 1;
        let mut out = Vec::with_capacity(batch.saturating_mul(window));
        match &self.source {
            Source::Builtin(b) => {
                let mut doc = Document::new(b);
                for row in 0..batch as u64 {
                    doc.generate(b.train_seed(seed, step, row), window, None);
                    out.extend_from_slice(&doc.tokens);
                }
            }
            Source::Stored(s) => {
                // `open` guaranteed `train.len() >= window`.
                let starts = (s.train.len() - window + 1) as u64;
                for row in 0..batch as u64 {
                    let mut rng = SplitMix64::new(hash(&[TAG_WINDOW, seed, step, row]));
                    let start = rng.below(starts) as usize;
                    s.train.extend_into(start..start + window, &mut out);
                }
            }
        }
        out
    }

    /// The fixed held-out validation set: `sequences` rows of `context + 1`
    /// tokens, identical for every run on this corpus and context (independent
    /// of any run seed). File corpora cap the rows at the number of
    /// non-overlapping windows from the start of their validation part (at least
    /// one, else `open` failed). Returns (tokens, number of rows).
    pub fn validation_set(&self, sequences: usize) -> (Vec<u32>, usize) {
        let window = self.context + 1;
        match &self.source {
            Source::Builtin(b) => {
                let mut out = Vec::with_capacity(sequences.saturating_mul(window));
                let mut doc = Document::new(b);
                for i in 0..sequences as u64 {
                    doc.generate(b.val_seed(i), window, None);
                    out.extend_from_slice(&doc.tokens);
                }
                (out, sequences)
            }
            Source::Stored(s) => {
                let rows = sequences.min(s.val.len() / window);
                let mut tokens = Vec::with_capacity(rows * window);
                s.val.extend_into(0..rows * window, &mut tokens);
                (tokens, rows)
            }
        }
    }

    /// For the built-in corpus: the oracle's mean `-ln p(target | past)` (nats)
    /// over the prediction positions `1..=T` of exactly the rows returned by
    /// `validation_set(sequences)`, with its standard error. `None` for file
    /// corpora (their true distribution is unknown) and for `sequences == 0`.
    pub fn entropy_floor(&self, sequences: usize) -> Option<EntropyFloor> {
        let Source::Builtin(b) = &self.source else {
            return None;
        };
        if sequences == 0 {
            return None;
        }
        let window = self.context + 1;
        let mut doc = Document::new(b);
        let mut log_probs = Vec::with_capacity(self.context);
        let (mut sum, mut sum_sq) = (0.0_f64, 0.0_f64);
        for i in 0..sequences as u64 {
            log_probs.clear();
            doc.generate(b.val_seed(i), window, Some(&mut log_probs));
            for &lp in &log_probs {
                sum -= lp;
                sum_sq += lp * lp;
            }
        }
        let n = sequences * self.context;
        let mean = sum / n as f64;
        // Unbiased sample variance; a single position has no spread to measure.
        let variance = if n > 1 {
            ((sum_sq - n as f64 * mean * mean) / (n - 1) as f64).max(0.0)
        } else {
            0.0
        };
        Some(EntropyFloor {
            nats_per_token: mean,
            standard_error: (variance / n as f64).sqrt(),
            tokens: n,
        })
    }

    /// The built-in corpus's exact next-token distribution after a document
    /// prefix (`prefix[0]` is the topic), as `vocab_size()` probabilities
    /// summing to 1. `None` for file corpora, or when `prefix` cannot start a
    /// document (empty, topic `>= vocab / 16`, or a token `>= vocab`).
    pub fn oracle_distribution(&self, prefix: &[u32]) -> Option<Vec<f64>> {
        let Source::Builtin(b) = &self.source else {
            return None;
        };
        let (&topic, rest) = prefix.split_first()?;
        if topic as usize >= b.topics || rest.iter().any(|&t| t as usize >= b.vocab) {
            return None;
        }
        let mut doc = Document::new(b);
        doc.start(topic);
        for &token in rest {
            doc.push(token);
        }
        let mut probs = vec![0.0; b.vocab];
        match doc.next() {
            Next::Forced(token) => probs[token as usize] = 1.0,
            Next::Mixture => {
                for &(token, p) in &doc.entries {
                    probs[token as usize] += p;
                }
            }
        }
        Some(probs)
    }

    /// One line for humans, e.g. `builtin(seed 0, vocab 256)`,
    /// `text /x (1234567 train tokens, 137174 val tokens)` or
    /// `text /x (tokenizer /t.json, vocab 50257, 300000 train tokens, 33000 val tokens)`.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Builtin(b) => format!("builtin(seed {}, vocab {})", b.seed, b.vocab),
            Source::Stored(s) => {
                let vocab = match (&s.format, &s.tokenizer) {
                    (Format::Text, None) => String::new(),
                    (Format::Text, Some(t)) => {
                        format!("tokenizer {}, vocab {}, ", t.path.display(), s.vocab)
                    }
                    (Format::NanoGpt, _) => format!("vocab {}, ", s.vocab),
                };
                format!(
                    "{} {} ({vocab}{} train tokens, {} val tokens)",
                    s.format.name(),
                    s.path.display(),
                    s.train.len(),
                    s.val.len()
                )
            }
        }
    }

    /// Tokens as text, where the corpus knows how: bytes for byte-level text
    /// (invalid UTF-8 shown as U+FFFD), the tokenizer's decoder for tokenized
    /// text; ids beyond the corpus vocab (a padded model's) are skipped. `None` for nanoGPT and the built-in corpus, whose ids name no text.
    pub fn decode(&self, tokens: &[u32]) -> Option<String> {
        let Source::Stored(s) = &self.source else {
            return None;
        };
        match (&s.format, &s.tokenizer) {
            (Format::Text, None) => {
                let bytes: Vec<u8> = tokens
                    .iter()
                    .filter_map(|&t| u8::try_from(t).ok())
                    .collect();
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            (Format::Text, Some(t)) => t.tokenizer.decode(tokens, false).ok(),
            (Format::NanoGpt, _) => None,
        }
    }
}

// ---------------------------------------------------------------------------
// File corpora
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Format {
    Text,
    NanoGpt,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::NanoGpt => "nanogpt",
        }
    }
}

/// Tokens held in memory: `u16` where every id fits (bytes, nanoGPT, tokenizers
/// of at most 65536 ids), halving the footprint; `u32` otherwise.
enum Tokens {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

impl Tokens {
    /// Stores `ids`, all below `vocab`, in the narrowest type that holds them.
    fn new(ids: &[u32], vocab: usize) -> Tokens {
        if vocab <= 1 << 16 {
            Tokens::Narrow(ids.iter().map(|&t| t as u16).collect())
        } else {
            Tokens::Wide(ids.to_vec())
        }
    }

    fn len(&self) -> usize {
        match self {
            Tokens::Narrow(t) => t.len(),
            Tokens::Wide(t) => t.len(),
        }
    }

    /// Appends the tokens at `range` to `out`.
    fn extend_into(&self, range: std::ops::Range<usize>, out: &mut Vec<u32>) {
        match self {
            Tokens::Narrow(t) => out.extend(t[range].iter().map(|&t| u32::from(t))),
            Tokens::Wide(t) => out.extend_from_slice(&t[range]),
        }
    }
}

/// The vocab of the tokenizer at `path`: its largest id plus one. Reads and
/// parses the file (at most [`MAX_TOKENIZER_BYTES`]).
pub fn tokenizer_vocab(path: &Path) -> Result<usize, DataError> {
    TextTokenizer::load(path).map(|(_, vocab)| vocab)
}

/// A loaded `tokenizer.json` and where it came from.
struct TextTokenizer {
    path: PathBuf,
    tokenizer: tokenizers::Tokenizer,
}

impl TextTokenizer {
    /// Reads and parses `path` (a regular file of at most [`MAX_TOKENIZER_BYTES`]).
    /// Returns the tokenizer and its vocab: its largest id (added tokens
    /// included) plus one, so that every id it emits is below the vocab even
    /// where ids are not contiguous.
    fn load(path: &Path) -> Result<(TextTokenizer, usize), DataError> {
        const EXPECTED: &str = "expected a Hugging Face tokenizer.json";
        let bytes = read_regular(path, MAX_TOKENIZER_BYTES, EXPECTED)?;
        let invalid = |reason: String| DataError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        let tokenizer =
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| invalid(e.to_string()))?;
        let vocab = tokenizer
            .get_vocab(true)
            .into_values()
            .max()
            .map(|id| id as usize + 1)
            .ok_or_else(|| invalid("its vocabulary is empty".into()))?;
        let loaded = TextTokenizer {
            path: path.to_path_buf(),
            tokenizer,
        };
        Ok((loaded, vocab))
    }

    /// Encodes `text` without special tokens, in pieces of about
    /// [`TOKENIZER_PIECE_BYTES`] that end at line breaks (pre-tokenizers split
    /// there anyway, so the ids match encoding the whole text at once for
    /// byte-level BPE tokenizers like GPT-2's).
    fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        let mut rest = text;
        while !rest.is_empty() {
            let mut end = rest.len().min(TOKENIZER_PIECE_BYTES);
            if end < rest.len() {
                end = match rest.as_bytes()[end..].iter().position(|&b| b == b'\n') {
                    Some(offset) => end + offset + 1,
                    None => rest.len(),
                };
            }
            let (piece, tail) = rest.split_at(end);
            let encoding =
                self.tokenizer
                    .encode_fast(piece, false)
                    .map_err(|e| DataError::Tokenizer {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })?;
            ids.extend_from_slice(encoding.get_ids());
            rest = tail;
        }
        Ok(ids)
    }
}

/// Tokens held in memory, split into training and validation parts.
struct Stored {
    format: Format,
    path: PathBuf,
    vocab: usize,
    /// The tokenizer of tokenized text; `None` for bytes and nanoGPT.
    tokenizer: Option<Box<TextTokenizer>>,
    train: Tokens,
    val: Tokens,
}

impl Stored {
    fn text(path: &Path, tokenizer: Option<&Path>, window: usize) -> Result<Stored, DataError> {
        const EXPECTED: &str = "expected a UTF-8 text file or a folder of them";
        let tokenizer = tokenizer.map(TextTokenizer::load).transpose()?;
        let meta = fs::metadata(path).map_err(|e| read_error(path, e, EXPECTED))?;
        let files = if meta.is_dir() {
            let files = text_files(path, None)?.files;
            if files.is_empty() {
                return Err(DataError::NoTextFiles(path.to_path_buf()));
            }
            files
        } else if meta.is_file() {
            vec![path.to_path_buf()]
        } else {
            return Err(DataError::NotRegular(path.to_path_buf()));
        };
        let mut bytes = Vec::new();
        for (i, file) in files.iter().enumerate() {
            let budget = MAX_DATA_BYTES.saturating_sub(bytes.len() as u64);
            let content = read_regular(file, budget, EXPECTED).map_err(|e| match e {
                DataError::TooLarge { limit, .. } => DataError::TooLarge {
                    path: path.to_path_buf(),
                    limit,
                },
                other => other,
            })?;
            if let Err(e) = std::str::from_utf8(&content) {
                return Err(DataError::NotUtf8 {
                    path: file.clone(),
                    byte: e.valid_up_to(),
                });
            }
            if i > 0 {
                bytes.push(b'\n');
            }
            bytes.extend_from_slice(&content);
        }
        let held_out = |len: usize| len - len / TEXT_VAL_DIVISOR;
        let (train, val, vocab, tokenizer) = match tokenizer {
            None => {
                let split = held_out(bytes.len());
                let narrow = |b: &[u8]| Tokens::Narrow(b.iter().map(|&b| u16::from(b)).collect());
                (narrow(&bytes[..split]), narrow(&bytes[split..]), 256, None)
            }
            Some((tokenizer, vocab)) => {
                // Every file was checked to be UTF-8, and so is their join.
                let text = String::from_utf8(bytes).expect("UTF-8 files joined by newlines");
                let ids = tokenizer.encode(&text)?;
                drop(text);
                let split = held_out(ids.len());
                let (train, val) = ids.split_at(split);
                let tokens = |ids: &[u32]| Tokens::new(ids, vocab);
                (tokens(train), tokens(val), vocab, Some(Box::new(tokenizer)))
            }
        };
        let stored = Stored {
            format: Format::Text,
            path: path.to_path_buf(),
            vocab,
            tokenizer,
            train,
            val,
        };
        stored.check_sizes(window)?;
        Ok(stored)
    }

    fn nanogpt(dir: &Path, vocab: usize, window: usize) -> Result<Stored, DataError> {
        if vocab == 0 || vocab > NANOGPT_MAX_VOCAB {
            return Err(DataError::NanoGptVocab(vocab));
        }
        let mut budget = MAX_DATA_BYTES;
        let mut read = |name: &str| -> Result<Vec<u16>, DataError> {
            let path = dir.join(name);
            let expected = format!(
                "expected nanoGPT train.bin and val.bin in {}",
                dir.display()
            );
            let bytes = read_regular(&path, budget, &expected).map_err(|e| match e {
                DataError::TooLarge { limit, .. } => DataError::TooLarge {
                    path: dir.to_path_buf(),
                    limit,
                },
                other => other,
            })?;
            budget -= bytes.len() as u64;
            if bytes.len() % 2 != 0 {
                return Err(DataError::OddLength {
                    path,
                    bytes: bytes.len(),
                });
            }
            let tokens: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
                .collect();
            if let Some(&token) = tokens.iter().find(|&&t| usize::from(t) >= vocab) {
                return Err(DataError::TokenOutOfRange {
                    token: u32::from(token),
                    path,
                    vocab,
                });
            }
            Ok(tokens)
        };
        let stored = Stored {
            format: Format::NanoGpt,
            path: dir.to_path_buf(),
            vocab,
            tokenizer: None,
            train: Tokens::Narrow(read("train.bin")?),
            val: Tokens::Narrow(read("val.bin")?),
        };
        stored.check_sizes(window)?;
        Ok(stored)
    }

    fn check_sizes(&self, window: usize) -> Result<(), DataError> {
        // Name the file that is short where there is one, else the folder.
        let (train_path, val_path) = match self.format {
            Format::Text => (self.path.clone(), self.path.clone()),
            Format::NanoGpt => (self.path.join("train.bin"), self.path.join("val.bin")),
        };
        if self.val.len() < window {
            return Err(DataError::TooFewValidation {
                path: val_path,
                needed: window,
                have: self.val.len(),
            });
        }
        if self.train.len() < window {
            return Err(DataError::TooFewTraining {
                path: train_path,
                needed: window,
                have: self.train.len(),
            });
        }
        Ok(())
    }
}

/// The files of a text folder and their total length as listed.
#[derive(Debug)]
struct TextFiles {
    /// Sorted by path.
    files: Vec<PathBuf>,
    /// Sum of the files' lengths (what the file system says, before reading).
    bytes: u64,
}

/// Lists the non-hidden files under `dir`, recursively, sorted: regular files
/// only (anything else is an error, found from its file type without opening
/// it), at most [`MAX_DATA_FILES`] entries, [`MAX_DATA_DEPTH`] levels and
/// [`MAX_DATA_BYTES`] bytes. Links to files are followed; links to folders and
/// dangling links are skipped, so a link cycle cannot recurse forever. With
/// `roots`, every link must also resolve under one of them.
fn text_files(dir: &Path, roots: Option<&[PathBuf]>) -> Result<TextFiles, DataError> {
    let mut walk = Walk {
        top: dir,
        roots,
        entries: 0,
        found: TextFiles {
            files: Vec::new(),
            bytes: 0,
        },
    };
    walk.visit(dir, 0)?;
    walk.found.files.sort();
    Ok(walk.found)
}

struct Walk<'a> {
    top: &'a Path,
    roots: Option<&'a [PathBuf]>,
    entries: usize,
    found: TextFiles,
}

impl Walk<'_> {
    fn visit(&mut self, dir: &Path, depth: usize) -> Result<(), DataError> {
        if depth > MAX_DATA_DEPTH {
            return Err(DataError::TooManyFiles(self.top.to_path_buf()));
        }
        for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
            let entry = entry.map_err(|e| io_error(dir, e))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            self.entries += 1;
            if self.entries > MAX_DATA_FILES {
                return Err(DataError::TooManyFiles(self.top.to_path_buf()));
            }
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| io_error(&path, e))?;
            let meta = if kind.is_symlink() {
                // `canonicalize` and `metadata` follow the link without opening its target.
                let target = match fs::canonicalize(&path) {
                    Ok(target) => target,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error(&path, e)),
                };
                if let Some(roots) = self.roots
                    && !roots.iter().any(|root| target.starts_with(root))
                {
                    return Err(DataError::OutsideRoots(path));
                }
                let meta = fs::metadata(&target).map_err(|e| io_error(&path, e))?;
                if meta.is_dir() {
                    continue;
                }
                meta
            } else if kind.is_dir() {
                self.visit(&path, depth + 1)?;
                continue;
            } else {
                entry.metadata().map_err(|e| io_error(&path, e))?
            };
            if !meta.is_file() {
                return Err(DataError::NotRegular(path));
            }
            self.found.bytes = self.found.bytes.saturating_add(meta.len());
            if self.found.bytes > MAX_DATA_BYTES {
                return Err(DataError::TooLarge {
                    path: self.top.to_path_buf(),
                    limit: MAX_DATA_BYTES,
                });
            }
            self.found.files.push(path);
        }
        Ok(())
    }
}

/// Reads a regular file of at most `budget` bytes. The file type is looked up
/// before opening, so a FIFO or a device is refused without being opened (which
/// could block); the file is then opened non-blocking and checked again, and
/// read no further than the budget (files in `/proc` claim a length of 0).
fn read_regular(path: &Path, budget: u64, expected: &str) -> Result<Vec<u8>, DataError> {
    use std::io::Read;
    let meta = fs::metadata(path).map_err(|e| read_error(path, e, expected))?;
    if !meta.is_file() {
        return Err(DataError::NotRegular(path.to_path_buf()));
    }
    let too_large = || DataError::TooLarge {
        path: path.to_path_buf(),
        limit: MAX_DATA_BYTES,
    };
    if meta.len() > budget {
        return Err(too_large());
    }
    let file = open_nonblocking(path).map_err(|e| read_error(path, e, expected))?;
    let opened = file.metadata().map_err(|e| io_error(path, e))?;
    if !opened.is_file() {
        return Err(DataError::NotRegular(path.to_path_buf()));
    }
    let mut bytes = Vec::with_capacity(opened.len().min(budget) as usize);
    file.take(budget.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    if bytes.len() as u64 > budget {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Opens `path` for reading with `O_NONBLOCK` where the platform has it, so
/// that even a file swapped for a FIFO after its type was checked cannot block
/// the open. (Reads of regular files ignore the flag.)
fn open_nonblocking(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(O_NONBLOCK);
    }
    options.open(path)
}

/// `O_NONBLOCK` of `<fcntl.h>` (no `libc` dependency for one constant); 0 where
/// unknown, leaving the file-type check before opening as the only guard.
#[cfg(unix)]
const O_NONBLOCK: i32 = if cfg!(any(target_os = "linux", target_os = "android")) {
    if cfg!(any(target_arch = "mips", target_arch = "mips64")) {
        0x80
    } else if cfg!(any(target_arch = "sparc", target_arch = "sparc64")) {
        0x4000
    } else {
        0o4000
    }
} else if cfg!(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
)) {
    0x0004
} else {
    0
};

// ---------------------------------------------------------------------------
// Confinement to data roots
// ---------------------------------------------------------------------------

/// Why [`confine`] refused a data source. Its message names only the path as
/// given and, unless the data lies under the roots and is merely too large,
/// says the same thing whatever the reason (missing, outside the roots, not a
/// regular file, unreadable), so a refusal reveals nothing about the file
/// system. [`Refused::reason`] has the details, for the server's log.
#[derive(Debug)]
pub struct Refused {
    shown: PathBuf,
    reason: String,
    /// The data is under the roots and the reason may be shown (a size limit).
    public: bool,
}

impl Refused {
    /// Why, with resolved paths: for logs, never for the requester.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.public {
            write!(f, "data path '{}' {}", self.shown.display(), self.reason)
        } else {
            write!(
                f,
                "data path '{}' is not a readable data file or folder under the server's data roots",
                self.shown.display()
            )
        }
    }
}

impl std::error::Error for Refused {}

/// Keeps a data source under `roots` (canonical folders): resolves its path
/// (relative paths are taken relative to the first root; links are followed),
/// requires the result to lie under one of the roots and to be what the source
/// reads (a regular file, or a folder of regular files and folders whose links
/// also resolve under the roots, for text; a folder with regular `train.bin`
/// and `val.bin` for nanoGPT; a regular tokenizer file of at most
/// [`MAX_TOKENIZER_BYTES`] for tokenized text), within [`MAX_DATA_BYTES`] and
/// [`MAX_DATA_FILES`]. Nothing is opened: file types come from metadata.
///
/// Returns the source with its path resolved (so it means the same file
/// whatever the reader's working folder); the built-in corpus passes as it is.
/// No roots: every file source is refused.
pub fn confine(source: &DataSource, roots: &[PathBuf]) -> Result<DataSource, Refused> {
    let given = match source {
        DataSource::Builtin { .. } => return Ok(source.clone()),
        DataSource::Text { path, .. } => path,
        DataSource::NanoGpt { dir, .. } => dir,
    };
    let hidden = |reason: String| Refused {
        shown: given.clone(),
        reason,
        public: false,
    };
    let refuse = |e: DataError| match e {
        DataError::TooLarge { limit, .. } => Refused {
            shown: given.clone(),
            reason: format!(
                "holds more than {} GiB of data, the most one run reads",
                limit >> 30
            ),
            public: true,
        },
        DataError::TooManyFiles(_) => Refused {
            shown: given.clone(),
            reason: format!(
                "holds more than {MAX_DATA_FILES} files and folders, or nests them deeper than {MAX_DATA_DEPTH}"
            ),
            public: true,
        },
        other => hidden(other.to_string()),
    };
    let Some(first) = roots.first() else {
        return Err(hidden("the server has no data roots".into()));
    };
    // `join` keeps an absolute path as it is.
    let resolved = under_roots(&first.join(given), roots).map_err(refuse)?;
    let meta = fs::metadata(&resolved).map_err(|e| refuse(io_error(&resolved, e)))?;
    match source {
        DataSource::Builtin { .. } => Ok(source.clone()),
        DataSource::Text { tokenizer, .. } => {
            let bytes = if meta.is_dir() {
                text_files(&resolved, Some(roots)).map_err(refuse)?.bytes
            } else if meta.is_file() {
                meta.len()
            } else {
                return Err(refuse(DataError::NotRegular(resolved)));
            };
            if bytes > MAX_DATA_BYTES {
                return Err(refuse(DataError::TooLarge {
                    path: resolved,
                    limit: MAX_DATA_BYTES,
                }));
            }
            let tokenizer = tokenizer
                .as_ref()
                .map(|given| confine_tokenizer(given, first, roots))
                .transpose()?;
            Ok(DataSource::Text {
                path: resolved,
                tokenizer,
            })
        }
        DataSource::NanoGpt { vocab, .. } => {
            if !meta.is_dir() {
                return Err(hidden(format!("{} is not a folder", resolved.display())));
            }
            let mut bytes = 0u64;
            for name in ["train.bin", "val.bin"] {
                let file = under_roots(&resolved.join(name), roots).map_err(refuse)?;
                let meta = fs::metadata(&file).map_err(|e| refuse(io_error(&file, e)))?;
                if !meta.is_file() {
                    return Err(refuse(DataError::NotRegular(file)));
                }
                bytes = bytes.saturating_add(meta.len());
            }
            if bytes > MAX_DATA_BYTES {
                return Err(refuse(DataError::TooLarge {
                    path: resolved,
                    limit: MAX_DATA_BYTES,
                }));
            }
            Ok(DataSource::NanoGpt {
                dir: resolved,
                vocab: *vocab,
            })
        }
    }
}

/// A tokenizer file resolved under the roots: a regular file of at most
/// [`MAX_TOKENIZER_BYTES`].
fn confine_tokenizer(given: &Path, first: &Path, roots: &[PathBuf]) -> Result<PathBuf, Refused> {
    let refused = |reason: String, public: bool| Refused {
        shown: given.to_path_buf(),
        reason,
        public,
    };
    let resolved =
        under_roots(&first.join(given), roots).map_err(|e| refused(e.to_string(), false))?;
    let meta = fs::metadata(&resolved).map_err(|e| refused(e.to_string(), false))?;
    if !meta.is_file() {
        return Err(refused(DataError::NotRegular(resolved).to_string(), false));
    }
    if meta.len() > MAX_TOKENIZER_BYTES {
        return Err(refused(
            format!(
                "is larger than {} MiB, the largest tokenizer.json read",
                MAX_TOKENIZER_BYTES >> 20
            ),
            true,
        ));
    }
    Ok(resolved)
}

/// `path` with every link resolved, if that lies under one of `roots`.
fn under_roots(path: &Path, roots: &[PathBuf]) -> Result<PathBuf, DataError> {
    let resolved = fs::canonicalize(path).map_err(|e| io_error(path, e))?;
    if roots.iter().any(|root| resolved.starts_with(root)) {
        Ok(resolved)
    } else {
        Err(DataError::OutsideRoots(resolved))
    }
}

fn read_error(path: &Path, error: io::Error, expected: &str) -> DataError {
    if error.kind() == io::ErrorKind::NotFound {
        DataError::NotFound {
            path: path.to_path_buf(),
            expected: expected.to_string(),
        }
    } else {
        io_error(path, error)
    }
}

fn io_error(path: &Path, source: io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------

/// Hash of a word sequence, built on the SplitMix64 finaliser: each word is
/// absorbed into the state through `mix64`, so order matters and keys collide
/// only by chance. Seeds every document, window and table row.
fn hash(words: &[u64]) -> u64 {
    // Adding the golden-ratio increment between words (SplitMix's Weyl step)
    // keeps zero words from leaving the state unchanged.
    words.iter().fold(0x243F_6A88_85A3_08D3, |h, &w| {
        mix64(h.wrapping_add(0x9E37_79B9_7F4A_7C15) ^ w)
    })
}

/// Domain tags keep the hash streams of different uses apart.
const fn tag(name: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*name)
}
const TAG_TRAIN: u64 = tag(b"train\0\0\0");
const TAG_VAL: u64 = tag(b"val\0\0\0\0\0");
const TAG_WINDOW: u64 = tag(b"window\0\0");
const TAG_RANKS: u64 = tag(b"ranks\0\0\0");
const TAG_FOLLOW: u64 = tag(b"follow\0\0");
const TAG_ORDER: [u64; 3] = [tag(b"order1\0\0"), tag(b"order2\0\0"), tag(b"order3\0\0")];
const TAG_TOPIC: u64 = tag(b"topic\0\0\0");

// ---------------------------------------------------------------------------
// The built-in corpus
// ---------------------------------------------------------------------------

/// Mixture weights of the order-1, -2 and -3 tables.
const ORDER_WEIGHTS: [f64; 3] = [0.35, 0.30, 0.25];
/// Mixture weight of the topic unigram.
const TOPIC_WEIGHT: f64 = 0.07;
/// Mixture weight of `COPY`.
const COPY_WEIGHT: f64 = 0.03;
/// Support sizes of the order-1, -2 and -3 rows.
const ORDER_SUPPORT: [usize; 3] = [12, 6, 3];
/// Support size of a topic unigram.
const TOPIC_SUPPORT: usize = 32;
/// Plausible followers per token, the pool every order's row draws from.
/// At most 32, so a row's taken pool positions fit a `u32` mask.
const FOLLOWERS: usize = 24;
/// Zipf exponent of row weights: `(rank + 1)^-ROW_ZIPF`.
const ROW_ZIPF: f64 = 1.2;
/// Zipf exponent of global token frequency (as in natural language).
const FREQUENCY_ZIPF: f64 = 1.0;
/// Zipf exponent with which rows pick from a token's followers.
const FOLLOWER_ZIPF: f64 = 1.0;
/// Zipf exponent of topic frequencies.
const TOPIC_ZIPF: f64 = 1.0;
/// Vocab ids per topic: `K = V / VOCAB_PER_TOPIC`.
const VOCAB_PER_TOPIC: usize = 16;
/// Tokens copied after each `COPY`.
const COPY_LEN: usize = 6;

/// The built-in corpus's parameters and the small tables derived from them
/// (the follower pools, `vocab * 24` ids, are the largest: 6 MiB at vocab
/// 65536, built in about 0.1 s).
struct Builtin {
    seed: u64,
    vocab: usize,
    topics: usize,
    copy: u32,
    /// Cumulative topic probabilities.
    topic_cdf: Vec<f64>,
    /// `vocab` rows of `followers` ids: the pool after each token.
    follower_pool: Vec<u32>,
    followers: usize,
    /// Pool positions, each repeated in proportion to its Zipf(FOLLOWER_ZIPF)
    /// weight (at least once), so a row draws a position with one random
    /// number instead of a search: row construction dominates generation time.
    follower_picks: Vec<u8>,
    /// Normalised rank weights for the order-1, -2, -3 rows.
    order_weights: [Vec<f64>; 3],
    /// Normalised rank weights for topic unigrams.
    topic_weights: Vec<f64>,
}

/// Normalised Zipf weights `(rank + 1)^-exponent` for ranks `0..size`.
fn zipf(size: usize, exponent: f64) -> Vec<f64> {
    let raw: Vec<f64> = (1..=size).map(|r| (r as f64).powf(-exponent)).collect();
    let total: f64 = raw.iter().sum();
    raw.into_iter().map(|w| w / total).collect()
}

/// Cumulative sums of `weights`.
fn cumulative(mut weights: Vec<f64>) -> Vec<f64> {
    let mut acc = 0.0;
    for w in &mut weights {
        acc += *w;
        *w = acc;
    }
    weights
}

/// Draws an index from a cumulative distribution.
fn draw(cdf: &[f64], rng: &mut SplitMix64) -> usize {
    let u = rng.next_f64();
    // Rounding can leave the last cumulative value a hair below 1.
    cdf.partition_point(|&c| c <= u).min(cdf.len() - 1)
}

/// Indices `0..weights.len()` (at most 256), each repeated about
/// `1024 * weight` times and at least once, so every index stays reachable.
fn proportional_picks(weights: &[f64]) -> Vec<u8> {
    weights
        .iter()
        .enumerate()
        .flat_map(|(i, &w)| std::iter::repeat_n(i as u8, ((w * 1024.0).round() as usize).max(1)))
        .collect()
}

/// Fills `out` with `size` distinct values of `pick`, in the order first
/// drawn. `pick` must be able to produce at least `size` distinct values.
fn draw_distinct(size: usize, out: &mut Vec<u32>, mut pick: impl FnMut() -> u32) {
    out.clear();
    while out.len() < size {
        let id = pick();
        if !out.contains(&id) {
            out.push(id);
        }
    }
}

impl Builtin {
    fn new(seed: u64, vocab: usize) -> Result<Builtin, DataError> {
        if !(BUILTIN_MIN_VOCAB..=BUILTIN_MAX_VOCAB).contains(&vocab) {
            return Err(DataError::BuiltinVocab(vocab));
        }
        let topics = vocab / VOCAB_PER_TOPIC;
        // Rows never hold COPY, so at most `vocab - 1` ids fit (matters at vocab 16).
        let ids = vocab - 1;
        // Which id gets which frequency rank: a seeded Fisher-Yates shuffle,
        // so frequent tokens are not simply the small ids (the topics).
        let mut by_frequency: Vec<u32> = (0..ids as u32).collect();
        let mut rng = SplitMix64::new(hash(&[seed, TAG_RANKS]));
        for i in (1..ids).rev() {
            by_frequency.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let frequency_cdf = cumulative(zipf(ids, FREQUENCY_ZIPF));
        let followers = FOLLOWERS.min(ids);
        let mut follower_pool = Vec::with_capacity(vocab * followers);
        let mut pool = Vec::with_capacity(followers);
        for token in 0..vocab as u64 {
            let mut rng = SplitMix64::new(hash(&[seed, TAG_FOLLOW, token]));
            draw_distinct(followers, &mut pool, || {
                by_frequency[draw(&frequency_cdf, &mut rng)]
            });
            follower_pool.extend_from_slice(&pool);
        }
        Ok(Builtin {
            seed,
            vocab,
            topics,
            copy: ids as u32,
            topic_cdf: cumulative(zipf(topics, TOPIC_ZIPF)),
            follower_pool,
            followers,
            follower_picks: proportional_picks(&zipf(followers, FOLLOWER_ZIPF)),
            order_weights: ORDER_SUPPORT.map(|s| zipf(s.min(followers), ROW_ZIPF)),
            topic_weights: zipf(TOPIC_SUPPORT.min(ids), ROW_ZIPF),
        })
    }

    fn train_seed(&self, run_seed: u64, step: u64, row: u64) -> u64 {
        hash(&[self.seed, TAG_TRAIN, run_seed, step, row])
    }

    fn val_seed(&self, index: u64) -> u64 {
        hash(&[self.seed, TAG_VAL, index])
    }

    fn sample_topic(&self, rng: &mut SplitMix64) -> u32 {
        draw(&self.topic_cdf, rng) as u32
    }

    /// The support of the order-k row with hash `key` after token `previous`:
    /// `size` distinct ids from the follower pool of `previous`, in rank order.
    fn row_support(&self, key: u64, previous: u32, size: usize, out: &mut Vec<u32>) {
        let start = previous as usize * self.followers;
        let pool = &self.follower_pool[start..start + self.followers];
        let mut rng = SplitMix64::new(key);
        let picks = &self.follower_picks;
        // A position already taken passes to the next free one (wrapping
        // around), found with bit operations: each pick costs one random number
        // and no loop, where rejecting repeats of the frequent positions would
        // cost several.
        let mut free = u32::MAX >> (32 - self.followers);
        out.clear();
        for _ in 0..size {
            let position = u32::from(picks[rng.below(picks.len() as u64) as usize]);
            let at_or_after = free & (u32::MAX << position);
            let chosen = if at_or_after != 0 { at_or_after } else { free }.trailing_zeros();
            free &= !(1 << chosen);
            out.push(pool[chosen as usize]);
        }
    }

    /// The support of a topic unigram: `size` distinct ids other than `COPY`,
    /// uniform over the vocab (topic words are globally rare, locally common).
    fn topic_support(&self, topic: u32, size: usize, out: &mut Vec<u32>) {
        let mut rng = SplitMix64::new(hash(&[self.seed, TAG_TOPIC, u64::from(topic)]));
        let ids = (self.vocab - 1) as u64;
        draw_distinct(size, out, || rng.below(ids) as u32);
    }
}

/// What comes next in a document.
#[derive(Clone, Copy)]
enum Next {
    /// Inside a copy: this token, with probability 1.
    Forced(u32),
    /// Drawn from the mixture in [`Document::entries`].
    Mixture,
}

/// One document being generated or scored: the tokens so far plus the state
/// the oracle derives from them. Buffers are reused across documents, so
/// generation allocates nothing per token.
struct Document<'a> {
    corpus: &'a Builtin,
    tokens: Vec<u32>,
    /// The topic unigram's support, fixed for the whole document.
    topic_support: Vec<u32>,
    /// Scratch for one row's support.
    support: Vec<u32>,
    /// The next-token mixture as (token, probability) pairs; a token may
    /// appear more than once (once per component), its probability is the sum.
    entries: Vec<(u32, f64)>,
    /// Tokens still to copy, and the position to copy the next one from.
    copy_left: usize,
    copy_from: usize,
}

impl<'a> Document<'a> {
    fn new(corpus: &'a Builtin) -> Self {
        Document {
            corpus,
            tokens: Vec::new(),
            topic_support: Vec::with_capacity(TOPIC_SUPPORT),
            support: Vec::with_capacity(ORDER_SUPPORT[0]),
            entries: Vec::new(),
            copy_left: 0,
            copy_from: 0,
        }
    }

    /// Generates the document with this seed, `len` tokens long, into
    /// `self.tokens`; with `log_probs`, also appends `ln p` of each token after
    /// the topic.
    fn generate(&mut self, seed: u64, len: usize, mut log_probs: Option<&mut Vec<f64>>) {
        let mut rng = SplitMix64::new(seed);
        let topic = self.corpus.sample_topic(&mut rng);
        self.start(topic);
        while self.tokens.len() < len {
            let next = self.next();
            let token = match next {
                Next::Forced(token) => token,
                Next::Mixture => self.sample(&mut rng),
            };
            if let Some(log_probs) = log_probs.as_deref_mut() {
                log_probs.push(self.probability(next, token).ln());
            }
            self.push(token);
        }
    }

    fn start(&mut self, topic: u32) {
        let c = self.corpus;
        self.tokens.clear();
        self.tokens.push(topic);
        c.topic_support(topic, c.topic_weights.len(), &mut self.topic_support);
        self.copy_left = 0;
        self.copy_from = 0;
    }

    /// The distribution of the next token; for [`Next::Mixture`] it fills
    /// `self.entries`.
    fn next(&mut self) -> Next {
        if self.copy_left > 0 {
            return Next::Forced(self.tokens[self.copy_from]);
        }
        let c = self.corpus;
        let t = self.tokens.len();
        let x = &self.tokens;
        // Order k needs k earlier tokens; COPY needs x_1..x_C to exist so that
        // its fallback source lies wholly before it.
        let orders = t.min(3);
        let copy_allowed = t > COPY_LEN;
        let total = ORDER_WEIGHTS[..orders].iter().sum::<f64>()
            + TOPIC_WEIGHT
            + if copy_allowed { COPY_WEIGHT } else { 0.0 };
        self.entries.clear();
        let components = ORDER_WEIGHTS.iter().zip(&c.order_weights).enumerate();
        for (k, (&weight, weights)) in components.take(orders) {
            // Order 1 conditions on (topic, previous token); orders 2 and 3 on
            // the previous 2 or 3 tokens alone.
            let key = match k {
                0 => hash(&[c.seed, TAG_ORDER[0], u64::from(x[0]), u64::from(x[t - 1])]),
                1 => hash(&[
                    c.seed,
                    TAG_ORDER[1],
                    u64::from(x[t - 2]),
                    u64::from(x[t - 1]),
                ]),
                _ => hash(&[
                    c.seed,
                    TAG_ORDER[2],
                    u64::from(x[t - 3]),
                    u64::from(x[t - 2]),
                    u64::from(x[t - 1]),
                ]),
            };
            c.row_support(key, x[t - 1], weights.len(), &mut self.support);
            let scale = weight / total;
            self.entries.extend(
                self.support
                    .iter()
                    .zip(weights)
                    .map(|(&id, &w)| (id, scale * w)),
            );
        }
        let scale = TOPIC_WEIGHT / total;
        self.entries.extend(
            self.topic_support
                .iter()
                .zip(&c.topic_weights)
                .map(|(&id, &w)| (id, scale * w)),
        );
        if copy_allowed {
            self.entries.push((c.copy, COPY_WEIGHT / total));
        }
        Next::Mixture
    }

    fn sample(&self, rng: &mut SplitMix64) -> u32 {
        let u = rng.next_f64();
        let mut acc = 0.0;
        for &(token, p) in &self.entries {
            acc += p;
            if u < acc {
                return token;
            }
        }
        // Rounding can leave the total a hair below u.
        self.entries.last().map_or(0, |&(token, _)| token)
    }

    fn probability(&self, next: Next, token: u32) -> f64 {
        match next {
            Next::Forced(forced) => {
                if forced == token {
                    1.0
                } else {
                    0.0
                }
            }
            Next::Mixture => self
                .entries
                .iter()
                .filter(|&&(t, _)| t == token)
                .map(|&(_, p)| p)
                .sum(),
        }
    }

    /// Appends `token` and advances the copy state.
    fn push(&mut self, token: u32) {
        let j = self.tokens.len();
        if self.copy_left > 0 {
            self.copy_left -= 1;
            self.copy_from += 1;
        } else if token == self.corpus.copy {
            let a = self.tokens[j - 1];
            self.copy_from = self.tokens[..j - 1]
                .iter()
                .rposition(|&t| t == a)
                .map_or(1, |p| p + 1);
            self.copy_left = COPY_LEN;
        }
        self.tokens.push(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte-level text at `path`.
    fn text_at(path: impl Into<PathBuf>) -> DataSource {
        DataSource::Text {
            path: path.into(),
            tokenizer: None,
        }
    }

    const T: usize = 128;

    fn builtin(seed: u64, vocab: usize, context: usize) -> Corpus {
        Corpus::open(&DataSource::Builtin { seed, vocab }, context).unwrap()
    }

    /// Empirical entropy (nats) of the token frequencies in `tokens`.
    fn unigram_entropy(tokens: impl Iterator<Item = u32>, vocab: usize) -> f64 {
        let mut counts = vec![0usize; vocab];
        let mut n = 0;
        for t in tokens {
            counts[t as usize] += 1;
            n += 1;
        }
        counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / n as f64;
                -p * p.ln()
            })
            .sum()
    }

    /// Prediction targets (positions 1..=T) of row-major windows.
    fn targets(tokens: &[u32], window: usize) -> impl Iterator<Item = u32> + '_ {
        tokens
            .chunks(window)
            .flat_map(|row| row[1..].iter().copied())
    }

    #[test]
    fn builtin_is_deterministic() {
        let a = builtin(7, 256, 32);
        let b = builtin(7, 256, 32);
        let batch = a.train_batch(3, 10, 4);
        assert_eq!(batch.len(), 4 * 33);
        assert_eq!(batch, b.train_batch(3, 10, 4));
        assert_ne!(batch, a.train_batch(3, 11, 4));
        assert_ne!(batch, a.train_batch(4, 10, 4));
        assert_ne!(batch, builtin(8, 256, 32).train_batch(3, 10, 4));
        // Rows do not depend on the batch size.
        assert_eq!(&a.train_batch(3, 10, 8)[..4 * 33], &batch[..]);
    }

    #[test]
    fn builtin_validation_is_fixed_and_disjoint_from_training() {
        let c = builtin(1, 256, 32);
        let (val, rows) = c.validation_set(16);
        assert_eq!((val.len(), rows), (16 * 33, 16));
        assert_eq!(builtin(1, 256, 32).validation_set(16).0, val);
        // A prefix of a longer validation set.
        assert_eq!(&c.validation_set(32).0[..val.len()], &val[..]);
        let val_rows: Vec<&[u32]> = val.chunks(33).collect();
        for run_seed in 0..4 {
            for step in 0..8 {
                for row in c.train_batch(run_seed, step, 16).chunks(33) {
                    assert!(!val_rows.contains(&row));
                }
            }
        }
    }

    #[test]
    fn builtin_tokens_are_in_range() {
        for vocab in [16, 17, 256, 1000, 65536] {
            let c = builtin(0, vocab, 64);
            assert_eq!(c.vocab_size(), vocab);
            let tokens = c.train_batch(0, 0, 8);
            assert!(
                tokens.iter().all(|&t| (t as usize) < vocab),
                "vocab {vocab}"
            );
            let (val, _) = c.validation_set(8);
            assert!(val.iter().all(|&t| (t as usize) < vocab), "vocab {vocab}");
            // Token 0 of every document is a topic.
            assert!(val.chunks(65).all(|row| (row[0] as usize) < vocab / 16));
        }
    }

    #[test]
    fn entropy_floor_lies_between_zero_and_unigram_entropy() {
        let c = builtin(0, 256, T);
        let floor = c.entropy_floor(64).unwrap();
        let (val, _) = c.validation_set(64);
        let unigram = unigram_entropy(targets(&val, T + 1), 256);
        println!(
            "floor {:.4} ± {:.4} nats/token over {} tokens; unigram entropy {unigram:.4}",
            floor.nats_per_token, floor.standard_error, floor.tokens
        );
        assert_eq!(floor.tokens, 64 * T);
        // Measured: floor 2.1349 ± 0.0152, unigram entropy 4.6222.
        assert!(floor.nats_per_token > 1.8, "{floor:?}");
        assert!(
            floor.nats_per_token + 2.0 < unigram,
            "{floor:?} vs {unigram}"
        );
        assert!(floor.standard_error > 0.0 && floor.standard_error < 0.05);
        assert_eq!(c.entropy_floor(64), Some(floor));
    }

    #[test]
    fn bigram_model_scores_between_floor_and_unigram() {
        let c = builtin(0, 256, T);
        let window = T + 1;
        let mut counts = vec![0.0_f64; 256 * 256];
        let mut row_totals = vec![0.0_f64; 256];
        // 97 steps of 16 rows of 129 tokens: ~200k training tokens.
        for step in 0..97 {
            for row in c.train_batch(5, step, 16).chunks(window) {
                for pair in row.windows(2) {
                    counts[pair[0] as usize * 256 + pair[1] as usize] += 1.0;
                    row_totals[pair[0] as usize] += 1.0;
                }
            }
        }
        // Add-alpha smoothing keeps unseen pairs finite.
        let alpha = 0.05;
        let (val, _) = c.validation_set(64);
        let mut loss = 0.0;
        let mut n = 0;
        for row in val.chunks(window) {
            for pair in row.windows(2) {
                let (a, b) = (pair[0] as usize, pair[1] as usize);
                let p = (counts[a * 256 + b] + alpha) / (row_totals[a] + alpha * 256.0);
                loss -= p.ln();
                n += 1;
            }
        }
        let bigram = loss / n as f64;
        let floor = c.entropy_floor(64).unwrap().nats_per_token;
        let unigram = unigram_entropy(targets(&val, window), 256);
        println!("floor {floor:.4}, bigram {bigram:.4}, unigram {unigram:.4} nats/token");
        // Measured: floor 2.1349, bigram 3.1337, unigram 4.6222.
        assert!(bigram > floor + 0.7, "bigram {bigram} vs floor {floor}");
        assert!(
            bigram + 1.0 < unigram,
            "bigram {bigram} vs unigram {unigram}"
        );
    }

    #[test]
    fn copy_spans_are_verbatim() {
        let c = builtin(2, 256, T);
        let copy = 255;
        let (val, _) = c.validation_set(64);
        let (mut spans, mut found) = (0, 0);
        for row in val.chunks(T + 1) {
            let mut j = 1;
            while j < row.len() {
                if row[j] != copy {
                    j += 1;
                    continue;
                }
                let a = row[j - 1];
                let source = match row[..j - 1].iter().rposition(|&t| t == a) {
                    Some(p) => {
                        found += 1;
                        p + 1
                    }
                    None => 1,
                };
                for i in 0..COPY_LEN {
                    if j + 1 + i < row.len() {
                        assert_eq!(row[j + 1 + i], row[source + i]);
                    }
                }
                spans += 1;
                j += COPY_LEN + 1;
            }
        }
        println!("{spans} copy spans, {found} with an earlier occurrence");
        // Measured: 201 spans, 110 with an earlier occurrence.
        assert!(
            spans > 150 && found > spans / 3,
            "{spans} spans, {found} found"
        );
    }

    #[test]
    fn oracle_distribution_agrees_with_the_floor() {
        let c = builtin(3, 64, 40);
        let (val, rows) = c.validation_set(8);
        let mut loss = 0.0;
        for row in val.chunks(41) {
            for t in 1..row.len() {
                let probs = c.oracle_distribution(&row[..t]).unwrap();
                assert_eq!(probs.len(), 64);
                assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-9);
                loss -= probs[row[t] as usize].ln();
            }
        }
        let floor = c.entropy_floor(rows).unwrap();
        assert!((loss / (8 * 40) as f64 - floor.nats_per_token).abs() < 1e-9);
        assert_eq!(c.oracle_distribution(&[]), None);
        assert_eq!(c.oracle_distribution(&[4]), None); // topic >= 64 / 16
        assert_eq!(c.oracle_distribution(&[0, 64]), None);
    }

    /// A folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let path =
                std::env::temp_dir().join(format!("shapewise-data-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Deterministic ASCII text of `len` bytes.
    fn text(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = SplitMix64::new(seed);
        (0..len).map(|_| b'a' + rng.below(26) as u8).collect()
    }

    fn write_bin(path: &Path, tokens: &[u16]) {
        let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn text_file_corpus() {
        let dir = TempDir::new("text-file");
        let path = dir.0.join("a.txt");
        let content = text(5000, 1);
        fs::write(&path, &content).unwrap();
        let c = Corpus::open(&text_at(path.clone()), 16).unwrap();
        assert_eq!(c.vocab_size(), 256);
        assert_eq!(
            c.describe(),
            format!(
                "text {} (4500 train tokens, 500 val tokens)",
                path.display()
            )
        );
        assert!(c.entropy_floor(4).is_none());
        // 500 validation bytes hold 29 windows of 17.
        let (val, rows) = c.validation_set(1000);
        assert_eq!(rows, 29);
        let expected: Vec<u32> = content[4500..4500 + 29 * 17]
            .iter()
            .map(|&b| u32::from(b))
            .collect();
        assert_eq!(val, expected);
        assert_eq!(c.validation_set(3).1, 3);
        // Training rows are windows of the training part only.
        let batch = c.train_batch(0, 0, 32);
        assert_eq!(batch, c.train_batch(0, 0, 32));
        assert_ne!(batch, c.train_batch(0, 1, 32));
        let train: Vec<u32> = content[..4500].iter().map(|&b| u32::from(b)).collect();
        for row in batch.chunks(17) {
            assert!(train.windows(17).any(|w| w == row));
        }
    }

    #[test]
    fn text_folder_corpus() {
        let dir = TempDir::new("text-folder");
        fs::create_dir(dir.0.join("sub")).unwrap();
        fs::write(dir.0.join("b.txt"), text(3000, 2)).unwrap();
        fs::write(dir.0.join("sub").join("c.txt"), "héllo").unwrap();
        fs::write(dir.0.join("a.txt"), text(2000, 3)).unwrap();
        fs::write(dir.0.join(".hidden"), [0xFFu8; 10]).unwrap();
        let c = Corpus::open(&text_at(dir.0.clone()), 16).unwrap();
        // a.txt, b.txt, sub/c.txt (6 bytes) joined by 2 newlines: 5008 bytes.
        assert!(
            c.describe()
                .ends_with("(4508 train tokens, 500 val tokens)")
        );
        let mut joined = text(2000, 3);
        joined.push(b'\n');
        joined.extend(text(3000, 2));
        joined.push(b'\n');
        joined.extend("héllo".bytes());
        let (val, rows) = c.validation_set(1);
        assert_eq!(rows, 1);
        assert!(
            val.iter()
                .zip(&joined[4508..])
                .all(|(&v, &b)| v == u32::from(b))
        );
    }

    #[test]
    fn text_errors() {
        let dir = TempDir::new("text-errors");
        let empty = dir.0.join("empty");
        fs::create_dir_all(empty.join(".git")).unwrap();
        fs::write(empty.join(".gitignore"), "x").unwrap();
        let err = Corpus::open(&text_at(empty.clone()), 8).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no text files in folder {}", empty.display())
        );

        let bad = dir.0.join("bad.txt");
        fs::write(&bad, b"abc\xFFdef").unwrap();
        let err = Corpus::open(&text_at(bad.clone()), 8).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} is not valid UTF-8 (byte 3)", bad.display())
        );

        let missing = dir.0.join("missing.txt");
        let err = Corpus::open(&text_at(missing), 8).unwrap_err();
        assert!(matches!(err, DataError::NotFound { .. }), "{err}");
        assert!(err.to_string().starts_with("data file not found: "));

        // 100 bytes hold 10 validation bytes, too few for a window of 17.
        let small = dir.0.join("small.txt");
        fs::write(&small, text(100, 4)).unwrap();
        let err = Corpus::open(&text_at(small.clone()), 16).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "{} has too few tokens for one validation sequence of 17 tokens",
                small.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn nanogpt_corpus() {
        let dir = TempDir::new("nanogpt");
        let train: Vec<u16> = (0..3000).map(|i| (i * 7 % 1000) as u16).collect();
        let val: Vec<u16> = (0..100).map(|i| (i * 13 % 1000) as u16).collect();
        write_bin(&dir.0.join("train.bin"), &train);
        write_bin(&dir.0.join("val.bin"), &val);
        let source = DataSource::NanoGpt {
            dir: dir.0.clone(),
            vocab: 1000,
        };
        let c = Corpus::open(&source, 9).unwrap();
        assert_eq!(c.vocab_size(), 1000);
        assert_eq!(
            c.describe(),
            format!(
                "nanogpt {} (vocab 1000, 3000 train tokens, 100 val tokens)",
                dir.0.display()
            )
        );
        let (tokens, rows) = c.validation_set(100);
        assert_eq!(rows, 10);
        assert!(tokens.iter().zip(&val).all(|(&a, &b)| a == u32::from(b)));
        let batch = c.train_batch(1, 2, 5);
        assert_eq!(batch.len(), 50);
        assert!(batch.iter().all(|&t| t < 1000));

        // Vocab mismatch names the token and the file.
        let err = Corpus::open(
            &DataSource::NanoGpt {
                dir: dir.0.clone(),
                vocab: 256,
            },
            9,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "token 259 in {} is >= vocab 256: pass the vocab size the data was tokenized with",
                dir.0.join("train.bin").display()
            )
        );
        assert!(matches!(
            Corpus::open(
                &DataSource::NanoGpt {
                    dir: dir.0.clone(),
                    vocab: 70000
                },
                9
            ),
            Err(DataError::NanoGptVocab(70000))
        ));

        // Too few validation tokens for the context.
        let err = Corpus::open(&source, 100).unwrap_err();
        assert!(matches!(
            err,
            DataError::TooFewValidation {
                needed: 101,
                have: 100,
                ..
            }
        ));

        // Odd length.
        fs::write(dir.0.join("val.bin"), [1u8, 0, 2]).unwrap();
        let err = Corpus::open(&source, 9).unwrap_err();
        assert!(
            matches!(err, DataError::OddLength { bytes: 3, .. }),
            "{err}"
        );

        // Missing file.
        fs::remove_file(dir.0.join("val.bin")).unwrap();
        let err = Corpus::open(&source, 9).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "data file not found: {} (expected nanoGPT train.bin and val.bin in {})",
                dir.0.join("val.bin").display(),
                dir.0.display()
            )
        );
    }

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn readers_refuse_what_is_not_a_regular_file_without_opening_it() {
        let dir = TempDir::new("not-regular");
        let fifo = dir.0.join("pipe.txt");
        mkfifo(&fifo);
        // Opening a FIFO for reading would block until a writer comes: this must return.
        let err = Corpus::open(&text_at(fifo.clone()), 8).unwrap_err();
        assert!(
            matches!(err, DataError::NotRegular(ref p) if *p == fifo),
            "{err}"
        );
        let err = Corpus::open(&text_at("/dev/zero"), 8).unwrap_err();
        assert!(matches!(err, DataError::NotRegular(_)), "{err}");
        // A FIFO inside a text folder, and a FIFO as a nanoGPT file.
        fs::write(dir.0.join("a.txt"), text(1000, 1)).unwrap();
        let err = Corpus::open(&text_at(dir.0.clone()), 8).unwrap_err();
        assert!(matches!(err, DataError::NotRegular(_)), "{err}");
        let nano = dir.0.join("nano");
        fs::create_dir(&nano).unwrap();
        write_bin(&nano.join("train.bin"), &[1; 100]);
        mkfifo(&nano.join("val.bin"));
        let err = Corpus::open(
            &DataSource::NanoGpt {
                dir: nano,
                vocab: 4,
            },
            8,
        )
        .unwrap_err();
        assert!(matches!(err, DataError::NotRegular(_)), "{err}");
    }

    #[test]
    fn reads_stop_at_the_budget() {
        let dir = TempDir::new("budget");
        let path = dir.0.join("a.txt");
        fs::write(&path, text(1000, 1)).unwrap();
        assert_eq!(read_regular(&path, 1000, "").unwrap().len(), 1000);
        let err = read_regular(&path, 999, "").unwrap_err();
        assert!(matches!(err, DataError::TooLarge { .. }), "{err}");
        // /proc files claim a length of 0 but are read up to the budget only.
        let environ = Path::new("/proc/self/environ");
        if environ.exists() {
            assert!(read_regular(environ, 1 << 20, "").is_ok());
        }
    }

    #[test]
    fn text_folders_have_a_bounded_number_of_entries() {
        let dir = TempDir::new("many");
        let mut path = dir.0.clone();
        for _ in 0..=MAX_DATA_DEPTH {
            path = path.join("d");
        }
        fs::create_dir_all(&path).unwrap();
        fs::write(path.join("a.txt"), "x").unwrap();
        let err = text_files(&dir.0, None).unwrap_err();
        assert!(matches!(err, DataError::TooManyFiles(_)), "{err}");
    }

    /// `tests/data/`, where the committed corpus and tokenizer live.
    fn test_data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name)
    }

    /// All tokens of a file corpus, training part then validation part.
    fn all_tokens(c: &Corpus) -> Vec<u32> {
        let Source::Stored(s) = &c.source else {
            panic!("not a file corpus")
        };
        let mut out = Vec::new();
        s.train.extend_into(0..s.train.len(), &mut out);
        s.val.extend_into(0..s.val.len(), &mut out);
        out
    }

    #[test]
    fn tokenized_text_matches_the_python_tokenizers_library() {
        let source = DataSource::Text {
            path: test_data("corpus.txt"),
            tokenizer: Some(test_data("tokenizer.json")),
        };
        let c = Corpus::open(&source, 16).unwrap();
        // What `tokenizers` 0.23.3 in Python gives (tests/data/README.md).
        assert_eq!(c.vocab_size(), 320);
        let ids = all_tokens(&c);
        assert_eq!(ids.len(), 2296);
        assert_eq!(
            &ids[..12],
            &[33, 273, 288, 88, 89, 307, 315, 295, 259, 262, 77, 284]
        );
        assert_eq!(ids.iter().map(|&t| u64::from(t)).sum::<u64>(), 416_986);
        assert_eq!(c.decode(&ids[..12]).unwrap(), "A proxy model is a smal");
        assert!(
            c.describe()
                .contains("vocab 320, 2067 train tokens, 229 val tokens")
        );
        assert!(c.entropy_floor(4).is_none());
        assert!(c.train_batch(3, 1, 8).iter().all(|&t| t < 320));
        assert_eq!(tokenizer_vocab(&test_data("tokenizer.json")).unwrap(), 320);
    }

    #[test]
    fn tokenizers_encode_long_text_in_pieces_as_a_whole() {
        let (tokenizer, _) = TextTokenizer::load(&test_data("tokenizer.json")).unwrap();
        let sentences = fs::read_to_string(test_data("corpus.txt")).unwrap();
        let text = sentences.repeat(TOKENIZER_PIECE_BYTES * 5 / 2 / sentences.len());
        assert!(text.len() > 2 * TOKENIZER_PIECE_BYTES);
        let whole = tokenizer
            .tokenizer
            .encode_fast(text.as_str(), false)
            .unwrap();
        assert_eq!(tokenizer.encode(&text).unwrap(), whole.get_ids());
    }

    #[test]
    fn tokenizers_beyond_u16_ids_keep_every_id() {
        let dir = TempDir::new("wide-tokenizer");
        let tokenizer = dir.0.join("tokenizer.json");
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1, "b": 70000},
                      "unk_token": "[UNK]"}
        });
        fs::write(&tokenizer, json.to_string()).unwrap();
        let text = dir.0.join("a.txt");
        fs::write(&text, "a b c ".repeat(100)).unwrap();
        let c = Corpus::open(
            &DataSource::Text {
                path: text,
                tokenizer: Some(tokenizer),
            },
            8,
        )
        .unwrap();
        assert_eq!(c.vocab_size(), 70001);
        assert_eq!(&all_tokens(&c)[..6], &[1, 70000, 0, 1, 70000, 0]);
        assert!(c.train_batch(0, 0, 16).contains(&70000));
    }

    #[test]
    fn broken_tokenizers_are_named() {
        let dir = TempDir::new("bad-tokenizer");
        let tokenizer = dir.0.join("tokenizer.json");
        fs::write(&tokenizer, r#"{"model": {"type": "BPE", "vocab": 3}}"#).unwrap();
        let source = DataSource::Text {
            path: test_data("corpus.txt"),
            tokenizer: Some(tokenizer.clone()),
        };
        let err = Corpus::open(&source, 8).unwrap_err().to_string();
        let expected = format!(
            "{} is not a usable Hugging Face tokenizer.json: ",
            tokenizer.display()
        );
        assert!(err.starts_with(&expected), "{err}");
        let missing = DataSource::Text {
            path: test_data("corpus.txt"),
            tokenizer: Some(dir.0.join("missing.json")),
        };
        let err = Corpus::open(&missing, 8).unwrap_err().to_string();
        assert!(
            err.contains("missing.json") && err.contains("tokenizer.json"),
            "{err}"
        );
    }

    #[test]
    fn confinement_keeps_sources_under_the_roots() {
        let dir = TempDir::new("confine");
        let root = fs::canonicalize(&dir.0).unwrap().join("root");
        let outside = fs::canonicalize(&dir.0).unwrap().join("outside");
        fs::create_dir_all(root.join("folder")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(root.join("a.txt"), text(1000, 1)).unwrap();
        fs::write(root.join("folder").join("b.txt"), text(1000, 2)).unwrap();
        fs::write(outside.join("secret.txt"), text(1000, 3)).unwrap();
        write_bin(&outside.join("train.bin"), &[1; 100]);
        write_bin(&outside.join("val.bin"), &[1; 100]);
        let roots = vec![root.clone()];

        let builtin = DataSource::Builtin { seed: 1, vocab: 64 };
        assert_eq!(confine(&builtin, &[]).unwrap(), builtin);
        assert_eq!(
            confine(&text_at("a.txt"), &roots).unwrap(),
            text_at(root.join("a.txt"))
        );
        assert_eq!(
            confine(&text_at("folder"), &roots).unwrap(),
            text_at(root.join("folder"))
        );
        fs::write(root.join("tokenizer.json"), "{}").unwrap();
        let tokenized = |tokenizer: &str| DataSource::Text {
            path: "a.txt".into(),
            tokenizer: Some(tokenizer.into()),
        };
        assert_eq!(
            confine(&tokenized("tokenizer.json"), &roots).unwrap(),
            DataSource::Text {
                path: root.join("a.txt"),
                tokenizer: Some(root.join("tokenizer.json")),
            }
        );
        for outside_or_odd in ["../outside/secret.txt", "folder", "missing.json"] {
            let refused = confine(&tokenized(outside_or_odd), &roots).unwrap_err();
            assert_eq!(
                refused.to_string(),
                format!(
                    "data path '{outside_or_odd}' is not a readable data file or folder under the server's data roots"
                )
            );
        }

        std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("link.txt")).unwrap();
        mkfifo(&root.join("pipe"));
        let secret = outside.join("secret.txt").display().to_string();
        for given in [
            "../outside/secret.txt",
            secret.as_str(),
            "link.txt",
            "pipe",
            "missing.txt",
            "/dev/zero",
            "/proc/self/environ",
        ] {
            let refused = confine(&text_at(given), &roots).unwrap_err();
            assert_eq!(
                refused.to_string(),
                format!(
                    "data path '{given}' is not a readable data file or folder under the server's data roots"
                )
            );
            assert!(!refused.reason().is_empty());
        }
        // No roots: no file data at all.
        assert!(confine(&text_at("a.txt"), &[]).is_err());
        // Links inside a folder must stay under the roots too.
        std::os::unix::fs::symlink(
            outside.join("secret.txt"),
            root.join("folder").join("c.txt"),
        )
        .unwrap();
        assert!(confine(&text_at("folder"), &roots).is_err());
        // nanoGPT: the folder and both files.
        let nano = |dir: &Path| DataSource::NanoGpt {
            dir: dir.to_path_buf(),
            vocab: 4,
        };
        assert!(confine(&nano(&outside), &roots).is_err());
        fs::create_dir(root.join("nano")).unwrap();
        write_bin(&root.join("nano").join("train.bin"), &[1; 100]);
        std::os::unix::fs::symlink(outside.join("val.bin"), root.join("nano").join("val.bin"))
            .unwrap();
        assert!(confine(&nano(&root.join("nano")), &roots).is_err());
        fs::remove_file(root.join("nano").join("val.bin")).unwrap();
        write_bin(&root.join("nano").join("val.bin"), &[1; 100]);
        assert_eq!(
            confine(&nano(Path::new("nano")), &roots).unwrap(),
            nano(&root.join("nano"))
        );
    }

    #[test]
    fn parameter_errors() {
        let err = Corpus::open(&DataSource::Builtin { seed: 0, vocab: 3 }, 8).unwrap_err();
        assert_eq!(
            err.to_string(),
            "builtin vocab must be between 16 and 65536, got 3"
        );
        assert!(
            Corpus::open(
                &DataSource::Builtin {
                    seed: 0,
                    vocab: 65537
                },
                8
            )
            .is_err()
        );
        let err = Corpus::open(
            &DataSource::Builtin {
                seed: 0,
                vocab: 256,
            },
            0,
        )
        .unwrap_err();
        assert!(matches!(err, DataError::Context { got: 0 }));
        let c = builtin(0, 256, 8);
        assert_eq!(c.context(), 8);
        assert_eq!(c.describe(), "builtin(seed 0, vocab 256)");
        assert!(c.train_batch(0, 0, 0).is_empty());
        assert_eq!(c.validation_set(0), (Vec::new(), 0));
        assert_eq!(c.entropy_floor(0), None);
    }

    #[test]
    fn data_source_serialises_with_a_kind_tag() {
        let source = DataSource::Builtin {
            seed: 3,
            vocab: 256,
        };
        let json = serde_json::to_string(&source).unwrap();
        assert_eq!(json, r#"{"kind":"builtin","seed":3,"vocab":256}"#);
        let nano: DataSource =
            serde_json::from_str(r#"{"kind":"nano_gpt","dir":"/d","vocab":50304}"#).unwrap();
        assert_eq!(
            nano,
            DataSource::NanoGpt {
                dir: "/d".into(),
                vocab: 50304
            }
        );
        assert_eq!(serde_json::from_str::<DataSource>(&json).unwrap(), source);
    }
}
