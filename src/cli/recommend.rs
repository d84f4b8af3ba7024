//! `shapewise recommend`: from runs (a server's, or a CSV's) and a budget to the ranked shapes of
//! each parameterization, with predicted loss, interval and verdict.
//!
//! With `--server` it asks that server's planner (`POST /api/v1/plan/recommend`, plain HTTP);
//! with `--runs` it plans the CSV's runs here, through the same planner on a throw-away
//! database ([`crate::web::recommend_from_csv`]). Either way the answer is the planner's JSON
//! (`--json` prints it as is).

use super::UsageError;
use crate::client::{ApiClient, ClientError};
use crate::numbers::significant as sig;
use clap::Args;
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub(super) struct RecommendArgs {
    /// A shapewise server to plan from its runs, `http://HOST:PORT`.
    #[arg(long, required_unless_present = "runs", conflicts_with = "runs")]
    server: Option<String>,
    /// A CSV of runs to plan from instead (the columns of the runs export, `GET
    /// /api/v1/runs.csv`, or pandas' `params`, `tokens`, `flops`, `loss`).
    #[arg(long)]
    runs: Option<PathBuf>,
    /// With --runs: the parameterization of rows that name none.
    #[arg(long, requires = "runs")]
    parameterization: Option<String>,
    /// The server's API token (with authentication on).
    #[arg(long, env = "SHAPEWISE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// With --server: only runs with these tags (comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "sweep")]
    tags: Vec<String>,
    /// With --server: only the runs of this sweep or study.
    #[arg(long)]
    sweep: Option<i64>,
    /// The compute budget, FLOPs.
    #[arg(long, required_unless_present = "device_hours")]
    budget_flops: Option<f64>,
    /// The budget as device-hours (with --flops-per-second).
    #[arg(long, requires = "flops_per_second", conflicts_with = "budget_flops")]
    device_hours: Option<f64>,
    /// Sustained FLOP rate of one device, for --device-hours.
    #[arg(long)]
    flops_per_second: Option<f64>,
    /// Vocabulary of the target model.
    #[arg(long, default_value_t = 256)]
    vocab: u64,
    /// Context length of the target model.
    #[arg(long, default_value_t = 128)]
    context: u64,
    /// Head dimension of the target model (the planner's default when absent).
    #[arg(long)]
    d_head: Option<u64>,
    /// Deepest shape to consider.
    #[arg(long)]
    max_depth: Option<u64>,
    /// Ranked shapes shown per parameterization.
    #[arg(long, default_value_t = 5)]
    top: u64,
    /// Bootstrap resamples for the intervals (0: none).
    #[arg(long, default_value_t = 200)]
    resamples: u64,
    /// Print the planner's JSON answer.
    #[arg(long)]
    json: bool,
}

impl RecommendArgs {
    /// The planner's request body, without the selection.
    fn body(&self) -> Map<String, Value> {
        let mut body = Map::new();
        let mut put = |key: &str, value: Value| {
            body.insert(key.into(), value);
        };
        if let Some(flops) = self.budget_flops {
            put("budget_flops", json!(flops));
        }
        if let Some(hours) = self.device_hours {
            put("device_hours", json!(hours));
        }
        if let Some(rate) = self.flops_per_second {
            put("flops_per_second", json!(rate));
        }
        put("vocab", json!(self.vocab));
        put("context", json!(self.context));
        if let Some(d) = self.d_head {
            put("d_head", json!(d));
        }
        if let Some(d) = self.max_depth {
            put("max_depth", json!(d));
        }
        put("top", json!(self.top));
        put("resamples", json!(self.resamples));
        body
    }

    fn selection(&self) -> Value {
        match (self.sweep, self.tags.is_empty()) {
            (Some(id), _) => json!({"sweep_id": id}),
            (None, false) => json!({"tags": self.tags}),
            (None, true) => json!({"filters": {}}),
        }
    }
}

