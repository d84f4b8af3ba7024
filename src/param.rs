//! Parameterizations: how every hyperparameter of a GPT and its AdamW optimizer scales with the
//! model's width `N` (d_model) and depth `L` (number of transformer blocks).
//!
//! This module is Table 1 of Dey et al., *Don't be lazy: CompleteP enables compute-efficient deep
//! transformers* (arXiv 2505.01618, v4), as pure arithmetic. Given a target width and depth, a [`BaseShape`] on
//! which the base hyperparameters ([`BaseHparams`]) were tuned, and a [`Parameterization`],
//! [`plan`] returns a [`ParamPlan`]: the residual and logit multipliers, the attention logit scale
//! and, per parameter group, the init standard deviation, learning rate, coupled weight decay and
//! AdamW epsilon after all scaling.
//!
//! With `m_N = N / N_base` and `m_L = L / L_base`:
//!
//! | Group | SP | muP | muP + depth (any alpha; 0.5 = depth-muP, 1 = CompleteP) |
//! |---|---|---|---|
//! | residual branch multiplier | 1 | 1 | `m_L^-alpha` |
//! | embedding init / LR / WD | `sigma` / `eta` / `lambda` | same | same |
//! | hidden weights init | `sigma` | `sigma m_N^-1/2` | `sigma m_N^-1/2` |
//! | hidden weights LR | `eta` | `eta m_N^-1` | `eta m_N^-1 m_L^(alpha-1)` |
//! | hidden weights WD | `lambda` | `lambda m_N` | `lambda m_N` |
//! | hidden biases init / LR / WD | 0 / `eta` / 0 | same | 0 / `eta m_L^(alpha-1)` / 0 |
//! | block LayerNorms LR | `eta` | `eta` | `eta m_L^(alpha-1)` |
//! | final LayerNorm, unembedding | unscaled | unscaled | unscaled |
//! | logits multiplier | 1 | `m_N^-1` | `m_N^-1` |
//! | AdamW eps inside blocks | `eps` | `eps m_N^-1` | `eps m_N^-1 m_L^-alpha` |
//! | AdamW eps outside blocks | `eps` | `eps m_N^-1` | `eps m_N^-1` |
//! | attention logit scale | `1/sqrt(d_head)` | `1/d_head` | `1/d_head` |
//!
//! Weight decay is coupled AdamW decay: each step multiplies a parameter by `1 - lr * wd`, so the
//! `lambda m_N` rule keeps the decay *rate* `lr * wd` of hidden weights independent of width.
//! Where the paper's reference code differs (it scales eps of every group by `m_N^-1 m_L^-alpha`
//! and its muP path scales neither eps nor hidden WD), this module follows the table.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A rule for scaling hyperparameters with width and depth: `sp` (standard parameterization,
/// nothing scales), `mup` (width rules only), `depth-mup` (muP plus residual branches scaled by
/// `m_L^-1/2`), `completep` (muP plus residual branches scaled by `m_L^-1`, the paper's
/// recommendation) or `alpha` (muP plus depth rules with a chosen `alpha` in [0.5, 1]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Parameterization {
    /// Standard parameterization: nothing scales.
    Sp,
    /// Maximal update parameterization (Yang & Hu 2021): width rules only, no depth rules.
    Mup,
    /// muP plus residual branches scaled by `m_L^-1/2` (alpha = 0.5).
    DepthMup,
    /// muP plus residual branches scaled by `m_L^-1` (alpha = 1): the paper's recommendation.
    #[serde(rename = "completep")]
    CompleteP,
    /// The general muP + depth column with a user-chosen alpha in [0.5, 1].
    Alpha,
}

impl Parameterization {
    /// Every parameterization, in the order the table lists them.
    pub const ALL: [Parameterization; 5] = [
        Parameterization::Sp,
        Parameterization::Mup,
        Parameterization::DepthMup,
        Parameterization::CompleteP,
        Parameterization::Alpha,
    ];

