//! Training throughput: the same protocol as `bench/torch_reference.py`, so the two print
//! comparable JSON lines.
//!
//! Per shape: build the model, run `warmup` untimed steps (first-touch allocation, kernel
//! selection), then time `steps` full training steps (batch preparation, forward, backward,
//! AdamW update, loss read back). Reported: the median step time, tokens/s
//! `= batch * context / median`, and achieved GFLOP/s `= C_step / median / 1e9` with the training
//! FLOPs of one step from [`crate::flops`].

pub mod workers;

use crate::data::DataSource;
use crate::flops::FlopBreakdown;
use crate::model::{Activation, Positions};
use crate::param::Parameterization;
use crate::train::{DeviceChoice, RunConfig, Schedule, TrainError, Trainer};
use serde::Serialize;
use std::time::Instant;

/// What to benchmark.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOptions {
    /// `(width, depth)` pairs.
    pub shapes: Vec<(usize, usize)>,
    pub steps: u64,
    pub warmup: u64,
    pub batch: usize,
    pub context: usize,
    pub vocab: usize,
    pub activation: Activation,
    pub positions: Positions,
    pub device: DeviceChoice,
}

/// One shape's measurement, in the JSON fields `bench/torch_reference.py` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchResult {
    #[serde(rename = "impl")]
    pub implementation: &'static str,
    pub shape: String,
    pub width: usize,
    pub depth: usize,
    pub batch: usize,
    pub context: usize,
    pub vocab: usize,
    pub steps: u64,
    pub median_step_secs: f64,
    pub tokens_per_sec: f64,
    pub gflops_per_sec: f64,
    pub params_non_embedding: u64,
    pub threads: usize,
    pub device: DeviceChoice,
}

/// The median of a non-empty sample.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// Benchmarks every shape in turn, reporting each result as soon as it is measured.
pub fn run_bench(
    options: &BenchOptions,
    report: &mut dyn FnMut(&BenchResult),
) -> Result<Vec<BenchResult>, TrainError> {
    if options.steps == 0 {
        return Err(TrainError::Config(
            "bench needs at least one timed step".into(),
        ));
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut results = Vec::new();
    for &(width, depth) in &options.shapes {
        let config = RunConfig {
            parameterization: Parameterization::CompleteP,
            width,
            depth,
            batch: options.batch,
            context: options.context,
            activation: options.activation,
            positions: options.positions,
            device: options.device,
            lr: 1e-3,
            schedule: Schedule::Constant,
            warmup_fraction: 0.0,
            tokens: Some(
                (options.warmup + options.steps) * (options.batch * options.context) as u64,
            ),
            data: DataSource::Builtin {
                seed: 0,
                vocab: options.vocab,
            },
            ..RunConfig::default()
        };
        let mut trainer = Trainer::new(&config)?;
        for _ in 0..options.warmup {
            trainer.step(false);
        }
        let mut times: Vec<f64> = (0..options.steps)
            .map(|_| {
                let started = Instant::now();
                trainer.step(false);
                started.elapsed().as_secs_f64()
            })
            .collect();
        let median_step_secs = median(&mut times);
        let tokens = config.tokens_per_step();
        let flops =
            FlopBreakdown::for_tokens(width, depth, options.context, options.vocab, true, tokens);
        let result = BenchResult {
            implementation: "shapewise",
            shape: format!("{width}x{depth}"),
            width,
            depth,
            batch: options.batch,
            context: options.context,
            vocab: options.vocab,
            steps: options.steps,
            median_step_secs,
            tokens_per_sec: tokens as f64 / median_step_secs,
            gflops_per_sec: flops.total() / median_step_secs / 1e9,
            params_non_embedding: config.params_non_embedding(),
            threads,
            device: options.device,
        };
        report(&result);
        results.push(result);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
