//! Training runs: configuration, the AdamW optimizer with one group per Table 1 row, the learning
//! rate schedule, divergence detection, evaluation on the fixed validation set, and metrics
//! streamed to an observer.
//!
//! [`train`] is the whole run; [`Trainer`] is the step-by-step engine that diagnostics reuse.
//! Nothing here prints or writes files: callers observe [`TrainEvent`]s and may stop a run between
//! two steps by returning [`Flow::Stop`].

use crate::data::{Corpus, DataError, DataSource, EntropyFloor};
use crate::flops::{FlopBreakdown, params_non_embedding};
use crate::model::{
    Activation, ActivationScales, Gpt, ModelConfig, ParamGroupKind, Positions, next_token_loss,
};
use crate::param::{
    AttentionScale, BaseHparams, BaseShape, GroupRule, ParamError, ParamPlan, Parameterization,
    PlanRequest, plan,
};
use burn::module::{Module, ParamGroup, ParamId};
use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::lr_scheduler::LrSchedulerRecord;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The learning-rate multiplier over training: linear warmup, then `linear` decay to zero (the
/// paper's), `cosine` decay to zero, or `constant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Linear warmup, then linear decay to zero at the last step (the paper's schedule).
    Linear,
    /// Linear warmup, then half a cosine down to zero.
    Cosine,
    /// Linear warmup, then constant (for diagnostics).
    Constant,
}

/// Where the model trains: `cpu` (burn-flex), `gpu` (wgpu/Vulkan, needs the `vulkan` build
/// feature) or `cpu_ndarray` (needs the `ndarray` build feature).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// burn-flex on the CPU cores.
    Cpu,
    /// burn's wgpu backend on Vulkan (needs the `vulkan` cargo feature).
    Gpu,
    /// burn-ndarray on the CPU (needs the `ndarray` cargo feature; deprecated by burn 0.22 and
    /// kept to compare CPU backends).
    CpuNdarray,
}

impl DeviceChoice {
    /// The name in configs, the job queue and worker registrations.
    pub fn name(self) -> &'static str {
        match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Gpu => "gpu",
            DeviceChoice::CpuNdarray => "cpu_ndarray",
        }
    }
}

/// Everything that defines a training run. Every field has a default; TOML files, the CLI and
/// API requests set any subset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
#[schema(default)]
pub struct RunConfig {
    /// The scaling rule.
    pub parameterization: Parameterization,
    /// Alpha, for `parameterization = "alpha"` only.
    pub alpha: Option<f64>,
    /// Model width `N` (multiple of `d_head`).
    pub width: usize,
    /// Model depth `L` (blocks).
    pub depth: usize,
    /// Attention head dimension.
    pub d_head: usize,
    /// Context length `T`.
    pub context: usize,
    /// Model vocabulary; defaults to the corpus vocabulary and may exceed it (padding).
    pub vocab: Option<usize>,
    /// Base width `N_base` the hyperparameters were tuned at.
    pub base_width: usize,
    /// Base depth `L_base`.
    pub base_depth: usize,
    /// Base peak learning rate `eta` (2^-8 by default).
    #[schema(exclusive_minimum = 0.0)]
    pub lr: f64,
    /// Base init standard deviation `sigma`.
    #[schema(exclusive_minimum = 0.0)]
    pub init_std: f64,
    /// Base AdamW epsilon.
    #[schema(minimum = 0.0)]
    pub eps: f64,
    /// Base coupled weight decay `lambda`.
    #[schema(minimum = 0.0)]
    pub weight_decay: f64,
    /// Attention logit scale; the parameterization's Table 1 default when absent.
    pub attention_scale: Option<AttentionScale>,
    /// Position encoding.
    pub positions: Positions,
    /// MLP activation.
    pub activation: Activation,
    /// Tie the unembedding to the token embedding.
    pub tied_embeddings: bool,
    /// Biases on the linear layers in the blocks.
    pub biases: bool,
    /// Sequences per step.
    pub batch: usize,
    /// Training tokens; when absent, `tokens_per_param` times the non-embedding parameters.
    pub tokens: Option<u64>,
    /// Training tokens per non-embedding parameter (Chinchilla-optimal is about 20); read only
    /// when `tokens` is absent, and then the budget must come to at least one token.
    pub tokens_per_param: f64,
    /// Seed of the initial weights and of the training batches.
    pub seed: u64,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// Fraction of the steps spent warming up linearly, in [0, 1).
    #[schema(minimum = 0.0, exclusive_maximum = 1.0)]
    pub warmup_fraction: f64,
    /// Clip the global gradient norm to this value.
    #[schema(exclusive_minimum = 0.0)]
    pub grad_clip: Option<f64>,
    /// AdamW beta_1, in [0, 1).
    #[schema(minimum = 0.0, exclusive_maximum = 1.0)]
    pub beta1: f64,
    /// AdamW beta_2, in [0, 1).
    #[schema(minimum = 0.0, exclusive_maximum = 1.0)]
    pub beta2: f64,
    /// Emit a metric row every this many steps; about 100 rows per run when absent.
    pub log_every: Option<u64>,
    /// Measure validation loss every this many steps (and always at the end); about 10 times
    /// per run when absent.
    pub eval_every: Option<u64>,
    /// Validation sequences (of `context + 1` tokens) in the fixed held-out set.
    pub val_sequences: usize,
    /// A run whose training loss exceeds `divergence_factor * ln(V)` (or is not finite) stops
    /// with status `diverged`. Above 1.
    #[schema(exclusive_minimum = 1.0)]
    pub divergence_factor: f64,
    /// Training device.
    pub device: DeviceChoice,
    /// The corpus.
    pub data: DataSource,
}