    /// The name used on the command line, in JSON and in TOML.
    pub fn name(self) -> &'static str {
        match self {
            Parameterization::Sp => "sp",
            Parameterization::Mup => "mup",
            Parameterization::DepthMup => "depth-mup",
            Parameterization::CompleteP => "completep",
            Parameterization::Alpha => "alpha",
        }
    }

    /// The depth exponent alpha of the residual multiplier `m_L^-alpha`, or `None` for SP and muP,
    /// which have no depth rules at all (they are not "alpha = 0" of the general column: the
    /// general column's eps and LR rules would still differ).
    ///
    /// `alpha` is read for [`Parameterization::Alpha`]; the others refuse an alpha other than
    /// their own rather than silently ignore it.
    pub fn depth_alpha(self, alpha: Option<f64>) -> Result<Option<f64>, ParamError> {
        let fixed = |own: Option<f64>| match alpha {
            Some(a) if Some(a) != own => Err(ParamError::AlphaNotAdjustable {
                parameterization: self.name(),
                alpha: a,
            }),
            _ => Ok(own),
        };
        match self {
            Parameterization::Sp | Parameterization::Mup => fixed(None),
            Parameterization::DepthMup => fixed(Some(0.5)),
            Parameterization::CompleteP => fixed(Some(1.0)),
            Parameterization::Alpha => match alpha {
                None => Err(ParamError::MissingAlpha),
                Some(a) if (0.5..=1.0).contains(&a) => Ok(Some(a)),
                Some(a) => Err(ParamError::AlphaOutOfRange(a)),
            },
        }
    }

    /// Whether the muP width rules apply (every parameterization but SP).
    pub fn has_width_rules(self) -> bool {
        self != Parameterization::Sp
    }

    /// The attention logit scale Table 1 assigns: `1/sqrt(d_head)` for SP, `1/d_head` otherwise.
    pub fn default_attention_scale(self) -> AttentionScale {
        if self.has_width_rules() {
            AttentionScale::DHead
        } else {
            AttentionScale::SqrtDHead
        }
    }
}

impl fmt::Display for Parameterization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Parameterization {
    type Err = ParamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Parameterization::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| ParamError::UnknownParameterization(s.to_string()))
    }
}

/// The factor applied to attention logits `q . k`: `d_head` (`1 / d_head`, muP), `sqrt_d_head`
/// (`1 / sqrt(d_head)`, SP) or `width` (`1 / N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttentionScale {
    /// `1 / d_head` (muP; keeps logits O(1) when q and k align as width grows).
    DHead,
    /// `1 / sqrt(d_head)` (the original transformer and SP).
    SqrtDHead,
    /// `1 / N` (used in some of the paper's runs).
    Width,
}

impl AttentionScale {
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            AttentionScale::DHead => "d_head",
            AttentionScale::SqrtDHead => "sqrt_d_head",
            AttentionScale::Width => "width",
        }
    }

    /// The numeric factor for a model of width `width` with heads of `d_head`.
    pub fn value(self, width: usize, d_head: usize) -> f64 {
        match self {
            AttentionScale::DHead => 1.0 / d_head as f64,
            AttentionScale::SqrtDHead => 1.0 / (d_head as f64).sqrt(),
            AttentionScale::Width => 1.0 / width as f64,
        }
    }
}

impl FromStr for AttentionScale {
    type Err = ParamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            AttentionScale::DHead,
            AttentionScale::SqrtDHead,
            AttentionScale::Width,
        ]
        .into_iter()
        .find(|a| a.name() == s)
        .ok_or_else(|| ParamError::UnknownAttentionScale(s.to_string()))
    }
}

/// The width and depth of the model the target is scaled from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseShape {
    /// `N_base`, the base d_model (the paper uses 256).
    pub width: usize,
    /// `L_base`, the base number of blocks (the paper uses 2).
    pub depth: usize,
}

