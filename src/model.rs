//! The proxy model: a pre-LN decoder-only GPT in burn, with every multiplier of a
//! [`ParamPlan`] built in.
//!
//! Architecture (section 3 of the CompleteP spec, after Dey et al. 2025 and nanoGPT):
//!
//! ```text
//! h_0   = E[x] (+ P[t] with learned positions)
//! h    <- h + r * Attn(LN1(h))          for each of the L blocks,
//! h    <- h + r * MLP(LN2(h))           r = the plan's residual multiplier (m_L^-alpha)
//! logits = m * LN_f(h) U                m = the plan's logits multiplier (m_N^-1 under muP)
//! ```
//!
//! Attention uses heads of `d_head`, logits `q . k * s` with the plan's attention scale `s`,
//! causal masking and, by default, ALiBi position biases (Press et al. 2022); the MLP is
//! `N -> 4N -> N` with ReLU^2 (the paper's choice, So et al. 2021) or exact GELU.
//!
//! Initialisation is drawn from [`SplitMix64`] streams keyed by (seed, parameter), not from the
//! backend's generator, so a seed gives the same weights on every backend and a deeper model
//! shares its first blocks' initial weights with a shallower one.

use crate::param::ParamPlan;
use crate::rng::{SplitMix64, mix64};
use burn::module::{Module, Param, ParamId};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::{gelu, log_softmax, relu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// How the model knows token positions: `alibi` (linear attention biases, no parameters) or
/// `learned` (a learned position embedding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// Linear attention biases `-slope_h (i - j)` with slopes `2^(-8 (h+1) / H)` (no parameters).
    Alibi,
    /// A learned position embedding `[T, N]`, added to the token embedding.
    Learned,
}

/// The MLP non-linearity: `relu2` (`relu(x)^2`) or `gelu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `relu(x)^2`.
    Relu2,
    /// `x Phi(x)` with the exact normal CDF.
    Gelu,
}

/// The shape and architecture options of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// `N`, the residual stream width (d_model); a multiple of `d_head`.
    pub width: usize,
    /// `L`, the number of transformer blocks.
    pub depth: usize,
    /// Dimension of each attention head.
    pub d_head: usize,
    /// `T`, the context length in tokens.
    pub context: usize,
    /// `V`, the vocabulary size.
    pub vocab: usize,
    /// Position encoding.
    pub positions: Positions,
    /// MLP activation.
    pub activation: Activation,
    /// Use the token embedding (transposed) as the unembedding.
    pub tied_embeddings: bool,
    /// Biases on the linear layers inside the blocks.
    pub biases: bool,
}

impl ModelConfig {
    /// Number of attention heads, `N / d_head`.
    pub fn heads(&self) -> usize {
        self.width / self.d_head
    }
}

/// The plan's scalars that live inside the forward pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Multipliers {
    /// Multiplier on both residual branches.
    pub residual: f64,
    /// Multiplier on the output logits.
    pub logits: f64,
    /// Attention logit scale.
    pub attention_scale: f64,
}

/// Which row of Table 1 a parameter belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamGroupKind {
    Embedding,
    HiddenWeights,
    HiddenBiases,
    BlockNorms,
    FinalNorm,
    Unembedding,
}

/// One pre-LN transformer block.
#[derive(Module, Debug)]
pub struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ln2: LayerNorm,
    fc: Linear,
    fc_out: Linear,
}

/// The GPT proxy. Build it with [`Gpt::init`].
#[derive(Module, Debug)]
pub struct Gpt {
    /// `[V, N]`.
    token_embedding: Param<Tensor<2>>,
    /// `[T, N]`, only with learned positions.
    position_embedding: Option<Param<Tensor<2>>>,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
    /// `[N, V]`, absent when embeddings are tied.
    unembedding: Option<Param<Tensor<2>>>,
    #[module(skip)]
    config: ModelConfig,
    #[module(skip)]
    multipliers: Multipliers,
}

