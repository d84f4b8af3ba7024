//! The command line: `plan`, `train`, `coord-check`, `linearize`, `bench`, `serve` and `token`.
//!
//! Every user error (bad option, out-of-range value, missing file) ends with a one-line message
//! on stderr and exit code 2; clap's own usage errors use the same code.

use crate::bench::{BenchOptions, run_bench};
use crate::coord::{CoordAxis, CoordOptions, run_coord_check};
use crate::data::DataSource;
use crate::linearize::{LinearizeOptions, run_linearization};
use crate::model::{Activation, Positions};
use crate::numbers::significant;
use crate::param::{
    AttentionScale, BaseHparams, BaseShape, ParamPlan, Parameterization, PlanRequest, plan,
};
use crate::train::{
    DeviceChoice, Flow, RunConfig, RunStatus, Schedule, TrainEvent, Trainer, train_with,
};
use crate::web::ServeConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};

mod recommend;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Train GPT proxies under SP, muP, depth-muP and CompleteP, and measure how they scale.
/// Without a command, serves the API (as `shapewise serve`).
#[derive(Parser, Debug)]
#[command(
    name = "shapewise",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeConfig,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the dashboard (browser UI at http://ADDR/) and the REST API, with background
    /// training jobs (the default command).
    Serve(ServeConfig),
    /// Print the per-group hyperparameters a parameterization prescribes for a shape.
    Plan(PlanArgs),
    /// Train one proxy model.
    Train(Box<TrainArgs>),
    /// Run a coordinate check: activation sizes over depth or width during the first steps.
    CoordCheck(CoordArgs),
    /// Measure the relative distance from linearization of a block's one-step update over depth.
    Linearize(LinearizeArgs),
    /// Measure training throughput on three fixed shapes.
    Bench(BenchArgs),
    /// Train a server's queued runs on this machine: claim, train, stream metrics, repeat.
    Worker(WorkerArgs),
    /// Measure a server's headroom: many simulated workers claiming and heartbeating with metric
    /// batches at once (start the server with `--workers 0`; it queues one run per worker).
    BenchWorkers(BenchWorkersArgs),
    /// Create, list and revoke the server's API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Rank width/depth shapes for a compute budget from a server's runs or a CSV of runs,
    /// with predicted loss, interval and verdict per parameterization.
    Recommend(recommend::RecommendArgs),
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token; its secret is printed alone on the last line (shown only this once).
    Create {
        /// The server's SQLite database.
        #[arg(long, env = "SHAPEWISE_DB", default_value = "shapewise.db")]
        db: PathBuf,
        /// Who or what uses the token (recorded as the creator of its runs).
        #[arg(long)]
        name: String,
        /// reader (reads), writer (also creates, cancels, imports) or admin (also deletes and
        /// manages tokens).
        #[arg(long, value_enum)]
        role: crate::auth::Role,
    },
    /// List the tokens (never their secrets).
    List {
        /// The server's SQLite database.
        #[arg(long, env = "SHAPEWISE_DB", default_value = "shapewise.db")]
        db: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id: it authenticates nothing from now on and its sessions end.
    Revoke {
        /// The server's SQLite database.
        #[arg(long, env = "SHAPEWISE_DB", default_value = "shapewise.db")]
        db: PathBuf,
        /// The token's id (see `token list`).
        id: i64,
    },
}

#[derive(Args, Debug)]
struct PlanArgs {
    /// Parameterization: sp, mup, depth-mup, completep, alpha.
    #[arg(long = "param")]
    parameterization: Parameterization,
    /// Depth exponent for `--param alpha`, in [0.5, 1].
    #[arg(long, allow_negative_numbers = true)]
    alpha: Option<f64>,
    /// Target width N (d_model).
    #[arg(long)]
    width: usize,
    /// Target depth L (blocks).
    #[arg(long)]
    depth: usize,
    /// Base width N_base.
    #[arg(long, default_value_t = 256)]
    base_width: usize,
    /// Base depth L_base.
    #[arg(long, default_value_t = 2)]
    base_depth: usize,
    /// Base learning rate eta.
    #[arg(long, allow_negative_numbers = true, default_value_t = BaseHparams::default().lr)]
    lr: f64,
    /// Base init standard deviation sigma.
    #[arg(long, allow_negative_numbers = true, default_value_t = BaseHparams::default().init_std)]
    init_std: f64,
    /// Base AdamW epsilon.
    #[arg(long, allow_negative_numbers = true, default_value_t = BaseHparams::default().eps)]
    eps: f64,
    /// Base coupled weight decay lambda.
    #[arg(long, allow_negative_numbers = true, default_value_t = BaseHparams::default().weight_decay)]
    weight_decay: f64,
    /// Head dimension.
    #[arg(long, default_value_t = 64)]
    d_head: usize,
    /// Attention logit scale: d_head (1/d_head), sqrt_d_head (1/sqrt(d_head)) or width (1/N).
    #[arg(long)]
    attention_scale: Option<AttentionScale>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Options of a training run. Each overrides the `--config` file, which overrides the defaults.
#[derive(Args, Debug, Default)]
struct RunArgs {
    /// A TOML file with any fields of the run config (see README).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Parameterization: sp, mup, depth-mup, completep (default), alpha.
    #[arg(long = "param")]
    parameterization: Option<Parameterization>,
    /// Depth exponent for `--param alpha`, in [0.5, 1].
    #[arg(long, allow_negative_numbers = true)]
    alpha: Option<f64>,
    /// Width N [default: 128].
    #[arg(long)]
    width: Option<usize>,
    /// Depth L [default: 4].
    #[arg(long)]
    depth: Option<usize>,
    /// Head dimension [default: 64].
    #[arg(long)]
    d_head: Option<usize>,
    /// Context length [default: 128].
    #[arg(long)]
    context: Option<usize>,
    /// Model vocabulary [default: the corpus's].
    #[arg(long)]
    vocab: Option<usize>,
    /// Base width N_base [default: 256].
    #[arg(long)]
    base_width: Option<usize>,
    /// Base depth L_base [default: 2].
    #[arg(long)]
    base_depth: Option<usize>,
    /// Base peak learning rate eta [default: 2^-8].
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Base init std sigma [default: 0.02].
    #[arg(long, allow_negative_numbers = true)]
    init_std: Option<f64>,
    /// Base AdamW epsilon [default: 1e-16].
    #[arg(long, allow_negative_numbers = true)]
    eps: Option<f64>,
    /// Base coupled weight decay [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// Attention logit scale: d_head, sqrt_d_head, width [default: Table 1's].
    #[arg(long)]
    attention_scale: Option<AttentionScale>,
    /// Positions: alibi (default) or learned.
    #[arg(long)]
    positions: Option<PositionsArg>,
    /// MLP activation: relu2 (default) or gelu.
    #[arg(long)]
    activation: Option<ActivationArg>,
    /// Tie the unembedding to the token embedding.
    #[arg(long)]
    tied_embeddings: bool,
    /// No biases on the linear layers.
    #[arg(long)]
    no_biases: bool,
    /// Sequences per step [default: 16].
    #[arg(long)]
    batch: Option<usize>,
    /// Training tokens (overrides --tokens-per-param).
    #[arg(long)]
    tokens: Option<u64>,
    /// Training tokens per non-embedding parameter [default: 20].
    #[arg(long, allow_negative_numbers = true)]
    tokens_per_param: Option<f64>,
    /// Seed of init and batches [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// LR schedule after warmup: linear (default), cosine, constant.
    #[arg(long)]
    schedule: Option<ScheduleArg>,
    /// Warmup fraction of the steps [default: 0.1].
    #[arg(long, allow_negative_numbers = true)]
    warmup_fraction: Option<f64>,
    /// Clip the global gradient norm.
    #[arg(long, allow_negative_numbers = true)]
    grad_clip: Option<f64>,
    /// AdamW beta1 [default: 0.9].
    #[arg(long, allow_negative_numbers = true)]
    beta1: Option<f64>,
    /// AdamW beta2 [default: 0.95].
    #[arg(long, allow_negative_numbers = true)]
    beta2: Option<f64>,
    /// Metric row every K steps [default: about 100 rows].
    #[arg(long)]
    log_every: Option<u64>,
    /// Validation loss every K steps [default: about 10 times].
    #[arg(long)]
    eval_every: Option<u64>,
    /// Validation sequences [default: 32].
    #[arg(long)]
    val_sequences: Option<usize>,
    /// Training device: cpu (burn-flex, default), gpu (needs the `vulkan` build feature) or
    /// cpu-ndarray (needs the `ndarray` build feature).
    #[arg(long)]
    device: Option<DeviceArg>,
    /// Train on a UTF-8 text file or folder (byte tokens unless --tokenizer is given).
    #[arg(long, conflicts_with = "nanogpt")]
    text: Option<PathBuf>,
    /// Tokenize the --text data with this Hugging Face tokenizer.json (a local file; the model's
    /// vocabulary is the tokenizer's unless --vocab is larger).
    #[arg(long, requires = "text")]
    tokenizer: Option<PathBuf>,
    /// Train on nanoGPT train.bin/val.bin in this folder (needs --data-vocab).
    #[arg(long)]
    nanogpt: Option<PathBuf>,
    /// Vocabulary of the built-in corpus [default: 256] or of the nanoGPT data.
    #[arg(long)]
    data_vocab: Option<usize>,
    /// Seed of the built-in corpus's content [default: 0].
    #[arg(long)]
    corpus_seed: Option<u64>,
}

#[derive(Args, Debug)]
struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// End with one JSON line summarising the run.
    #[arg(long)]
    json: bool,
    /// Write every metric row to this file as JSON lines.
    #[arg(long)]
    metrics_out: Option<PathBuf>,
    /// After training, print this many sampled tokens (from the first validation sequence).
    #[arg(long, default_value_t = 0)]
    sample: usize,
}

#[derive(Args, Debug)]
struct CoordArgs {
    /// Vary depth (width fixed) or width (depth fixed).
    #[arg(long)]
    over: CoordAxisArg,
    /// Parameterizations to compare.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sp,mup,depth-mup,completep"
    )]
    params: Vec<Parameterization>,
    /// Depths to try (with --over depth).
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16,32,64")]
    depths: Vec<usize>,
    /// Widths to try (with --over width).
    #[arg(long, value_delimiter = ',', default_value = "64,128,256,512")]
    widths: Vec<usize>,
    /// Width when varying depth.
    #[arg(long, default_value_t = 128)]
    width: usize,
    /// Depth when varying width.
    #[arg(long, default_value_t = 2)]
    depth: usize,
    /// Training steps per model.
    #[arg(long, default_value_t = 10)]
    steps: u64,
    /// Seeds per point (averaged).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Constant base learning rate (the paper's base eta, 2^-8, by default).
    #[arg(long, allow_negative_numbers = true, default_value_t = BaseHparams::default().lr)]
    lr: f64,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Context length.
    #[arg(long, default_value_t = 64)]
    context: usize,
    /// Head dimension.
    #[arg(long, default_value_t = 32)]
    d_head: usize,
    /// Attention scale, equal across parameterizations.
    #[arg(long, default_value = "d_head")]
    attention_scale: AttentionScale,
    /// Folder for coord_check.csv, coord_check.json and coord_check.svg.
    #[arg(long, default_value = "coord-check")]
    out: PathBuf,
    /// Print the table as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct LinearizeArgs {
    /// Parameterizations to compare.
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = LinearizeOptions::default().parameterizations
    )]
    params: Vec<Parameterization>,
    /// Depths to try; the smallest is the base depth.
    #[arg(long, value_delimiter = ',', default_values_t = LinearizeOptions::default().depths)]
    depths: Vec<usize>,
    /// Width (also the base width).
    #[arg(long, default_value_t = LinearizeOptions::default().width)]
    width: usize,
    /// Seeds per depth (averaged).
    #[arg(long, default_value_t = LinearizeOptions::default().seeds)]
    seeds: u64,
    /// Base learning rate of the one AdamW step.
    #[arg(long, allow_negative_numbers = true, default_value_t = LinearizeOptions::default().lr)]
    lr: f64,
    /// Sequences in the batch.
    #[arg(long, default_value_t = LinearizeOptions::default().batch)]
    batch: usize,
    /// Context length.
    #[arg(long, default_value_t = LinearizeOptions::default().context)]
    context: usize,
    /// Head dimension.
    #[arg(long, default_value_t = LinearizeOptions::default().d_head)]
    d_head: usize,
    /// Attention scale, equal across parameterizations.
    #[arg(long, default_value = "d_head")]
    attention_scale: AttentionScale,
    /// Folder for linearize.csv and linearize.json.
    #[arg(long, default_value = "linearize")]
    out: PathBuf,
    /// Print the table as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Shapes WIDTHxDEPTH.
    #[arg(long, value_delimiter = ',', default_value = "128x4,256x4,128x16")]
    shapes: Vec<String>,
    /// Timed steps per shape.
    #[arg(long, default_value_t = 20)]
    steps: u64,
    /// Untimed warmup steps per shape.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Sequences per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Context length.
    #[arg(long, default_value_t = 128)]
    context: usize,
    /// Vocabulary.
    #[arg(long, default_value_t = 256)]
    vocab: usize,
    /// MLP activation.
    #[arg(long, default_value = "relu2")]
    activation: ActivationArg,
    /// Positions.
    #[arg(long, default_value = "alibi")]
    positions: PositionsArg,
    /// Training device.
    #[arg(long, default_value = "cpu")]
    device: DeviceArg,
    /// One JSON object per shape per line.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PositionsArg {
    Alibi,
    Learned,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ActivationArg {
    Relu2,
    Gelu,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ScheduleArg {
    Linear,
    Cosine,
    Constant,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DeviceArg {
    Cpu,
    Gpu,
    CpuNdarray,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CoordAxisArg {
    Depth,
    Width,
}

impl From<PositionsArg> for Positions {
    fn from(p: PositionsArg) -> Self {
        match p {
            PositionsArg::Alibi => Positions::Alibi,
            PositionsArg::Learned => Positions::Learned,
        }
    }
}

impl From<ActivationArg> for Activation {
    fn from(a: ActivationArg) -> Self {
        match a {
            ActivationArg::Relu2 => Activation::Relu2,
            ActivationArg::Gelu => Activation::Gelu,
        }
    }
}

impl From<DeviceArg> for DeviceChoice {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::Gpu => DeviceChoice::Gpu,
            DeviceArg::CpuNdarray => DeviceChoice::CpuNdarray,
        }
    }
}

impl From<ScheduleArg> for Schedule {
    fn from(s: ScheduleArg) -> Self {
        match s {
            ScheduleArg::Linear => Schedule::Linear,
            ScheduleArg::Cosine => Schedule::Cosine,
            ScheduleArg::Constant => Schedule::Constant,
        }
    }
}

/// A user error: printed as one line, exit code 2.
#[derive(Debug)]
struct UsageError(String);

impl<E: std::error::Error> From<E> for UsageError {
    fn from(e: E) -> Self {
        UsageError(e.to_string())
    }
}

/// Parses the command line and runs the command; returns the process exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(config) => serve_command(config),
        Command::Plan(args) => plan_command(args),
        Command::Train(args) => train_command(*args),
        Command::CoordCheck(args) => coord_command(args),
        Command::Linearize(args) => linearize_command(args),
        Command::Bench(args) => bench_command(args),
        Command::Token(command) => token_command(command),
        Command::Recommend(args) => recommend::recommend_command(args),
        Command::Worker(args) => worker_command(args),
        Command::BenchWorkers(args) => bench_workers_command(args),
    };
    match result {
        Ok(code) => code,
        Err(UsageError(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

#[derive(Args, Debug)]
struct WorkerArgs {
    /// The server, `http://HOST:PORT`.
    #[arg(long, env = "SHAPEWISE_SERVER")]
    server: String,
    /// A writer's API token (with authentication on).
    #[arg(long, env = "SHAPEWISE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The device to train on; the worker claims only runs that ask for it (`gpu` needs a
    /// build with `--features vulkan`).
    #[arg(long, env = "SHAPEWISE_DEVICE", value_enum, default_value_t = crate::web::workers::WorkerDevice::Cpu)]
    device: crate::web::workers::WorkerDevice,
    /// The name on the workers page (default: HOST-PID).
    #[arg(long, env = "SHAPEWISE_WORKER_NAME")]
    name: Option<String>,
    /// Leave after this many runs (default: run until SIGTERM).
    #[arg(long)]
    max_runs: Option<u64>,
}

#[derive(Args, Debug)]
struct BenchWorkersArgs {
    /// The server, `http://HOST:PORT` (started with `--workers 0`).
    #[arg(long, env = "SHAPEWISE_SERVER")]
    server: String,
    /// A writer's API token (with authentication on).
    #[arg(long, env = "SHAPEWISE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Simulated workers.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    workers: u64,
    /// Metric points per heartbeat (at most the server's 10,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch: u64,
    /// Seconds of heartbeats.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Milliseconds between the starts of each worker's heartbeats, phases spread evenly (0: as
    /// fast as the server answers).
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn bench_workers_command(args: BenchWorkersArgs) -> Result<ExitCode, UsageError> {
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err(UsageError("--seconds must be in (0, 3600]".into()));
    }
    let options = crate::bench::workers::HeadroomOptions {
        server: args.server,
        token: args.token,
        workers: args.workers as usize,
        batch: args.batch as usize,
        seconds: args.seconds,
        interval: std::time::Duration::from_millis(args.interval_ms),
    };
    let r = crate::bench::workers::run_headroom(&options)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} workers, {} points per heartbeat, {:.1} s\n\
             ingest:     {:.0} metric points/s ({} heartbeats)\n\
             heartbeat:  p50 {:.1} ms, p99 {:.1} ms\n\
             claim:      p50 {:.1} ms, p99 {:.1} ms ({} claims)",
            r.workers,
            r.batch,
            r.seconds,
            r.points_per_sec,
            r.heartbeats,
            r.heartbeat_p50_ms,
            r.heartbeat_p99_ms,
            r.claim_p50_ms,
            r.claim_p99_ms,
            r.claims
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn worker_command(args: WorkerArgs) -> Result<ExitCode, UsageError> {
    init_logging();
    #[cfg(not(feature = "vulkan"))]
    if args.device == crate::web::workers::WorkerDevice::Gpu {
        return Err(UsageError(
            "--device gpu needs a build with `--features vulkan`".into(),
        ));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // SIGTERM and SIGINT raise the stop flag: the run stops between two steps and is handed back.
    let signalled = stop.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            let interrupt = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut terminate) => tokio::select! {
                        _ = interrupt => {}
                        _ = terminate.recv() => {}
                    },
                    Err(_) => {
                        let _ = interrupt.await;
                    }
                }
            }
            #[cfg(not(unix))]
            let _ = interrupt.await;
            tracing::info!("stopping: handing the current run back");
            signalled.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    });
    let options = crate::worker::WorkerOptions {
        server: args.server,
        token: args.token,
        device: args.device,
        name: args.name,
        max_runs: args.max_runs,
    };
    crate::worker::run_worker(&options, stop).map_err(|e| UsageError(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

/// Log lines on stdout, `info` and above unless `RUST_LOG` says otherwise.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

fn serve_command(config: ServeConfig) -> Result<ExitCode, UsageError> {
    init_logging();
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(crate::web::serve(config));
    // A training job runs on a blocking thread that only stops between steps; waiting for it
    // would delay shutdown by up to a whole run. Its run stays `running` in the database and is
    // re-queued as `interrupted` at the next start.
    runtime.shutdown_background();
    result?;
    Ok(ExitCode::SUCCESS)
}

fn token_command(command: TokenCommand) -> Result<ExitCode, UsageError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let open = |db: PathBuf| async move {
            if !db.exists() {
                return Err(UsageError(format!(
                    "no database at {}: start the server once (shapewise serve --db {0}) or pass --db",
                    db.display()
                )));
            }
            crate::store::Store::open(&db).await.map_err(UsageError::from)
        };
        match command {
            TokenCommand::Create { db, name, role } => {
                let store = open(db).await?;
                let (token, secret) = store.create_token(&name, role).await?;
                eprintln!(
                    "created token {} '{}' with role {} (the secret is shown only this once)",
                    token.id, token.name, token.role
                );
                println!("{secret}");
            }
            TokenCommand::List { db, json } => {
                let tokens = open(db).await?.tokens().await?;
                if json {
                    println!("{}", serde_json::to_string(&tokens)?);
                } else {
                    println!("{:>4}  {:<30}  {:<6}  {:<24}  status", "id", "name", "role", "created");
                    for t in tokens {
                        let status = match &t.revoked_at {
                            Some(at) => format!("revoked {at}"),
                            None => "active".into(),
                        };
                        println!(
                            "{:>4}  {:<30}  {:<6}  {:<24}  {status}",
                            t.id, t.name, t.role, t.created_at
                        );
                    }
                }
            }
            TokenCommand::Revoke { db, id } => {
                if !open(db).await?.revoke_token(id).await? {
                    return Err(UsageError(format!("there is no token {id}")));
                }
                eprintln!("token {id} revoked");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn plan_command(args: PlanArgs) -> Result<ExitCode, UsageError> {
    let plan = plan(&PlanRequest {
        parameterization: args.parameterization,
        alpha: args.alpha,
        width: args.width,
        depth: args.depth,
        d_head: args.d_head,
        base: BaseShape {
            width: args.base_width,
            depth: args.base_depth,
        },
        hparams: BaseHparams {
            lr: args.lr,
            init_std: args.init_std,
            eps: args.eps,
            weight_decay: args.weight_decay,
        },
        attention_scale: args.attention_scale,
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).map_err(|e| UsageError(e.to_string()))?
        );
    } else {
        print!("{}", plan_table(&plan));
    }
    Ok(ExitCode::SUCCESS)
}

/// The plan as an aligned text table, three significant digits (`--json` for full precision).
pub fn plan_table(plan: &ParamPlan) -> String {
    let alpha = plan.alpha.map_or("-".to_string(), |a| a.to_string());
    let mut out = format!(
        "parameterization {}  alpha {}  m_N {}  m_L {}\nresidual multiplier {}  logits multiplier {}  attention scale {} ({})\n\n",
        plan.parameterization,
        alpha,
        plan.m_n,
        plan.m_l,
        significant(plan.residual_multiplier),
        significant(plan.logits_multiplier),
        significant(plan.attention_scale),
        plan.attention_scale_rule.name(),
    );
    out.push_str(&format!(
        "{:<16} {:>12} {:>12} {:>12} {:>12}\n",
        "group", "init_std", "lr", "weight_decay", "eps"
    ));
    let g = &plan.groups;
    for (name, rule) in [
        ("embedding", g.embedding),
        ("hidden_weights", g.hidden_weights),
        ("hidden_biases", g.hidden_biases),
        ("block_norms", g.block_norms),
        ("final_norm", g.final_norm),
        ("unembedding", g.unembedding),
    ] {
        let init = rule.init_std.map_or("1, 0 (LN)".to_string(), significant);
        out.push_str(&format!(
            "{:<16} {:>12} {:>12} {:>12} {:>12}\n",
            name,
            init,
            significant(rule.lr),
            significant(rule.weight_decay),
            significant(rule.eps)
        ));
    }
    out
}

fn run_config(args: &RunArgs) -> Result<RunConfig, UsageError> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("cannot read config {}: {e}", path.display())))?;
            toml::from_str::<RunConfig>(&text).map_err(|e| {
                UsageError(format!(
                    "invalid config {}: {}",
                    path.display(),
                    e.message()
                ))
            })?
        }
        None => RunConfig::default(),
    };
    macro_rules! set {
        ($($field:ident),*) => {
            $(if let Some(value) = args.$field.clone() {
                config.$field = value.into();
            })*
        };
    }
    macro_rules! set_optional {
        ($($field:ident),*) => {
            $(if args.$field.is_some() {
                config.$field = args.$field;
            })*
        };
    }
    if args.tokens_per_param.is_some() {
        config.tokens = None;
    }
    set!(
        parameterization,
        width,
        depth,
        d_head,
        context,
        base_width,
        base_depth,
        lr,
        init_std,
        eps,
        weight_decay,
        positions,
        activation,
        batch,
        tokens_per_param,
        seed,
        schedule,
        warmup_fraction,
        beta1,
        beta2,
        val_sequences,
        device
    );
    set_optional!(
        alpha,
        vocab,
        attention_scale,
        tokens,
        grad_clip,
        log_every,
        eval_every
    );
    config.tied_embeddings |= args.tied_embeddings;
    config.biases &= !args.no_biases;
    if let Some(path) = &args.text {
        config.data = DataSource::Text {
            path: path.clone(),
            tokenizer: args.tokenizer.clone(),
        };
    } else if let Some(dir) = &args.nanogpt {
        let vocab = args.data_vocab.ok_or_else(|| {
            UsageError(
                "--nanogpt needs --data-vocab V, the vocabulary the data was tokenized with".into(),
            )
        })?;
        config.data = DataSource::NanoGpt {
            dir: dir.clone(),
            vocab,
        };
    } else if args.data_vocab.is_some() || args.corpus_seed.is_some() {
        let (seed, vocab) = match config.data {
            DataSource::Builtin { seed, vocab } => (seed, vocab),
            _ => (0, 256),
        };
        config.data = DataSource::Builtin {
            seed: args.corpus_seed.unwrap_or(seed),
            vocab: args.data_vocab.unwrap_or(vocab),
        };
    }
    Ok(config)
}