impl Default for BaseShape {
    fn default() -> Self {
        BaseShape {
            width: 256,
            depth: 2,
        }
    }
}

/// Hyperparameters tuned on the base shape.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaseHparams {
    /// `eta`, the peak AdamW learning rate.
    pub lr: f64,
    /// `sigma`, the standard deviation of the normal init of weight matrices.
    pub init_std: f64,
    /// `eps`, AdamW's denominator epsilon.
    pub eps: f64,
    /// `lambda`, coupled AdamW weight decay (per-step decay is `lr * lambda`).
    pub weight_decay: f64,
}

impl Default for BaseHparams {
    /// The paper's base values: `eta = 2^-8`, `sigma = 0.02`, `eps = 1e-16`, `lambda = 0`.
    fn default() -> Self {
        BaseHparams {
            lr: 2f64.powi(-8),
            init_std: 0.02,
            eps: 1e-16,
            weight_decay: 0.0,
        }
    }
}

/// Init, learning rate, weight decay and epsilon of one parameter group after scaling.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupRule {
    /// Standard deviation of the normal init; `None` for LayerNorm gains and biases (init 1 and 0),
    /// `Some(0.0)` for linear biases (init 0).
    pub init_std: Option<f64>,
    /// Peak learning rate (the schedule multiplies it).
    pub lr: f64,
    /// Coupled AdamW weight decay.
    pub weight_decay: f64,
    /// AdamW epsilon.
    pub eps: f64,
}

/// The parameter groups of Table 1, each with its own rule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Groups {
    /// Token and learned position embeddings.
    pub embedding: GroupRule,
    /// Every linear weight inside the blocks: QKV, attention output, MLP up, MLP down.
    pub hidden_weights: GroupRule,
    /// The biases of those linear layers.
    pub hidden_biases: GroupRule,
    /// Pre-LN gains and biases inside the blocks.
    pub block_norms: GroupRule,
    /// The final LayerNorm before the unembedding.
    pub final_norm: GroupRule,
    /// The (untied) unembedding matrix.
    pub unembedding: GroupRule,
}

/// Everything a parameterization decides for one target shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParamPlan {
    /// The rule applied.
    pub parameterization: Parameterization,
    /// The depth exponent, `null` for SP and muP.
    pub alpha: Option<f64>,
    /// `m_N = N / N_base`.
    pub m_n: f64,
    /// `m_L = L / L_base`.
    pub m_l: f64,
    /// Multiplier on both residual branches of every block: `h <- h + r * F(LN(h))`.
    pub residual_multiplier: f64,
    /// Multiplier on the output logits, applied in training, evaluation and generation.
    pub logits_multiplier: f64,
    /// The numeric attention logit scale.
    pub attention_scale: f64,
    /// Which rule produced `attention_scale`.
    pub attention_scale_rule: AttentionScale,
    /// Per-group init, LR, WD and eps.
    pub groups: Groups,
}

/// Everything [`plan`] needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanRequest {
    /// The rule to apply.
    pub parameterization: Parameterization,
    /// Alpha for [`Parameterization::Alpha`]; ignored otherwise.
    pub alpha: Option<f64>,
    /// Target width `N`.
    pub width: usize,
    /// Target depth `L` (blocks).
    pub depth: usize,
    /// Head dimension, for the attention scale.
    pub d_head: usize,
    /// The shape the base hyperparameters were tuned on.
    pub base: BaseShape,
    /// The tuned base hyperparameters.
    pub hparams: BaseHparams,
    /// Attention logit scale; `None` takes the parameterization's Table 1 default.
    pub attention_scale: Option<AttentionScale>,
}