/// Mean absolute activations of one forward pass, for coordinate checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivationScales {
    /// The embedding output `h_0`.
    pub embedding: f64,
    /// The last block's attention branch output `Attn(LN1(h))`, before the residual multiplier.
    pub attention_branch: f64,
    /// The last block's MLP branch output, before the residual multiplier.
    pub mlp_branch: f64,
    /// The final residual stream `h_L`, before the final LayerNorm.
    pub residual: f64,
    /// The output logits, after the logits multiplier.
    pub logits: f64,
}

fn normal_tensor<const D: usize>(
    shape: [usize; D],
    std: f64,
    seed: u64,
    key: u64,
    device: &Device,
) -> Tensor<D> {
    let mut values = vec![0f32; shape.iter().product()];
    SplitMix64::new(mix64(seed ^ mix64(key))).fill_normal(&mut values, std);
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn init_linear(
    d_in: usize,
    d_out: usize,
    std: f64,
    bias: bool,
    seed: u64,
    key: u64,
    device: &Device,
) -> Linear {
    Linear {
        weight: Param::from_tensor(normal_tensor([d_in, d_out], std, seed, key, device)),
        bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

impl Gpt {
    /// A freshly initialised model: weights drawn from `Normal(0, init_std)` of their group in
    /// `plan`, linear biases 0, LayerNorm gains 1 and biases 0.
    pub fn init(config: &ModelConfig, plan: &ParamPlan, seed: u64, device: &Device) -> Gpt {
        let (n, v) = (config.width, config.vocab);
        let g = &plan.groups;
        let std = |rule: crate::param::GroupRule| rule.init_std.unwrap_or(0.0);
        let hidden_std = std(g.hidden_weights);
        let norm = || LayerNormConfig::new(n).init(device);
        let blocks = (0..config.depth)
            .map(|i| {
                // Keys 100 + 10 i + k: block i's k-th matrix, independent of the depth.
                let key = |k: u64| 100 + 10 * i as u64 + k;
                let linear = |d_in, d_out, k| {
                    init_linear(d_in, d_out, hidden_std, config.biases, seed, key(k), device)
                };
                Block {
                    ln1: norm(),
                    qkv: linear(n, 3 * n, 0),
                    proj: linear(n, n, 1),
                    ln2: norm(),
                    fc: linear(n, 4 * n, 2),
                    fc_out: linear(4 * n, n, 3),
                }
            })
            .collect();
        let embedding_std = std(g.embedding);
        Gpt {
            token_embedding: Param::from_tensor(normal_tensor(
                [v, n],
                embedding_std,
                seed,
                1,
                device,
            )),
            position_embedding: (config.positions == Positions::Learned).then(|| {
                Param::from_tensor(normal_tensor(
                    [config.context, n],
                    embedding_std,
                    seed,
                    2,
                    device,
                ))
            }),
            blocks,
            final_norm: norm(),
            unembedding: (!config.tied_embeddings).then(|| {
                Param::from_tensor(normal_tensor([n, v], std(g.unembedding), seed, 3, device))
            }),
            config: config.clone(),
            multipliers: Multipliers {
                residual: plan.residual_multiplier,
                logits: plan.logits_multiplier,
                attention_scale: plan.attention_scale,
            },
        }
    }

    /// The architecture this model was built with.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The ids of the parameters in each Table 1 group, for per-group optimizer settings.
    pub fn param_groups(&self) -> Vec<(ParamGroupKind, Vec<ParamId>)> {
        let mut embedding = vec![self.token_embedding.id];
        embedding.extend(self.position_embedding.as_ref().map(|p| p.id));
        let mut hidden_weights = Vec::new();
        let mut hidden_biases = Vec::new();
        let mut block_norms = Vec::new();
        for block in &self.blocks {
            for linear in [&block.qkv, &block.proj, &block.fc, &block.fc_out] {
                hidden_weights.push(linear.weight.id);
                hidden_biases.extend(linear.bias.as_ref().map(|b| b.id));
            }
            for ln in [&block.ln1, &block.ln2] {
                block_norms.push(ln.gamma.id);
                block_norms.extend(ln.beta.as_ref().map(|b| b.id));
            }
        }
        let mut final_norm = vec![self.final_norm.gamma.id];
        final_norm.extend(self.final_norm.beta.as_ref().map(|b| b.id));
        let mut groups = vec![
            (ParamGroupKind::Embedding, embedding),
            (ParamGroupKind::HiddenWeights, hidden_weights),
            (ParamGroupKind::HiddenBiases, hidden_biases),
            (ParamGroupKind::BlockNorms, block_norms),
            (ParamGroupKind::FinalNorm, final_norm),
        ];
        if let Some(u) = &self.unembedding {
            groups.push((ParamGroupKind::Unembedding, vec![u.id]));
        }
        groups
    }

    /// Next-token logits.
    ///
    /// # Shapes
    /// - `tokens`: `[B, T']` with `T' <= T`
    /// - returns `[B, T', V]`
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.forward_inner(tokens, None)
    }

    /// Logits plus the mean absolute value of the activations a coordinate check watches.
    pub fn forward_with_scales(&self, tokens: Tensor<2, Int>) -> (Tensor<3>, ActivationScales) {
        let mut scales = ActivationScales::default();
        let logits = self.forward_inner(tokens, Some(&mut scales));
        scales.logits = mean_abs(&logits);
        (logits, scales)
    }

    fn forward_inner(
        &self,
        tokens: Tensor<2, Int>,
        mut scales: Option<&mut ActivationScales>,
    ) -> Tensor<3> {
        let [batch, time] = tokens.dims();
        let device = tokens.device();
        let mut h = burn::tensor::module::embedding(self.token_embedding.val(), tokens);
        if let Some(pos) = &self.position_embedding {
            let pos = pos.val().narrow(0, 0, time).unsqueeze_dim::<3>(0);
            h = h + pos;
        }
        if let Some(s) = scales.as_deref_mut() {
            s.embedding = mean_abs(&h);
        }
        let bias = attention_bias(&self.config, time, &device);
        let r = self.multipliers.residual;
        for block in &self.blocks {
            let attn = self.attention(block, block.ln1.forward(h.clone()), bias.clone(), batch);
            if let Some(s) = scales.as_deref_mut() {
                s.attention_branch = mean_abs(&attn);
            }
            h = h + scaled(attn, r);
            let mlp_in = block.ln2.forward(h.clone());
            let mlp = block
                .fc_out
                .forward(self.activation(block.fc.forward(mlp_in)));
            if let Some(s) = scales.as_deref_mut() {
                s.mlp_branch = mean_abs(&mlp);
            }
            h = h + scaled(mlp, r);
        }
        if let Some(s) = scales {
            s.residual = mean_abs(&h);
        }
        let h = self.final_norm.forward(h);
        let logits = match &self.unembedding {
            Some(u) => h.matmul(u.val().unsqueeze_dim::<3>(0)),
            None => h.matmul(self.token_embedding.val().transpose().unsqueeze_dim::<3>(0)),
        };
        scaled(logits, self.multipliers.logits)
    }

    /// Causal multi-head attention on the normalised stream `x: [B, T, N]`.
    fn attention(&self, block: &Block, x: Tensor<3>, bias: Tensor<4>, batch: usize) -> Tensor<3> {
        let (n, dh, heads) = (self.config.width, self.config.d_head, self.config.heads());
        let time = x.dims()[1];
        let qkv = block.qkv.forward(x);
        let split = |i: usize| {
            qkv.clone()
                .narrow(2, i * n, n)
                .reshape([batch, time, heads, dh])
                .swap_dims(1, 2)
        };
        // Scaling q ([B, H, T, d_head]) is cheaper than scaling the scores ([B, H, T, T]).
        let q = split(0).mul_scalar(self.multipliers.attention_scale);
        let (k, v) = (split(1), split(2));
        let scores = q.matmul(k.swap_dims(2, 3)) + bias;
        let y = softmax(scores, 3).matmul(v);
        block
            .proj
            .forward(y.swap_dims(1, 2).reshape([batch, time, n]))
    }

    fn activation(&self, x: Tensor<3>) -> Tensor<3> {
        match self.config.activation {
            Activation::Relu2 => relu(x).square(),
            Activation::Gelu => gelu(x),
        }
    }

    /// Samples `count` tokens after `prompt` (temperature sampling; greedy when `temperature` is 0),
    /// with the logits multiplier applied exactly as in training. The window slides when the
    /// sequence outgrows the context.
    pub fn generate(&self, prompt: &[u32], count: usize, temperature: f64, seed: u64) -> Vec<u32> {
        let device = self.token_embedding.val().device();
        let mut rng = SplitMix64::new(seed);
        let mut tokens: Vec<u32> = prompt.to_vec();
        for _ in 0..count {
            let start = tokens.len().saturating_sub(self.config.context);
            let window: Vec<i64> = tokens[start..].iter().map(|&t| t as i64).collect();
            let len = window.len();
            let input = Tensor::<2, Int>::from_data(TensorData::new(window, [1, len]), &device);
            let logits = self
                .forward(input)
                .narrow(1, len - 1, 1)
                .reshape([self.config.vocab]);
            let logits: Vec<f32> = logits.into_data().try_to_vec::<f32>().unwrap_or_default();
            tokens.push(sample_token(&logits, temperature, &mut rng));
        }
        tokens.split_off(prompt.len())
    }
}

fn sample_token(logits: &[f32], temperature: f64, rng: &mut SplitMix64) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };
    if temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / temperature).exp())
        .collect();
    let mut u = rng.next_f64() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        u -= w;
        if u <= 0.0 {
            return i as u32;
        }
    }
    argmax()
}

