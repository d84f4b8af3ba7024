//! Integration tests: real (tiny) burn training on the built-in corpus, and the real binary.

mod admission;
mod analysis;
mod api;
mod cli;
mod compose;
mod coord;
mod deploy;
mod diagnostics;
mod fits;
mod mlflow;
mod openapi;
mod pages;
mod planner;
mod robustness;
mod security;
mod studies;
mod training;
mod verdicts;
mod workers;

use shapewise::data::DataSource;
use shapewise::param::Parameterization;
use shapewise::train::{RunConfig, Schedule};

/// A model small enough to train in well under a second per step in a debug build.
pub fn tiny_run(parameterization: Parameterization) -> RunConfig {
    RunConfig {
        parameterization,
        width: 64,
        depth: 2,
        d_head: 32,
        context: 32,
        batch: 8,
        base_width: 64,
        base_depth: 2,
        lr: 1e-2,
        tokens: Some(8 * 32 * 20),
        schedule: Schedule::Linear,
        val_sequences: 16,
        data: DataSource::Builtin { seed: 0, vocab: 64 },
        ..RunConfig::default()
    }
}