impl Default for RunConfig {
    fn default() -> Self {
        let hp = BaseHparams::default();
        let base = BaseShape::default();
        RunConfig {
            parameterization: Parameterization::CompleteP,
            alpha: None,
            width: 128,
            depth: 4,
            d_head: 64,
            context: 128,
            vocab: None,
            base_width: base.width,
            base_depth: base.depth,
            lr: hp.lr,
            init_std: hp.init_std,
            eps: hp.eps,
            weight_decay: hp.weight_decay,
            attention_scale: None,
            positions: Positions::Alibi,
            activation: Activation::Relu2,
            tied_embeddings: false,
            biases: true,
            batch: 16,
            tokens: None,
            tokens_per_param: 20.0,
            seed: 0,
            schedule: Schedule::Linear,
            warmup_fraction: 0.1,
            grad_clip: None,
            beta1: 0.9,
            beta2: 0.95,
            log_every: None,
            eval_every: None,
            val_sequences: 32,
            divergence_factor: 2.0,
            device: DeviceChoice::Cpu,
            data: DataSource::Builtin {
                seed: 0,
                vocab: 256,
            },
        }
    }
}

/// Why a run could not start. Every variant is a problem with the user's input.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{0}")]
    Config(String),
}

fn config_error(message: impl Into<String>) -> TrainError {
    TrainError::Config(message.into())
}

impl RunConfig {
    /// The per-group plan this run trains with.
    pub fn plan(&self) -> Result<ParamPlan, ParamError> {
        plan(&PlanRequest {
            parameterization: self.parameterization,
            alpha: self.alpha,
            width: self.width,
            depth: self.depth,
            d_head: self.d_head,
            base: BaseShape {
                width: self.base_width,
                depth: self.base_depth,
            },
            hparams: BaseHparams {
                lr: self.lr,
                init_std: self.init_std,
                eps: self.eps,
                weight_decay: self.weight_decay,
            },
            attention_scale: self.attention_scale,
        })
    }

    /// Non-embedding parameters `P` of the model (see [`crate::flops`]).
    pub fn params_non_embedding(&self) -> u64 {
        params_non_embedding(self.width, self.depth, self.biases)
    }