/// Invalid parameterization settings. Messages say what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    #[error("unknown parameterization '{0}': use one of sp, mup, depth-mup, completep, alpha")]
    UnknownParameterization(String),
    #[error("unknown attention scale '{0}': use one of d_head, sqrt_d_head, width")]
    UnknownAttentionScale(String),
    #[error("parameterization 'alpha' needs --alpha A with A in [0.5, 1]")]
    MissingAlpha,
    #[error("alpha must be in [0.5, 1], got {0}")]
    AlphaOutOfRange(f64),
    #[error(
        "alpha {alpha} does not apply to {parameterization}: use parameterization 'alpha' to choose alpha"
    )]
    AlphaNotAdjustable {
        parameterization: &'static str,
        alpha: f64,
    },
    #[error("{name} must be a positive integer, got {value}")]
    NonPositive { name: &'static str, value: usize },
    #[error(
        "width {width} is not a multiple of d_head {d_head}: choose a width divisible by {d_head}"
    )]
    WidthNotMultipleOfHead { width: usize, d_head: usize },
    #[error("{name} must be {requirement}, got {value}")]
    BadHparam {
        name: &'static str,
        requirement: &'static str,
        value: f64,
    },
}

fn require_positive(name: &'static str, value: usize) -> Result<(), ParamError> {
    if value == 0 {
        Err(ParamError::NonPositive { name, value })
    } else {
        Ok(())
    }
}

fn require_hparam(
    name: &'static str,
    value: f64,
    requirement: &'static str,
    ok: bool,
) -> Result<(), ParamError> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(ParamError::BadHparam {
            name,
            requirement,
            value,
        })
    }
}

impl BaseHparams {
    /// Checks ranges: `lr > 0`, `init_std > 0`, `eps >= 0`, `weight_decay >= 0`, all finite.
    pub fn validate(&self) -> Result<(), ParamError> {
        require_hparam("lr", self.lr, "positive", self.lr > 0.0)?;
        require_hparam("init_std", self.init_std, "positive", self.init_std > 0.0)?;
        require_hparam("eps", self.eps, "zero or positive", self.eps >= 0.0)?;
        require_hparam(
            "weight_decay",
            self.weight_decay,
            "zero or positive",
            self.weight_decay >= 0.0,
        )
    }
}

/// Checks that a width splits into heads of `d_head`.
pub fn validate_width(width: usize, d_head: usize) -> Result<(), ParamError> {
    require_positive("width", width)?;
    require_positive("d_head", d_head)?;
    if !width.is_multiple_of(d_head) {
        return Err(ParamError::WidthNotMultipleOfHead { width, d_head });
    }
    Ok(())
}