fn train_command(args: TrainArgs) -> Result<ExitCode, UsageError> {
    let config = run_config(&args.run)?;
    let mut metrics_file = match &args.metrics_out {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| {
                UsageError(format!(
                    "cannot create metrics file {}: {e}",
                    path.display()
                ))
            })?,
        )),
        None => None,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut write_error = None;
    let mut last_val = None;
    let mut trainer = Trainer::new(&config)?;
    let summary = train_with(&mut trainer, &mut |event| {
        match event {
            TrainEvent::Started {
                total_steps,
                params_non_embedding,
                plan,
                corpus,
                entropy_floor,
            } => {
                bar.set_length(total_steps);
                let floor = entropy_floor
                    .map(|f| format!(", entropy floor {:.4} nats/token", f.nats_per_token))
                    .unwrap_or_default();
                bar.println(format!(
                    "{} {}x{} ({} non-embedding params), {} steps of {} tokens on {corpus}{floor}",
                    plan.parameterization,
                    config.width,
                    config.depth,
                    params_non_embedding,
                    total_steps,
                    config.tokens_per_step()
                ));
            }
            TrainEvent::Step {
                step, train_loss, ..
            } => {
                bar.set_position(step);
                let val = last_val
                    .map(|v: f64| format!("  val {v:.4}"))
                    .unwrap_or_default();
                bar.set_message(format!("loss {train_loss:.4}{val}"));
            }
            TrainEvent::Metric(row) => {
                if row.val_loss.is_some() {
                    last_val = row.val_loss;
                }
                if let Some(file) = metrics_file.as_mut() {
                    let line = serde_json::to_string(row).unwrap_or_default();
                    if let Err(e) = writeln!(file, "{line}") {
                        write_error = Some(e);
                        return Flow::Stop;
                    }
                }
            }
        }
        Flow::Continue
    });
    bar.finish_and_clear();
    if let Some(e) = write_error {
        return Err(UsageError(format!("cannot write metrics: {e}")));
    }
    if let Some(file) = metrics_file.as_mut() {
        file.flush()?;
    }
    let val = summary
        .final_val_loss
        .map_or("-".to_string(), |v| format!("{v:.4}"));
    let floor = summary
        .entropy_floor
        .map(|f| format!(" (entropy floor {f:.4})"))
        .unwrap_or_default();
    eprintln!(
        "{}: {} steps, train loss {:.4}, val loss {val}{floor}, {:.3e} FLOPs, {:.0} tokens/s, \
         {:.1} s",
        summary.status.name(),
        summary.steps,
        summary.final_train_loss,
        summary.flops,
        summary.tokens_per_sec,
        summary.wall_secs
    );
    if args.sample > 0 && summary.status == RunStatus::Succeeded {
        eprintln!("sample: {}", sample_text(&trainer, args.sample));
    }
    if args.json {
        let json = serde_json::json!({
            "status": summary.status,
            "final_train_loss": summary.final_train_loss,
            "final_val_loss": summary.final_val_loss,
            "tokens": summary.tokens,
            "flops": summary.flops,
            "flops_breakdown": summary.flops_breakdown,
            "params_non_embedding": summary.params_non_embedding,
            "tokens_per_sec": summary.tokens_per_sec,
            "wall_secs": summary.wall_secs,
            "steps": summary.steps,
            "entropy_floor": summary.entropy_floor,
        });
        println!("{json}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Sampling at temperature 1 after the first 16 tokens of the first validation sequence, shown
/// as text where the corpus can decode it (byte-level or tokenized text), else as token ids.
fn sample_text(trainer: &Trainer, count: usize) -> String {
    let (validation, _) = trainer.corpus().validation_set(1);
    let prompt = &validation[..validation.len().min(16)];
    let tokens = trainer.model().generate(prompt, count, 1.0, 0);
    let all: Vec<u32> = prompt.iter().chain(&tokens).copied().collect();
    trainer.corpus().decode(&all).unwrap_or_else(|| {
        let ids: Vec<String> = tokens.iter().map(u32::to_string).collect();
        ids.join(" ")
    })
}

fn coord_command(args: CoordArgs) -> Result<ExitCode, UsageError> {
    let options = CoordOptions {
        axis: match args.over {
            CoordAxisArg::Depth => CoordAxis::Depth,
            CoordAxisArg::Width => CoordAxis::Width,
        },
        parameterizations: args.params,
        depths: args.depths,
        widths: args.widths,
        width: args.width,
        depth: args.depth,
        steps: args.steps,
        seeds: args.seeds,
        lr: args.lr,
        batch: args.batch,
        context: args.context,
        d_head: args.d_head,
        attention_scale: args.attention_scale,
    };
    let bar = ProgressBar::new(options.model_count());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} models  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let table = run_coord_check(&options, &mut |label| {
        bar.set_message(label.to_string());
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    std::fs::create_dir_all(&args.out)
        .map_err(|e| UsageError(format!("cannot create {}: {e}", args.out.display())))?;
    let write = |name: &str, contents: String| {
        let path = args.out.join(name);
        std::fs::write(&path, contents)
            .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())))
    };
    write("coord_check.csv", table.to_csv())?;
    write("coord_check.json", serde_json::to_string_pretty(&table)?)?;
    write("coord_check.svg", crate::plot::coord_check_svg(&table)?)?;
    if args.json {
        println!("{}", serde_json::to_string(&table)?);
    } else {
        print!("{}", table.summary());
        println!("wrote {}/coord_check.{{csv,json,svg}}", args.out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn linearize_command(args: LinearizeArgs) -> Result<ExitCode, UsageError> {
    let options = LinearizeOptions {
        parameterizations: args.params,
        depths: args.depths,
        width: args.width,
        seeds: args.seeds,
        lr: args.lr,
        batch: args.batch,
        context: args.context,
        d_head: args.d_head,
        attention_scale: args.attention_scale,
    };
    options.validate().map_err(UsageError)?;
    let bar = ProgressBar::new(options.model_count());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} models  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let table = run_linearization(&options, &mut |label| {
        bar.set_message(label.to_string());
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    std::fs::create_dir_all(&args.out)
        .map_err(|e| UsageError(format!("cannot create {}: {e}", args.out.display())))?;
    let write = |name: &str, contents: String| {
        let path = args.out.join(name);
        std::fs::write(&path, contents)
            .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())))
    };
    write("linearize.csv", table.to_csv())?;
    write("linearize.json", serde_json::to_string_pretty(&table)?)?;
    if args.json {
        println!("{}", serde_json::to_string(&table)?);
    } else {
        print!("{}", table.summary());
        println!("wrote {}/linearize.{{csv,json}}", args.out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_command(args: BenchArgs) -> Result<ExitCode, UsageError> {
    let shapes = args
        .shapes
        .iter()
        .map(|s| {
            s.split_once('x')
                .and_then(|(w, d)| Some((w.parse().ok()?, d.parse().ok()?)))
                .ok_or_else(|| UsageError(format!("shape '{s}' is not WIDTHxDEPTH, e.g. 128x4")))
        })
        .collect::<Result<Vec<(usize, usize)>, _>>()?;
    let options = BenchOptions {
        shapes,
        steps: args.steps,
        warmup: args.warmup,
        batch: args.batch,
        context: args.context,
        vocab: args.vocab,
        activation: args.activation.into(),
        positions: args.positions.into(),
        device: args.device.into(),
    };
    let results = run_bench(&options, &mut |result| {
        if args.json {
            println!("{}", serde_json::to_string(result).unwrap_or_default());
        } else {
            println!(
                "{:>8}  {:>10.0} tokens/s  {:>8.2} GFLOP/s  median step {:.4} s",
                result.shape, result.tokens_per_sec, result.gflops_per_sec, result.median_step_secs
            );
        }
    })?;
    if results.is_empty() {
        return Err(UsageError("no shapes to benchmark".into()));
    }
    Ok(ExitCode::SUCCESS)
}