    /// Training steps implied by the token budget: `ceil(tokens / (batch * context))`.
    pub fn total_steps(&self) -> Result<u64, TrainError> {
        let tokens = match self.tokens {
            Some(t) => t as f64,
            None => self.tokens_per_param * self.params_non_embedding() as f64,
        };
        if tokens.is_nan() || tokens < 1.0 {
            return Err(config_error(format!(
                "the token budget must be positive, got {tokens}: set --tokens or --tokens-per-param above 0"
            )));
        }
        if tokens > crate::limits::MAX_TOKENS {
            return Err(config_error(format!(
                "the token budget (tokens) must be at most {:e}, got {tokens:e}",
                crate::limits::MAX_TOKENS
            )));
        }
        Ok((tokens / self.tokens_per_step() as f64).ceil() as u64)
    }

    /// Tokens consumed by one step: `batch * context`.
    pub fn tokens_per_step(&self) -> u64 {
        (self.batch * self.context) as u64
    }

    /// Checks every integer against its inclusive range (before any arithmetic on them): the
    /// sizes against the bounds of [`crate::limits`], counts of steps and sequences positive,
    /// the seeds and cadences within SQLite's `i64`, and the data source's seed and vocabulary.
    /// (`d_head` is further bounded by the width: the plan requires the width to be a multiple
    /// of it.)
    pub fn check_bounds(&self) -> Result<(), TrainError> {
        use crate::limits::{
            MAX_BATCH, MAX_CONTEXT, MAX_DEPTH, MAX_TOKENS, MAX_VAL_SEQUENCES, MAX_VOCAB, MAX_WIDTH,
        };
        const I64: u64 = i64::MAX as u64;
        let size = |n: usize| n as u64;
        let ranges = [
            ("width", Some(size(self.width)), 1, size(MAX_WIDTH)),
            ("depth", Some(size(self.depth)), 1, size(MAX_DEPTH)),
            ("d_head", Some(size(self.d_head)), 1, size(MAX_WIDTH)),
            ("context", Some(size(self.context)), 1, size(MAX_CONTEXT)),
            ("vocab", self.vocab.map(size), 1, size(MAX_VOCAB)),
            (
                "base_width",
                Some(size(self.base_width)),
                1,
                size(MAX_WIDTH),
            ),
            (
                "base_depth",
                Some(size(self.base_depth)),
                1,
                size(MAX_DEPTH),
            ),
            ("batch", Some(size(self.batch)), 1, size(MAX_BATCH)),
            ("tokens", self.tokens, 1, MAX_TOKENS as u64),
            ("seed", Some(self.seed), 0, I64),
            ("log_every", self.log_every, 1, I64),
            ("eval_every", self.eval_every, 1, I64),
            (
                "val_sequences",
                Some(size(self.val_sequences)),
                1,
                size(MAX_VAL_SEQUENCES),
            ),
        ];
        let data = match &self.data {
            DataSource::Builtin { seed, vocab } => vec![
                ("data.seed", Some(*seed), 0, I64),
                (
                    "data.vocab",
                    Some(size(*vocab)),
                    size(crate::data::BUILTIN_MIN_VOCAB),
                    size(crate::data::BUILTIN_MAX_VOCAB),
                ),
            ],
            DataSource::NanoGpt { vocab, .. } => {
                vec![("data.vocab", Some(size(*vocab)), 1, 1 << 16)]
            }
            DataSource::Text { .. } => Vec::new(),
        };
        for (name, value, min, max) in ranges.into_iter().chain(data) {
            if let Some(value) = value.filter(|v| !(min..=max).contains(v)) {
                return Err(config_error(format!(
                    "'{name}' must be an integer from {min} to {max}, got {value}"
                )));
            }
        }
        Ok(())
    }