/// Applies Table 1 (see the module docs) to one target shape.
///
/// Errors when alpha is missing or outside [0.5, 1], a size is zero, the width is not a multiple
/// of `d_head`, or a base hyperparameter is out of range.
pub fn plan(request: &PlanRequest) -> Result<ParamPlan, ParamError> {
    validate_width(request.width, request.d_head)?;
    require_positive("depth", request.depth)?;
    require_positive("base width", request.base.width)?;
    require_positive("base depth", request.base.depth)?;
    request.hparams.validate()?;
    let parameterization = request.parameterization;
    let alpha = parameterization.depth_alpha(request.alpha)?;
    let BaseHparams {
        lr: eta,
        init_std: sigma,
        eps,
        weight_decay: lambda,
    } = request.hparams;

    let m_n = request.width as f64 / request.base.width as f64;
    let m_l = request.depth as f64 / request.base.depth as f64;
    // Width factors (muP): 1 under SP.
    let (width_init, width_lr, width_wd, width_eps, logits_multiplier) =
        if parameterization.has_width_rules() {
            (m_n.powf(-0.5), 1.0 / m_n, m_n, 1.0 / m_n, 1.0 / m_n)
        } else {
            (1.0, 1.0, 1.0, 1.0, 1.0)
        };
    // Depth factors: `m_L^-alpha` on the branches and block eps, `m_L^(alpha-1)` on block LRs.
    let (residual_multiplier, depth_lr, depth_eps) = match alpha {
        Some(a) => (m_l.powf(-a), m_l.powf(a - 1.0), m_l.powf(-a)),
        None => (1.0, 1.0, 1.0),
    };

    let outside_eps = eps * width_eps;
    let block_eps = eps * width_eps * depth_eps;
    let unscaled = |init_std| GroupRule {
        init_std,
        lr: eta,
        weight_decay: 0.0,
        eps: outside_eps,
    };
    let groups = Groups {
        embedding: GroupRule {
            weight_decay: lambda,
            ..unscaled(Some(sigma))
        },
        hidden_weights: GroupRule {
            init_std: Some(sigma * width_init),
            lr: eta * width_lr * depth_lr,
            weight_decay: lambda * width_wd,
            eps: block_eps,
        },
        hidden_biases: GroupRule {
            init_std: Some(0.0),
            lr: eta * depth_lr,
            weight_decay: 0.0,
            eps: block_eps,
        },
        block_norms: GroupRule {
            init_std: None,
            lr: eta * depth_lr,
            weight_decay: 0.0,
            eps: block_eps,
        },
        final_norm: unscaled(None),
        unembedding: GroupRule {
            weight_decay: lambda,
            ..unscaled(Some(sigma))
        },
    };
    let attention_scale_rule = request
        .attention_scale
        .unwrap_or_else(|| parameterization.default_attention_scale());
    Ok(ParamPlan {
        parameterization,
        alpha,
        m_n,
        m_l,
        residual_multiplier,
        logits_multiplier,
        attention_scale: attention_scale_rule.value(request.width, request.d_head),
        attention_scale_rule,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hyperparameters whose every rule is visible: eps large so its scaling shows.
    const HP: BaseHparams = BaseHparams {
        lr: 0.01,
        init_std: 0.02,
        eps: 1e-3,
        weight_decay: 0.1,
    };

    fn request(p: Parameterization, alpha: Option<f64>, width: usize, depth: usize) -> PlanRequest {
        PlanRequest {
            parameterization: p,
            alpha,
            width,
            depth,
            d_head: 64,
            base: BaseShape::default(),
            hparams: HP,
            attention_scale: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-30)
    }

    fn assert_rule(rule: GroupRule, init: Option<f64>, lr: f64, wd: f64, eps: f64) {
        match (rule.init_std, init) {
            (Some(a), Some(b)) => assert!(close(a, b) || a == b, "init {a} != {b}"),
            (a, b) => assert_eq!(a, b),
        }
        assert!(close(rule.lr, lr), "lr {} != {lr}", rule.lr);
        assert!(
            close(rule.weight_decay, wd) || rule.weight_decay == wd,
            "wd {} != {wd}",
            rule.weight_decay
        );
        assert!(close(rule.eps, eps), "eps {} != {eps}", rule.eps);
    }

    /// The spec's worked example: N_base = 256, L_base = 2, N = 1024, L = 32 (m_N = 4, m_L = 16).
    #[test]
    fn worked_example_completep() {
        let (eta, sigma, eps, lambda) = (HP.lr, HP.init_std, HP.eps, HP.weight_decay);
        let p = plan(&request(Parameterization::CompleteP, None, 1024, 32)).unwrap();
        assert_eq!((p.m_n, p.m_l), (4.0, 16.0));
        assert!(close(p.residual_multiplier, 1.0 / 16.0));
        assert!(close(p.logits_multiplier, 0.25));
        assert!(close(p.attention_scale, 1.0 / 64.0));
        let g = p.groups;
        assert_rule(g.embedding, Some(sigma), eta, lambda, eps / 4.0);
        assert_rule(
            g.hidden_weights,
            Some(sigma / 2.0),
            eta / 4.0,
            4.0 * lambda,
            eps / 64.0,
        );
        assert_rule(g.hidden_biases, Some(0.0), eta, 0.0, eps / 64.0);
        assert_rule(g.block_norms, None, eta, 0.0, eps / 64.0);
        assert_rule(g.final_norm, None, eta, 0.0, eps / 4.0);
        assert_rule(g.unembedding, Some(sigma), eta, lambda, eps / 4.0);
    }

    #[test]
    fn worked_example_depth_mup() {
        let (eta, sigma, eps, lambda) = (HP.lr, HP.init_std, HP.eps, HP.weight_decay);
        let p = plan(&request(Parameterization::DepthMup, None, 1024, 32)).unwrap();
        assert!(close(p.residual_multiplier, 0.25));
        assert!(close(p.logits_multiplier, 0.25));
        let g = p.groups;
        assert_rule(
            g.hidden_weights,
            Some(sigma / 2.0),
            eta / 16.0,
            4.0 * lambda,
            eps / 16.0,
        );
        assert_rule(g.hidden_biases, Some(0.0), eta / 4.0, 0.0, eps / 16.0);
        assert_rule(g.block_norms, None, eta / 4.0, 0.0, eps / 16.0);
        assert_rule(g.embedding, Some(sigma), eta, lambda, eps / 4.0);
        assert_rule(g.final_norm, None, eta, 0.0, eps / 4.0);
        assert_rule(g.unembedding, Some(sigma), eta, lambda, eps / 4.0);
    }

    /// Every row of every column at several shapes, against the table written out longhand.
    #[test]
    fn every_group_at_several_shapes() {
        let (eta, sigma, eps, lambda) = (HP.lr, HP.init_std, HP.eps, HP.weight_decay);
        for (width, depth) in [(256, 2), (128, 8), (512, 4), (1024, 32), (2048, 1)] {
            let m_n = width as f64 / 256.0;
            let m_l = depth as f64 / 2.0;
            let sp = plan(&request(Parameterization::Sp, None, width, depth)).unwrap();
            assert_eq!(sp.alpha, None);
            assert_eq!((sp.residual_multiplier, sp.logits_multiplier), (1.0, 1.0));
            assert!(close(sp.attention_scale, 1.0 / 8.0));
            for rule in [sp.groups.embedding, sp.groups.unembedding] {
                assert_rule(rule, Some(sigma), eta, lambda, eps);
            }
            assert_rule(sp.groups.hidden_weights, Some(sigma), eta, lambda, eps);
            assert_rule(sp.groups.hidden_biases, Some(0.0), eta, 0.0, eps);
            assert_rule(sp.groups.block_norms, None, eta, 0.0, eps);
            assert_rule(sp.groups.final_norm, None, eta, 0.0, eps);

            let mup = plan(&request(Parameterization::Mup, None, width, depth)).unwrap();
            assert_eq!(mup.alpha, None);
            assert_eq!(mup.residual_multiplier, 1.0);
            assert!(close(mup.logits_multiplier, 1.0 / m_n));
            assert!(close(mup.attention_scale, 1.0 / 64.0));
            let g = mup.groups;
            assert_rule(g.embedding, Some(sigma), eta, lambda, eps / m_n);
            assert_rule(
                g.hidden_weights,
                Some(sigma / m_n.sqrt()),
                eta / m_n,
                lambda * m_n,
                eps / m_n,
            );
            assert_rule(g.hidden_biases, Some(0.0), eta, 0.0, eps / m_n);
            assert_rule(g.block_norms, None, eta, 0.0, eps / m_n);
            assert_rule(g.final_norm, None, eta, 0.0, eps / m_n);
            assert_rule(g.unembedding, Some(sigma), eta, lambda, eps / m_n);

            for (p, alpha) in [
                (Parameterization::DepthMup, 0.5),
                (Parameterization::CompleteP, 1.0),
                (Parameterization::Alpha, 0.75),
            ] {
                let plan = plan(&request(p, Some(alpha), width, depth)).unwrap();
                assert_eq!(plan.alpha, Some(alpha));
                assert!(close(plan.residual_multiplier, m_l.powf(-alpha)));
                assert!(close(plan.logits_multiplier, 1.0 / m_n));
                let depth_lr = m_l.powf(alpha - 1.0);
                let block_eps = eps / m_n * m_l.powf(-alpha);
                let g = plan.groups;
                assert_rule(g.embedding, Some(sigma), eta, lambda, eps / m_n);
                assert_rule(
                    g.hidden_weights,
                    Some(sigma / m_n.sqrt()),
                    eta / m_n * depth_lr,
                    lambda * m_n,
                    block_eps,
                );
                assert_rule(g.hidden_biases, Some(0.0), eta * depth_lr, 0.0, block_eps);
                assert_rule(g.block_norms, None, eta * depth_lr, 0.0, block_eps);
                assert_rule(g.final_norm, None, eta, 0.0, eps / m_n);
                assert_rule(g.unembedding, Some(sigma), eta, lambda, eps / m_n);
            }
        }
    }

    #[test]
    fn base_shape_makes_mup_family_identical() {
        let base = |p, a| {
            let mut plan = plan(&request(p, a, 256, 2)).unwrap();
            plan.parameterization = Parameterization::Mup;
            plan.alpha = None;
            plan
        };
        let mup = base(Parameterization::Mup, None);
        assert_eq!(base(Parameterization::DepthMup, None), mup);
        assert_eq!(base(Parameterization::CompleteP, None), mup);
        assert_eq!(base(Parameterization::Alpha, Some(0.7)), mup);
    }

    #[test]
    fn completep_never_scales_block_lr_with_depth() {
        for depth in [1, 2, 7, 64, 512] {
            let p = plan(&request(Parameterization::CompleteP, None, 256, depth)).unwrap();
            assert!(close(p.groups.hidden_weights.lr, HP.lr));
            assert!(close(p.groups.block_norms.lr, HP.lr));
        }
    }

    #[test]
    fn custom_base_shape_and_attention_scale() {
        let mut r = request(Parameterization::CompleteP, None, 384, 12);
        r.base = BaseShape {
            width: 128,
            depth: 3,
        };
        r.attention_scale = Some(AttentionScale::Width);
        let p = plan(&r).unwrap();
        assert_eq!((p.m_n, p.m_l), (3.0, 4.0));
        assert!(close(p.residual_multiplier, 0.25));
        assert!(close(p.attention_scale, 1.0 / 384.0));
        assert_eq!(p.attention_scale_rule, AttentionScale::Width);
    }

    #[test]
    fn bad_inputs_are_refused_with_what_to_change() {
        let bad = |r: PlanRequest| plan(&r).unwrap_err().to_string();
        assert!(bad(request(Parameterization::Sp, None, 100, 2)).contains("multiple of d_head"));
        assert!(bad(request(Parameterization::Alpha, Some(0.3), 256, 2)).contains("[0.5, 1]"));
        assert!(bad(request(Parameterization::Alpha, Some(1.2), 256, 2)).contains("[0.5, 1]"));
        assert!(bad(request(Parameterization::Alpha, None, 256, 2)).contains("--alpha"));
        assert!(bad(request(Parameterization::Sp, None, 256, 0)).contains("depth"));
        assert!(bad(request(Parameterization::CompleteP, Some(0.7), 256, 2)).contains("'alpha'"));
        assert!(plan(&request(Parameterization::CompleteP, Some(1.0), 256, 2)).is_ok());
        let mut r = request(Parameterization::Sp, None, 256, 2);
        r.hparams.lr = -1.0;
        assert!(bad(r).contains("lr must be positive"));
        r.hparams.lr = f64::NAN;
        assert!(bad(r).contains("lr"));
        assert!("mupp".parse::<Parameterization>().is_err());
        for p in Parameterization::ALL {
            assert_eq!(p.name().parse::<Parameterization>().unwrap(), p);
        }
    }
}