/// `x * factor`, skipping the pass over `x` when the factor is 1 (SP, and any base shape).
fn scaled<const D: usize>(x: Tensor<D>, factor: f64) -> Tensor<D> {
    if factor == 1.0 {
        x
    } else {
        x.mul_scalar(factor)
    }
}

/// Mean absolute value of a tensor, read back to the host.
fn mean_abs<const D: usize>(x: &Tensor<D>) -> f64 {
    x.clone().abs().mean().into_scalar::<f32>() as f64
}

/// The additive attention bias `[1, H, T, T]`: `-inf` above the diagonal (causal mask) plus, with
/// ALiBi, `-slope_h (i - j)` on and below it. Every row keeps its finite diagonal, so softmax never
/// sees `-inf - (-inf)`; and `exp(-inf)` is a fast path in libm, whereas a large finite mask value
/// takes the slow underflow path for half of all scores (measured: 8% of a training step).
fn attention_bias(config: &ModelConfig, time: usize, device: &Device) -> Tensor<4> {
    const MASKED: f32 = f32::NEG_INFINITY;
    let heads = config.heads();
    let mut values = vec![0f32; heads * time * time];
    for h in 0..heads {
        let slope = match config.positions {
            Positions::Alibi => 2f64.powf(-8.0 * (h + 1) as f64 / heads as f64) as f32,
            Positions::Learned => 0.0,
        };
        for i in 0..time {
            for j in 0..time {
                values[(h * time + i) * time + j] = if j > i {
                    MASKED
                } else {
                    -slope * (i - j) as f32
                };
            }
        }
    }
    Tensor::from_data(TensorData::new(values, [1, heads, time, time]), device)
}