pub(super) fn recommend_command(args: RecommendArgs) -> Result<ExitCode, UsageError> {
    let answer = match (&args.server, &args.runs) {
        (Some(server), _) => {
            let mut body = args.body();
            body.insert("selection".into(), args.selection());
            post_json(
                server,
                "/api/v1/plan/recommend",
                args.token.as_deref(),
                &body,
            )?
        }
        (None, Some(path)) => {
            if !args.tags.is_empty() || args.sweep.is_some() {
                return Err(UsageError(
                    "--tags and --sweep select a server's runs; with --runs every row is used"
                        .into(),
                ));
            }
            let csv = std::fs::read(path)
                .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(crate::web::recommend_from_csv(
                    &csv,
                    &(args.parameterization.iter())
                        .map(|p| ("parameterization".to_string(), p.clone()))
                        .collect::<Vec<_>>(),
                    args.body(),
                ))
                .map_err(|e| UsageError(format!("{}: {e}", path.display())))?
        }
        (None, None) => return Err(UsageError("give --server URL or --runs FILE".into())),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", report(&answer));
    }
    Ok(ExitCode::SUCCESS)
}

/// `POST`s a JSON body and returns the JSON answer; a refusal is a usage error with the
/// server's reason.
fn post_json(
    server: &str,
    path: &str,
    token: Option<&str>,
    body: &Map<String, Value>,
) -> Result<Value, UsageError> {
    let mut client =
        ApiClient::new(server, token).map_err(|e| UsageError(format!("--server: {e}")))?;
    client.read_timeout = Duration::from_secs(600);
    match client.json::<Value>("POST", path, Some(body)) {
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => Err(UsageError(format!("{server} sent an empty answer"))),
        Err(ClientError::Refused { status, detail, .. }) => Err(UsageError(format!(
            "{server} refused the plan ({status}): {detail}"
        ))),
        Err(e) => Err(UsageError(e.to_string())),
    }
}

fn interval(value: &Value) -> String {
    match (value[0].as_f64(), value[1].as_f64()) {
        (Some(low), Some(high)) => format!("[{}, {}]", sig(low), sig(high)),
        _ => "—".into(),
    }
}

fn verdict(answer: &Value) -> String {
    let mut text = if answer["conclusive"] == true {
        "conclusive".to_string()
    } else {
        "INCONCLUSIVE".to_string()
    };
    for w in answer["warnings"].as_array().into_iter().flatten() {
        text.push_str(&format!("\n  - {}", w.as_str().unwrap_or_default()));
    }
    if let Some(next) = answer["next_runs"].as_str() {
        text.push_str(&format!("\n  to conclude: {next}"));
    }
    text
}

/// The planner's answer as text: per parameterization its fit, verdict and ranked shapes.
pub(crate) fn report(answer: &Value) -> String {
    let mut out = format!(
        "Budget {} FLOPs; data: {}\n",
        sig(answer["budget_flops"].as_f64().unwrap_or(f64::NAN)),
        (answer["data"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for p in answer["parameterizations"].as_array().into_iter().flatten() {
        let fit = &p["fit"];
        let num = |v: &Value| sig(v.as_f64().unwrap_or(f64::NAN));
        out.push_str(&format!(
            "\n{} (fit on {} runs: L(C) = {} + {} C^-{}; budget {}x the largest run)\n",
            p["parameterization"].as_str().unwrap_or("?"),
            p["n_runs"],
            num(&fit["E"]),
            num(&fit["A"]),
            num(&fit["b"]),
            num(&fit["extrapolation"]),
        ));
        out.push_str(&format!(
            "  verdict: {}\n",
            verdict(p).replace('\n', "\n  ")
        ));
        out.push_str(&format!(
            "  {:>4}  {:>12}  {:>9}  {:>20}  {:>8}  {:>12}  {:>12}\n",
            "rank", "width x depth", "loss", "interval", "N:L", "params", "tokens"
        ));
        for s in p["shapes"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {:>4}  {:>12}  {:>9}  {:>20}  {:>8}  {:>12}  {:>12}\n",
                s["rank"].to_string(),
                format!("{} x {}", s["width"], s["depth"]),
                num(&s["predicted_loss"]),
                interval(&s["interval"]),
                num(&s["width_depth_ratio"]),
                num(&s["params_non_embedding"]),
                num(&s["tokens"]),
            ));
        }
    }
    for r in answer["refused"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n{} ({} runs): not fitted: {}\n",
            r["parameterization"].as_str().unwrap_or("?"),
            r["n_runs"],
            r["error"].as_str().unwrap_or_default()
        ));
    }
    if let Some(note) = answer["note"].as_str() {
        out.push_str(&format!("\n{note}\n"));
    }
    out.push_str(&format!("\nPlan: {}\n", verdict(answer)));
    out
}