    /// Checks everything that does not need the corpus.
    pub fn validate(&self) -> Result<ParamPlan, TrainError> {
        self.check_bounds()?;
        let plan = self.plan()?;
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return Err(config_error(format!(
                "warmup_fraction must be in [0, 1), got {}",
                self.warmup_fraction
            )));
        }
        for (name, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(config_error(format!(
                    "{name} must be in [0, 1), got {beta}"
                )));
            }
        }
        if let Some(clip) = self.grad_clip.filter(|c| c.is_nan() || *c <= 0.0) {
            return Err(config_error(format!(
                "grad_clip must be positive, got {clip}"
            )));
        }
        if self.divergence_factor.is_nan() || self.divergence_factor <= 1.0 {
            return Err(config_error(format!(
                "divergence_factor must be above 1, got {}",
                self.divergence_factor
            )));
        }
        self.total_steps()?;
        Ok(plan)
    }

    /// The config with `vocab` read from its tokenizer where the data is tokenized text and no
    /// vocab was given, so that sizes, FLOPs and memory estimates see the real vocabulary
    /// (otherwise unchanged).
    pub fn with_tokenizer_vocab(mut self) -> Result<RunConfig, TrainError> {
        if let (
            None,
            DataSource::Text {
                tokenizer: Some(tokenizer),
                ..
            },
        ) = (self.vocab, &self.data)
        {
            self.vocab = Some(crate::data::tokenizer_vocab(tokenizer)?);
        }
        Ok(self)
    }

    /// Everything [`Trainer::new`] checks but the device, without building the model: the
    /// config, the corpus (opened and validated) and the vocabulary. The device is checked
    /// where the run trains (a server queues GPU runs for GPU workers).
    pub fn check(&self) -> Result<(), TrainError> {
        self.validate()?;
        let corpus = Corpus::open(&self.data, self.context)?;
        self.model_config(corpus.vocab_size())?;
        Ok(())
    }

    fn model_config(&self, corpus_vocab: usize) -> Result<ModelConfig, TrainError> {
        let vocab = self.vocab.unwrap_or(corpus_vocab);
        if vocab < corpus_vocab {
            return Err(config_error(format!(
                "vocab mismatch: the model vocab {vocab} is smaller than the corpus vocab {corpus_vocab}; use --vocab {corpus_vocab} or larger"
            )));
        }
        Ok(ModelConfig {
            width: self.width,
            depth: self.depth,
            d_head: self.d_head,
            context: self.context,
            vocab,
            positions: self.positions,
            activation: self.activation,
            tied_embeddings: self.tied_embeddings,
            biases: self.biases,
        })
    }
}

/// The devices this build trains on: `cpu`, and `gpu` and `cpu_ndarray` with their features.
pub fn available_devices() -> Vec<DeviceChoice> {
    let mut devices = vec![DeviceChoice::Cpu];
    if cfg!(feature = "vulkan") {
        devices.push(DeviceChoice::Gpu);
    }
    if cfg!(feature = "ndarray") {
        devices.push(DeviceChoice::CpuNdarray);
    }
    devices
}

/// Picks the burn device for a [`DeviceChoice`], with autodiff.
pub fn training_device(choice: DeviceChoice) -> Result<Device, TrainError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::flex().autodiff()),
        #[cfg(feature = "vulkan")]
        DeviceChoice::Gpu => {
            Ok(Device::vulkan(burn::tensor::DeviceKind::DiscreteGpu(0)).autodiff())
        }
        #[cfg(not(feature = "vulkan"))]
        DeviceChoice::Gpu => Err(config_error(
            "this build has no GPU backend: rebuild with `cargo build --release --features vulkan`, or use --device cpu",
        )),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        DeviceChoice::CpuNdarray => Ok(Device::ndarray().autodiff()),
        #[cfg(not(feature = "ndarray"))]
        DeviceChoice::CpuNdarray => Err(config_error(
            "this build has no ndarray backend: rebuild with `--features ndarray`, or use --device cpu",
        )),
    }
}

/// The learning-rate multiplier at `step` (0-based) of `total` steps, in `[0, 1]`.
///
/// Warmup: `(step + 1) / warmup` for the first `warmup = round(warmup_fraction * total)` steps.
/// Then, with progress `p = (step - warmup) / (total - warmup)`: linear `1 - p`, cosine
/// `(1 + cos(pi p)) / 2`, constant `1`. The last step of a decaying schedule is `1/(total - warmup)`
/// of the peak (or the cosine equivalent), and the schedule would reach zero one step later.
pub fn lr_multiplier(schedule: Schedule, warmup_fraction: f64, step: u64, total: u64) -> f64 {
    let warmup = (warmup_fraction * total as f64).round() as u64;
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    match schedule {
        Schedule::Linear => 1.0 - progress,
        Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        Schedule::Constant => 1.0,
    }
}