/// Mean next-token cross-entropy in nats.
///
/// # Shapes
/// - `logits`: `[B, T, V]`
/// - `targets`: `[B, T]`
/// - returns `[1]`
pub fn next_token_loss(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [batch, time, vocab] = logits.dims();
    let log_probs = log_softmax(logits.reshape([batch * time, vocab]), 1);
    log_probs
        .gather(1, targets.reshape([batch * time, 1]))
        .mean()
        .neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::param::{BaseHparams, BaseShape, Parameterization, PlanRequest, plan};

    fn tiny(positions: Positions, tied: bool) -> (ModelConfig, ParamPlan) {
        let config = ModelConfig {
            width: 32,
            depth: 2,
            d_head: 16,
            context: 8,
            vocab: 20,
            positions,
            activation: Activation::Relu2,
            tied_embeddings: tied,
            biases: true,
        };
        let plan = plan(&PlanRequest {
            parameterization: Parameterization::CompleteP,
            alpha: None,
            width: 32,
            depth: 2,
            d_head: 16,
            base: BaseShape {
                width: 16,
                depth: 1,
            },
            hparams: BaseHparams::default(),
            attention_scale: None,
        })
        .unwrap();
        (config, plan)
    }

    fn tokens(device: &Device) -> Tensor<2, Int> {
        let data: Vec<i64> = (0..16).map(|i| (i * 7 % 20) as i64).collect();
        Tensor::from_data(TensorData::new(data, [2, 8]), device)
    }

    struct IdCollector(Vec<ParamId>);

    impl burn::module::ModuleVisitor for IdCollector {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.id);
        }
    }

    #[test]
    fn parameter_count_matches_the_formula() {
        let device = Device::flex();
        for (positions, tied) in [(Positions::Alibi, false), (Positions::Learned, true)] {
            let (config, plan) = tiny(positions, tied);
            let model = Gpt::init(&config, &plan, 0, &device);
            let embeddings = 20 * 32
                + if tied { 0 } else { 32 * 20 }
                + if positions == Positions::Learned {
                    8 * 32
                } else {
                    0
                };
            assert_eq!(
                model.num_params() as u64,
                crate::flops::params_non_embedding(32, 2, true) + embeddings as u64
            );
            // Every parameter tensor belongs to exactly one group.
            let mut grouped: Vec<ParamId> = model
                .param_groups()
                .into_iter()
                .flat_map(|(_, ids)| ids)
                .collect();
            let mut all = IdCollector(Vec::new());
            model.visit(&mut all);
            grouped.sort();
            all.0.sort();
            assert_eq!(grouped, all.0);
        }
    }

    #[test]
    fn attention_is_causal() {
        let device = Device::flex();
        let (config, plan) = tiny(Positions::Learned, false);
        let model = Gpt::init(&config, &plan, 3, &device);
        let full: Vec<f32> = model
            .forward(tokens(&device))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let mut changed: Vec<i64> = (0..16).map(|i| (i * 7 % 20) as i64).collect();
        changed[7] = 19;
        changed[15] = 0;
        let changed = Tensor::from_data(TensorData::new(changed, [2, 8]), &device);
        let other: Vec<f32> = model
            .forward(changed)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        // Positions 0..6 of each row see only unchanged tokens.
        for row in 0..2 {
            for pos in 0..7 {
                for v in 0..20 {
                    let i = (row * 8 + pos) * 20 + v;
                    assert!((full[i] - other[i]).abs() < 1e-5);
                }
            }
        }
        assert!((full[7 * 20] - other[7 * 20]).abs() > 1e-7);
    }

    #[test]
    fn same_seed_same_model_and_loss_near_log_vocab() {
        let device = Device::flex();
        let (config, plan) = tiny(Positions::Alibi, false);
        let loss = |seed| {
            let model = Gpt::init(&config, &plan, seed, &device);
            let logits = model.forward(tokens(&device));
            let targets = tokens(&device);
            next_token_loss(logits, targets).into_scalar::<f32>()
        };
        assert_eq!(loss(5), loss(5));
        assert_ne!(loss(5), loss(6));
        assert!((loss(5) - (20f32).ln()).abs() < 0.05);
    }

    #[test]
    fn generation_applies_the_logits_multiplier() {
        let device = Device::flex();
        let (config, mut plan) = tiny(Positions::Alibi, false);
        let prompt = [1u32, 2, 3];
        let greedy =
            |plan: &ParamPlan| Gpt::init(&config, plan, 9, &device).generate(&prompt, 12, 0.0, 0);
        let sampled =
            |plan: &ParamPlan| Gpt::init(&config, plan, 9, &device).generate(&prompt, 12, 1.0, 0);
        // Greedy decoding is invariant to a positive logits multiplier; sampling is not.
        let base = (greedy(&plan), sampled(&plan));
        plan.logits_multiplier *= 500.0;
        assert_eq!(greedy(&plan), base.0);
        assert_ne!(sampled(&plan), base.1);
        assert_eq!(base.0.len(), 12);
        assert!(base.0.iter().all(|&t| t < 20));
    }
}
