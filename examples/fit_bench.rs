//! Fit benchmark: `L(C) = E + A C^-b` plus a 1000-resample bootstrap on 1,000 runs; the
//! frontier fit with a shared `E` of two parameterizations of 1,000 runs each (20 compute scales,
//! 50 shapes per scale) plus a 200-resample bootstrap, as the analysis and planner pages run it;
//! and the Chinchilla surface (Epoch's 4,500-start grid) plus its bootstrap on the 240 reference
//! runs.
//!
//! ```sh
//! cargo run --release --example fit_bench
//! ```
//!
//! Each measurement is repeated 5 times; the median wall time is printed.

use shapewise::fit::frontier::bootstrap_frontiers;
use shapewise::fit::{BootstrapOptions, FitOptions, bootstrap_chinchilla, bootstrap_power_law};
use shapewise::rng::SplitMix64;
use std::time::Instant;

const CHINCHILLA_CSV: &str = include_str!("../tests/data/chinchilla_approach3.csv");

fn median_secs(mut run: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[2]
}

fn main() {
    // 1,000 runs from a planted law over four decades of compute, with 1% lognormal-ish noise.
    let mut rng = SplitMix64::new(1);
    let points: Vec<(f64, f64)> = (0..1000)
        .map(|i| {
            let compute = 10f64.powf(15.0 + 4.0 * i as f64 / 999.0);
            let noise = 1.0 + 0.01 * (rng.next_f64() - 0.5) * 2.0;
            (compute, (1.8 + 2.0e3 * compute.powf(-0.2)) * noise)
        })
        .collect();
    let options = FitOptions::default();
    let bootstrap = BootstrapOptions::default();
    let secs = median_secs(|| {
        bootstrap_power_law(&points, &bootstrap, &options).expect("power-law fit");
    });
    println!(
        "L(C) fit + {}-resample bootstrap on {} runs: {secs:.3} s (median of 5)",
        bootstrap.resamples,
        points.len()
    );

    // Two parameterizations, 20 compute scales over four decades, 50 shapes per scale (each up
    // to 5% worse than the best), 0.5% noise.
    let groups: Vec<Vec<(f64, f64)>> = [2.0e3, 1.6e3]
        .iter()
        .map(|&a| {
            (0..1000)
                .map(|i| {
                    let compute = 10f64.powf(15.0 + 4.0 * (i / 50) as f64 / 19.0);
                    let shape = 1.0 + 0.05 * (i % 50) as f64 / 49.0;
                    let noise = 1.0 + 0.005 * (rng.next_f64() - 0.5) * 2.0;
                    (compute, (1.8 + a * compute.powf(-0.2)) * shape * noise)
                })
                .collect()
        })
        .collect();
    let slices: Vec<&[(f64, f64)]> = groups.iter().map(Vec::as_slice).collect();
    let frontier_bootstrap = BootstrapOptions {
        resamples: 200,
        ..bootstrap
    };
    let secs = median_secs(|| {
        bootstrap_frontiers(&slices, 1.5, &frontier_bootstrap).expect("frontier fit");
    });
    println!(
        "frontier fit, shared E, 2 x 1,000 runs + 200-resample bootstrap: {secs:.3} s (median of 5)"
    );

    // The Chinchilla runs without the five highest losses, as Epoch AI fitted them.
    let mut runs: Vec<(f64, f64, f64)> = CHINCHILLA_CSV
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cells = line.split(',').map(|c| c.parse::<f64>().ok());
            let (n, flops, loss) = (cells.next()??, cells.next()??, cells.next()??);
            Some((n, flops / (6.0 * n), loss))
        })
        .collect();
    runs.sort_by(|a, b| a.2.total_cmp(&b.2));
    runs.truncate(runs.len() - 5);
    let secs = median_secs(|| {
        bootstrap_chinchilla(&runs, &bootstrap, &options).expect("Chinchilla fit");
    });
    println!(
        "Chinchilla fit (4,500 starts) + {}-resample bootstrap on {} runs: {secs:.3} s (median of 5)",
        bootstrap.resamples,
        runs.len()
    );
}