/// One parameter group's learning rate over training: its peak times [`lr_multiplier`].
#[derive(Clone)]
struct GroupSchedule {
    peak: f64,
    schedule: Schedule,
    warmup_fraction: f64,
    total: u64,
    step: u64,
}

impl LrScheduler for GroupSchedule {
    fn step(&mut self) -> f64 {
        let lr =
            self.peak * lr_multiplier(self.schedule, self.warmup_fraction, self.step, self.total);
        self.step += 1;
        lr
    }

    // Runs are not checkpointed: the schedule is a pure function of the step.
    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new()
    }

    fn load_record(&mut self, _record: LrSchedulerRecord) {}
}

fn group_rule(plan: &ParamPlan, kind: ParamGroupKind) -> GroupRule {
    let g = &plan.groups;
    match kind {
        ParamGroupKind::Embedding => g.embedding,
        ParamGroupKind::HiddenWeights => g.hidden_weights,
        ParamGroupKind::HiddenBiases => g.hidden_biases,
        ParamGroupKind::BlockNorms => g.block_norms,
        ParamGroupKind::FinalNorm => g.final_norm,
        ParamGroupKind::Unembedding => g.unembedding,
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Trained through its whole budget.
    Succeeded,
    /// Stopped because the loss became non-finite or exploded; metrics up to then are kept.
    Diverged,
    /// Stopped by the observer.
    Cancelled,
}

impl RunStatus {
    /// The lowercase name used in JSON and messages.
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Diverged => "diverged",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// One row of training metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// Steps completed.
    pub step: u64,
    /// Training tokens consumed so far.
    pub tokens: u64,
    /// Training FLOPs so far (total of the components below).
    pub flops: f64,
    /// The `6 P D` component.
    pub flops_dense: f64,
    /// The `6 N V D` component.
    pub flops_unembedding: f64,
    /// The `12 L N T D` component.
    pub flops_attention: f64,
    /// Training loss of the last step, nats/token.
    pub train_loss: f64,
    /// Validation loss, at evaluation points.
    pub val_loss: Option<f64>,
    /// The base learning rate `eta` times the schedule multiplier of the last step.
    pub lr: f64,
    /// Seconds since the start of training (evaluation included).
    pub wall_secs: f64,
    /// Training tokens per second so far (evaluation excluded).
    pub tokens_per_sec: f64,
}

/// What a run reports as it goes.
#[derive(Debug)]
pub enum TrainEvent<'a> {
    /// Before the first step.
    Started {
        total_steps: u64,
        params_non_embedding: u64,
        plan: &'a ParamPlan,
        corpus: String,
        entropy_floor: Option<EntropyFloor>,
    },
    /// After every step.
    Step {
        step: u64,
        total_steps: u64,
        train_loss: f64,
    },
    /// Every `log_every` steps, at evaluations and at the end.
    Metric(&'a MetricRow),
}

/// The observer's answer after each event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// The result of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSummary {
    pub status: RunStatus,
    pub final_train_loss: f64,
    pub final_val_loss: Option<f64>,
    pub steps: u64,
    pub tokens: u64,
    pub flops: f64,
    pub flops_breakdown: FlopBreakdown,
    pub params_non_embedding: u64,
    pub tokens_per_sec: f64,
    pub wall_secs: f64,
    /// The built-in corpus's irreducible loss on the validation set, nats/token.
    pub entropy_floor: Option<f64>,
}

/// The state of a run between steps: model, optimizer, schedule and data.
pub struct Trainer {
    config: RunConfig,
    plan: ParamPlan,
    model: Gpt,
    optimizer: ModuleOptimizer,
    schedules: ModuleLrScheduler,
    groups: Vec<(ParamGroupKind, Vec<ParamId>)>,
    corpus: Corpus,
    /// The fixed validation tokens and their number of sequences, drawn once.
    validation: (Vec<u32>, usize),
    device: Device,
    total_steps: u64,
    step: u64,
}

/// What one step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepOutcome {
    /// Training loss of the batch, before the update.
    pub loss: f64,
    /// Activation scales of the forward pass, when asked for.
    pub scales: Option<ActivationScales>,
}

