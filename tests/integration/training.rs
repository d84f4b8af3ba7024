use crate::tiny_run;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use shapewise::model::ParamGroupKind;
use shapewise::param::Parameterization;
use shapewise::train::{
    Flow, MetricRow, RunConfig, RunStatus, Schedule, TrainEvent, Trainer, train,
};
use std::collections::HashMap;

fn losses(config: &RunConfig, steps: usize) -> Vec<f64> {
    let mut trainer = Trainer::new(config).unwrap();
    (0..steps).map(|_| trainer.step(false).loss).collect()
}

#[test]
fn at_the_base_shape_the_mup_family_trains_identically() {
    let mup = losses(&tiny_run(Parameterization::Mup), 4);
    assert_eq!(losses(&tiny_run(Parameterization::CompleteP), 4), mup);
    assert_eq!(losses(&tiny_run(Parameterization::DepthMup), 4), mup);
    // SP's Table 1 attention scale, 1/sqrt(d_head), makes it train differently.
    assert_ne!(losses(&tiny_run(Parameterization::Sp), 4)[1..], mup[1..]);
}

#[test]
fn training_is_deterministic_given_a_seed() {
    let config = tiny_run(Parameterization::CompleteP);
    assert_eq!(losses(&config, 3), losses(&config, 3));
    let other = RunConfig {
        seed: 1,
        ..config.clone()
    };
    assert_ne!(losses(&other, 3), losses(&config, 3));
}

#[derive(Default)]
struct Snapshot(HashMap<ParamId, Vec<f32>>);

impl ModuleVisitor for Snapshot {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.insert(
            param.id,
            param.val().into_data().try_to_vec::<f32>().unwrap(),
        );
    }
}

fn snapshot(trainer: &Trainer) -> Snapshot {
    let mut s = Snapshot::default();
    trainer.model().visit(&mut s);
    s
}

/// Adam's first update is `lr * g / (|g| + eps)`: with a tiny eps every parameter with a
/// non-zero gradient moves by exactly its group's learning rate. This checks that each group of
/// the model gets the plan's learning rate, at a shape where every depth and width rule differs.
#[test]
fn each_group_moves_by_its_planned_learning_rate() {
    for parameterization in [
        Parameterization::Sp,
        Parameterization::DepthMup,
        Parameterization::CompleteP,
    ] {
        let config = RunConfig {
            width: 128,
            depth: 4,
            base_width: 64,
            base_depth: 1,
            schedule: Schedule::Constant,
            warmup_fraction: 0.0,
            lr: 1e-3,
            eps: 1e-12,
            ..tiny_run(parameterization)
        };
        let mut trainer = Trainer::new(&config).unwrap();
        let plan = trainer.plan().clone();
        let before = snapshot(&trainer);
        trainer.step(false);
        let after = snapshot(&trainer);
        for (kind, ids) in trainer.model().param_groups() {
            let expected = match kind {
                ParamGroupKind::Embedding => plan.groups.embedding.lr,
                ParamGroupKind::HiddenWeights => plan.groups.hidden_weights.lr,
                ParamGroupKind::HiddenBiases => plan.groups.hidden_biases.lr,
                ParamGroupKind::BlockNorms => plan.groups.block_norms.lr,
                ParamGroupKind::FinalNorm => plan.groups.final_norm.lr,
                ParamGroupKind::Unembedding => plan.groups.unembedding.lr,
            };
            for id in ids {
                let moved = before.0[&id]
                    .iter()
                    .zip(&after.0[&id])
                    .map(|(a, b)| (a - b).abs() as f64)
                    .fold(0.0, f64::max);
                assert!(
                    (moved - expected).abs() < 0.02 * expected,
                    "{parameterization} {kind:?}: moved {moved}, planned lr {expected}"
                );
            }
        }
    }
}

#[test]
fn a_short_run_lowers_validation_loss_clearly() {
    let config = RunConfig {
        tokens: Some(8 * 32 * 120),
        eval_every: Some(30),
        lr: 2e-2,
        ..tiny_run(Parameterization::CompleteP)
    };
    let mut rows: Vec<MetricRow> = Vec::new();
    let summary = train(&config, &mut |event| {
        if let TrainEvent::Metric(row) = event {
            rows.push(row.clone());
        }
        Flow::Continue
    })
    .unwrap();
    assert_eq!(summary.status, RunStatus::Succeeded);
    let vals: Vec<f64> = rows.iter().filter_map(|r| r.val_loss).collect();
    let first = vals[0];
    let last = summary.final_val_loss.unwrap();
    let floor = summary.entropy_floor.unwrap();
    eprintln!("val losses {vals:?}, floor {floor}");
    assert!(
        last < (64f64).ln() - 0.8,
        "val loss {last} barely below ln(64)"
    );
    assert!(last < first - 0.2, "val loss went from {first} to {last}");
    assert!(
        last > floor,
        "val loss {last} below the entropy floor {floor}"
    );
    // Metric rows carry consistent FLOP components and token counts.
    let end = rows.last().unwrap();
    assert_eq!(end.step, summary.steps);
    assert_eq!(end.tokens, summary.tokens);
    assert!(
        (end.flops - (end.flops_dense + end.flops_unembedding + end.flops_attention)).abs() < 1.0
    );
}

#[test]
fn a_diverging_run_ends_as_diverged_with_its_metrics() {
    let config = RunConfig {
        lr: 50.0,
        tokens: Some(8 * 32 * 40),
        schedule: Schedule::Constant,
        warmup_fraction: 0.0,
        log_every: Some(1),
        ..tiny_run(Parameterization::Sp)
    };
    let mut rows = Vec::new();
    let summary = train(&config, &mut |event| {
        if let TrainEvent::Metric(row) = event {
            rows.push(row.clone());
        }
        Flow::Continue
    })
    .unwrap();
    assert_eq!(summary.status, RunStatus::Diverged);
    assert!(summary.steps < 40);
    assert_eq!(rows.len() as u64, summary.steps);
    assert_eq!(rows.last().unwrap().step, summary.steps);
}

#[test]
fn an_observer_can_cancel_between_steps() {
    let config = tiny_run(Parameterization::CompleteP);
    let summary = train(&config, &mut |event| match event {
        TrainEvent::Step { step: 3, .. } => Flow::Stop,
        _ => Flow::Continue,
    })
    .unwrap();
    assert_eq!(summary.status, RunStatus::Cancelled);
    assert_eq!(summary.steps, 3);
}
