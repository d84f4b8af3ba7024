//! shapewise: width/depth planning for language models with CompleteP.
//!
//! The library trains small GPT proxies under SP, muP, depth-muP and CompleteP
//! (Dey et al. 2025, arXiv 2505.01618) and measures them. Modules by domain:
//!
//! - [`auth`]: tokens, roles and browser sessions;
//! - [`param`]: Table 1, the per-group scaling rules (pure arithmetic);
//! - [`flops`]: parameter and FLOP counts (pure arithmetic);
//! - [`fit`]: scaling-law fits (loss against compute, the Chinchilla surface), bootstrap
//!   intervals and FLOP savings (pure arithmetic);
//! - [`data`]: the built-in corpus, text and nanoGPT corpora, batches and the validation set;
//! - [`model`]: the GPT in burn with the plan's multipliers;
//! - [`train`]: the training loop, per-group AdamW, schedules, metrics, divergence;
//! - [`coord`]: coordinate checks over depth and width;
//! - [`limits`]: bounds on sizes and the peak-memory estimate behind admission control;
//! - [`linearize`]: the relative distance from linearization over depth;
//! - [`verdict`]: whether the runs support an answer (inconclusive, warnings, what to run next);
//! - [`plan`]: the planner, from a compute budget to recommended shapes (pure arithmetic);
//! - [`study`]: one-click studies, their run sets and run-time estimates;
//! - [`bench`](mod@bench): training throughput benchmark;
//! - [`plot`]: SVG figures;
//! - [`numbers`]: how numbers are written (three significant digits);
//! - [`store`]: SQLite storage of runs, metrics and jobs;
//! - [`jobs`]: the background training queue;
//! - [`web`]: the HTTP API;
//! - [`cli`]: the command line.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bench;
pub mod cli;
pub mod client;
pub mod coord;
pub mod data;
pub mod fit;
pub mod flops;
pub mod jobs;
pub mod limits;
pub mod linearize;
pub mod model;
pub mod numbers;
pub mod param;
pub mod plan;
pub mod plot;
pub mod rng;
pub mod store;
pub mod study;
pub mod train;
pub mod verdict;
pub mod web;
pub mod worker;