impl Trainer {
    /// Validates the config, opens the corpus and initialises model and optimizer.
    pub fn new(config: &RunConfig) -> Result<Trainer, TrainError> {
        let plan = config.validate()?;
        let corpus = Corpus::open(&config.data, config.context)?;
        let model_config = config.model_config(corpus.vocab_size())?;
        let device = training_device(config.device)?;
        let model = Gpt::init(&model_config, &plan, config.seed, &device);
        let total_steps = config.total_steps()?;
        let groups = model.param_groups();

        let adamw = |rule: GroupRule| {
            AdamWConfig::new()
                .with_beta_1(config.beta1 as f32)
                .with_beta_2(config.beta2 as f32)
                .with_epsilon(rule.eps as f32)
                .with_weight_decay(rule.weight_decay as f32)
        };
        let schedule = |rule: GroupRule| GroupSchedule {
            peak: rule.lr,
            schedule: config.schedule,
            warmup_fraction: config.warmup_fraction,
            total: total_steps,
            step: 0,
        };
        let fallback = plan.groups.final_norm;
        let mut optimizer = adamw(fallback).init();
        let mut schedules = ModuleLrScheduler::new(schedule(fallback));
        for (kind, ids) in &groups {
            let rule = group_rule(&plan, *kind);
            let group = ParamGroup::from_ids(ids.clone());
            optimizer = optimizer.with_group(group.clone(), adamw(rule).build(), None);
            schedules = schedules.with_group(group, schedule(rule));
        }
        Ok(Trainer {
            config: config.clone(),
            plan,
            model,
            optimizer,
            schedules,
            groups,
            validation: corpus.validation_set(config.val_sequences),
            corpus,
            device,
            total_steps,
            step: 0,
        })
    }

    /// The plan the model and optimizer follow.
    pub fn plan(&self) -> &ParamPlan {
        &self.plan
    }

    /// The run's configuration.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The corpus the run trains on.
    pub fn corpus(&self) -> &Corpus {
        &self.corpus
    }

    /// The model as it is now.
    pub fn model(&self) -> &Gpt {
        &self.model
    }

    /// Steps in the whole budget.
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// Steps done.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    fn token_tensors(
        &self,
        tokens: &[u32],
        rows: usize,
        device: &Device,
    ) -> (Tensor<2, Int>, Tensor<2, Int>) {
        let t = self.config.context;
        let mut inputs = Vec::with_capacity(rows * t);
        let mut targets = Vec::with_capacity(rows * t);
        for row in tokens.chunks_exact(t + 1) {
            inputs.extend(row[..t].iter().map(|&x| x as i64));
            targets.extend(row[1..].iter().map(|&x| x as i64));
        }
        (
            Tensor::from_data(TensorData::new(inputs, [rows, t]), device),
            Tensor::from_data(TensorData::new(targets, [rows, t]), device),
        )
    }

    /// One optimizer step on the next training batch. With `with_scales`, also measures the
    /// activation scales of this step's forward pass (for coordinate checks).
    pub fn step(&mut self, with_scales: bool) -> StepOutcome {
        let batch = self
            .corpus
            .train_batch(self.config.seed, self.step, self.config.batch);
        let (inputs, targets) = self.token_tensors(&batch, self.config.batch, &self.device);
        let (logits, scales) = if with_scales {
            let (logits, scales) = self.model.forward_with_scales(inputs);
            (logits, Some(scales))
        } else {
            (self.model.forward(inputs), None)
        };
        let loss = next_token_loss(logits, targets);
        let loss_value = loss.clone().into_scalar::<f32>() as f64;
        let mut grads = GradientsParams::from_grads(loss.backward(), &self.model);
        if let Some(max_norm) = self.config.grad_clip {
            self.clip_global_norm(&mut grads, max_norm);
        }
        let lr = self.schedules.step();
        self.model = self.optimizer.step(lr, self.model.clone(), grads);
        self.step += 1;
        StepOutcome {
            loss: loss_value,
            scales,
        }
    }

    /// Rescales all gradients by `min(1, max_norm / ||g||)`, `||g||` the norm over every
    /// parameter (PyTorch's `clip_grad_norm_`; burn's own clipping is per tensor).
    fn clip_global_norm(&self, grads: &mut GradientsParams, max_norm: f64) {
        let is_matrix = |kind: ParamGroupKind| {
            matches!(
                kind,
                ParamGroupKind::Embedding
                    | ParamGroupKind::HiddenWeights
                    | ParamGroupKind::Unembedding
            )
        };
        let mut squares = 0.0;
        for (kind, ids) in &self.groups {
            for &id in ids {
                squares += if is_matrix(*kind) {
                    grads
                        .get::<2>(id)
                        .map_or(0.0, |g| g.square().sum().into_scalar::<f32>() as f64)
                } else {
                    grads
                        .get::<1>(id)
                        .map_or(0.0, |g| g.square().sum().into_scalar::<f32>() as f64)
                };
            }
        }
        let norm = squares.sqrt();
        if norm.is_nan() || norm <= max_norm {
            return;
        }
        let factor = max_norm / norm;
        for (kind, ids) in &self.groups {
            for &id in ids {
                if is_matrix(*kind) {
                    if let Some(g) = grads.remove::<2>(id) {
                        grads.register(id, g.mul_scalar(factor));
                    }
                } else if let Some(g) = grads.remove::<1>(id) {
                    grads.register(id, g.mul_scalar(factor));
                }
            }
        }
    }

    /// Mean next-token loss on the fixed validation set, without gradients.
    pub fn validation_loss(&self) -> f64 {
        const ROWS_PER_CHUNK: usize = 16;
        let model = self.model.valid();
        let device = self.device.clone().inner();
        let (tokens, rows) = (&self.validation.0, self.validation.1);
        let mut total = 0.0;
        for chunk in tokens.chunks((self.config.context + 1) * ROWS_PER_CHUNK) {
            let chunk_rows = chunk.len() / (self.config.context + 1);
            let (inputs, targets) = self.token_tensors(chunk, chunk_rows, &device);
            let loss = next_token_loss(model.forward(inputs), targets).into_scalar::<f32>() as f64;
            total += loss * chunk_rows as f64;
        }
        total / rows as f64
    }
}

fn every(requested: Option<u64>, total: u64, times: u64) -> u64 {
    requested.unwrap_or_else(|| total.div_ceil(times)).max(1)
}

/// Trains one run to the end of its budget, to divergence, or until the observer stops it.
pub fn train(
    config: &RunConfig,
    observer: &mut dyn FnMut(TrainEvent) -> Flow,
) -> Result<RunSummary, TrainError> {
    let mut trainer = Trainer::new(config)?;
    Ok(train_with(&mut trainer, observer))
}

/// [`train`] on a prepared [`Trainer`], which keeps the trained model for the caller.
pub fn train_with(
    trainer: &mut Trainer,
    observer: &mut dyn FnMut(TrainEvent) -> Flow,
) -> RunSummary {
    let config = &trainer.config.clone();
    let total_steps = trainer.total_steps;
    let params = config.params_non_embedding();
    let entropy_floor = trainer.corpus.entropy_floor(config.val_sequences);
    let started = Instant::now();
    let stopped_before_start = observer(TrainEvent::Started {
        total_steps,
        params_non_embedding: params,
        plan: &trainer.plan,
        corpus: trainer.corpus.describe(),
        entropy_floor,
    }) == Flow::Stop;
    let vocab = trainer.model.config().vocab;
    let divergence_threshold = config.divergence_factor * (vocab as f64).ln();
    let log_every = every(config.log_every, total_steps, 100);
    let eval_every = every(config.eval_every, total_steps, 10);
    let flops_per_step = FlopBreakdown::for_tokens(
        config.width,
        config.depth,
        config.context,
        vocab,
        config.biases,
        config.tokens_per_step(),
    );

    let mut train_secs = 0.0;
    let mut status = if stopped_before_start {
        RunStatus::Cancelled
    } else {
        RunStatus::Succeeded
    };
    let mut last_loss = f64::NAN;
    let mut last_val = None;
    while status == RunStatus::Succeeded && trainer.step < total_steps {
        let step_started = Instant::now();
        let outcome = trainer.step(false);
        train_secs += step_started.elapsed().as_secs_f64();
        last_loss = outcome.loss;
        let step = trainer.step;
        let diverged = !last_loss.is_finite() || last_loss > divergence_threshold;
        if diverged {
            status = RunStatus::Diverged;
        }
        let stop = observer(TrainEvent::Step {
            step,
            total_steps,
            train_loss: last_loss,
        }) == Flow::Stop;
        if stop && !diverged {
            status = RunStatus::Cancelled;
        }
        let finished = step == total_steps || diverged || stop;
        let evaluate =
            !diverged && !stop && (step.is_multiple_of(eval_every) || step == total_steps);
        if evaluate {
            last_val = Some(trainer.validation_loss());
        }
        if finished || evaluate || step.is_multiple_of(log_every) {
            let tokens = step * config.tokens_per_step();
            let flops = flops_per_step.scaled(step as f64);
            let row = MetricRow {
                step,
                tokens,
                flops: flops.total(),
                flops_dense: flops.dense,
                flops_unembedding: flops.unembedding,
                flops_attention: flops.attention,
                train_loss: last_loss,
                val_loss: if evaluate { last_val } else { None },
                lr: config.lr
                    * lr_multiplier(
                        config.schedule,
                        config.warmup_fraction,
                        step - 1,
                        total_steps,
                    ),
                wall_secs: started.elapsed().as_secs_f64(),
                tokens_per_sec: tokens as f64 / train_secs.max(1e-9),
            };
            if observer(TrainEvent::Metric(&row)) == Flow::Stop
                && status == RunStatus::Succeeded
                && !finished
            {
                status = RunStatus::Cancelled;
                break;
            }
        }
        if finished {
            break;
        }
    }
    let steps = trainer.step;
    let tokens = steps * config.tokens_per_step();
    let flops_breakdown = flops_per_step.scaled(steps as f64);
    RunSummary {
        status,
        final_train_loss: last_loss,
        final_val_loss: last_val.filter(|_| status == RunStatus::Succeeded),
        steps,
        tokens,
        flops: flops_breakdown.total(),
        flops_breakdown,
        params_non_embedding: params,
        tokens_per_sec: tokens as f64 / train_secs.max(1e-9),
        wall_secs: started.elapsed().as_secs_f64(),
        entropy_floor: entropy_floor.map(|f| f.nats_per_token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let m = |s, step| lr_multiplier(s, 0.1, step, 100);
        assert!((m(Schedule::Linear, 0) - 0.1).abs() < 1e-12);
        assert!((m(Schedule::Linear, 9) - 1.0).abs() < 1e-12);
        assert!((m(Schedule::Linear, 10) - 1.0).abs() < 1e-12);
        assert!((m(Schedule::Linear, 55) - 0.5).abs() < 1e-12);
        assert!((m(Schedule::Linear, 99) - 1.0 / 90.0).abs() < 1e-12);
        assert!((m(Schedule::Cosine, 55) - 0.5).abs() < 1e-12);
        assert!(m(Schedule::Cosine, 99) < 1e-3);
        assert_eq!(m(Schedule::Constant, 99), 1.0);
        assert_eq!(lr_multiplier(Schedule::Linear, 0.0, 0, 1), 1.0);
    }

    #[test]
    fn budget_in_tokens_per_parameter() {
        let config = RunConfig {
            width: 64,
            depth: 2,
            batch: 4,
            context: 16,
            tokens_per_param: 1.0,
            ..RunConfig::default()
        };
        let p = config.params_non_embedding();
        assert_eq!(config.total_steps().unwrap(), p.div_ceil(64));
        let zero = RunConfig {
            tokens: Some(0),
            ..config.clone()
        };
        assert!(
            zero.total_steps()
                .unwrap_err()
                .to_string()
                .contains("positive")
        );
        let negative = RunConfig {
            tokens_per_param: -3.0,
            ..config
        };
        assert!(negative.validate().is_err());
    }
}
