use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn shapewise(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shapewise"))
        .args(args)
        .output()
        .expect("the shapewise binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn plan_json_has_every_group_after_scaling() {
    let out = shapewise(&[
        "plan",
        "--param",
        "completep",
        "--width",
        "1024",
        "--depth",
        "32",
        "--base-width",
        "256",
        "--base-depth",
        "2",
        "--lr",
        "0.01",
        "--init-std",
        "0.02",
        "--eps",
        "0.001",
        "--weight-decay",
        "0.1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["parameterization"], "completep");
    assert_eq!(plan["alpha"], 1.0);
    assert_eq!(plan["m_n"], 4.0);
    assert_eq!(plan["m_l"], 16.0);
    assert_eq!(plan["residual_multiplier"], 1.0 / 16.0);
    assert_eq!(plan["logits_multiplier"], 0.25);
    assert_eq!(plan["attention_scale"], 1.0 / 64.0);
    let g = &plan["groups"];
    let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-12 * x.abs().max(1e-12);
    assert!(close(&g["hidden_weights"]["init_std"], 0.01));
    assert!(close(&g["hidden_weights"]["lr"], 0.0025));
    assert!(close(&g["hidden_weights"]["weight_decay"], 0.4));
    assert!(close(&g["hidden_weights"]["eps"], 0.001 / 64.0));
    assert!(close(&g["block_norms"]["lr"], 0.01));
    assert!(g["block_norms"]["init_std"].is_null());
    assert!(g["final_norm"]["init_std"].is_null());
    assert_eq!(g["hidden_biases"]["init_std"], 0.0);
    assert!(close(&g["embedding"]["eps"], 0.001 / 4.0));
    assert!(close(&g["unembedding"]["weight_decay"], 0.1));
    for group in [
        "embedding",
        "hidden_weights",
        "hidden_biases",
        "block_norms",
        "final_norm",
        "unembedding",
    ] {
        for field in ["init_std", "lr", "weight_decay", "eps"] {
            assert!(g[group].get(field).is_some(), "{group}.{field} missing");
        }
    }

    let table = shapewise(&["plan", "--param", "sp", "--width", "512", "--depth", "8"]);
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).contains("hidden_weights"));
}

#[test]
fn train_prints_a_json_summary_and_writes_metrics() {
    let dir = std::env::temp_dir().join(format!("shapewise-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let metrics = dir.join("metrics.jsonl");
    let out = shapewise(&[
        "train",
        "--width",
        "64",
        "--depth",
        "1",
        "--d-head",
        "32",
        "--context",
        "16",
        "--batch",
        "4",
        "--tokens",
        "640",
        "--data-vocab",
        "32",
        "--json",
        "--metrics-out",
        metrics.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["status"], "succeeded");
    assert_eq!(summary["tokens"], 640);
    // The summary on stderr names the entropy floor even without a terminal.
    let floor = summary["entropy_floor"].as_f64().unwrap();
    assert!(
        stderr(&out).contains(&format!("(entropy floor {floor:.4})")),
        "{}",
        stderr(&out)
    );
    for key in [
        "final_train_loss",
        "final_val_loss",
        "flops",
        "params_non_embedding",
        "tokens_per_sec",
        "wall_secs",
    ] {
        assert!(summary[key].is_number(), "{key} missing in {summary}");
    }
    let rows: Vec<Value> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.last().unwrap()["step"], 10);
    assert!(
        rows.iter()
            .all(|r| r["train_loss"].is_number() && r["flops"].is_number())
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn train_tokenizes_text_with_a_hugging_face_tokenizer() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let (corpus, tokenizer) = (data.join("corpus.txt"), data.join("tokenizer.json"));
    let out = shapewise(&[
        "train",
        "--width",
        "64",
        "--depth",
        "1",
        "--d-head",
        "32",
        "--context",
        "16",
        "--batch",
        "4",
        "--tokens",
        "640",
        "--text",
        corpus.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--sample",
        "8",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["status"], "succeeded");
    assert_eq!(summary["tokens"], 640);
    // The vocabulary is the tokenizer's (unembedding FLOPs 6 D N V with V = 320), real text
    // has no known entropy floor, and the sample is decoded text.
    assert_eq!(
        summary["flops_breakdown"]["unembedding"],
        6.0 * 640.0 * 64.0 * 320.0
    );
    assert!(summary["entropy_floor"].is_null(), "{summary}");
    let err = stderr(&out);
    assert!(!err.contains("entropy floor"), "{err}");
    assert!(err.contains("sample: .\nThe planner reads the fi"), "{err}");
}

/// Every bad input ends with one line naming what to change and exit code 2, never a panic.
#[test]
fn bad_inputs_exit_2_with_a_one_line_message() {
    let dir = std::env::temp_dir().join(format!("shapewise-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("train.bin"), [1u8, 0, 44, 1]).unwrap();
    std::fs::write(dir.join("val.bin"), [1u8, 0, 2, 0]).unwrap();
    let nanogpt = dir.to_str().unwrap();
    let corpus_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus.txt");
    let corpus = corpus_path.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["plan", "--param", "mup", "--width", "100", "--depth", "2"],
            "multiple of d_head",
        ),
        (
            vec![
                "plan", "--param", "alpha", "--alpha", "0.2", "--width", "256", "--depth", "2",
            ],
            "[0.5, 1]",
        ),
        (
            vec![
                "plan", "--param", "nonsense", "--width", "256", "--depth", "2",
            ],
            "nonsense",
        ),
        (vec!["train", "--width", "100"], "multiple of d_head"),
        (
            vec!["train", "--param", "alpha", "--alpha", "1.5"],
            "[0.5, 1]",
        ),
        (
            vec!["train", "--tokens", "0"],
            "'tokens' must be an integer from 1",
        ),
        (vec!["train", "--tokens-per-param", "-1"], "budget"),
        (
            vec!["train", "--text", "/no/such/file.txt"],
            "/no/such/file.txt",
        ),
        (
            vec!["train", "--nanogpt", nanogpt, "--data-vocab", "256"],
            "vocab",
        ),
        (vec!["train", "--nanogpt", nanogpt], "--data-vocab"),
        (
            vec!["train", "--data-vocab", "64", "--vocab", "32"],
            "vocab",
        ),
        (vec!["train", "--lr", "-0.1"], "lr"),
        (vec!["train", "--no-such-option"], "--no-such-option"),
        (vec!["train", "--config", "/no/such/run.toml"], "run.toml"),
        (vec!["train", "--tokenizer", "tokenizer.json"], "--text"),
        (
            vec![
                "train",
                "--text",
                corpus,
                "--tokenizer",
                "/no/such/tokenizer.json",
            ],
            "/no/such/tokenizer.json",
        ),
        (vec!["bench", "--shapes", "12by4"], "WIDTHxDEPTH"),
    ];
    for (args, needle) in cases {
        let out = shapewise(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: '{err}' lacks '{needle}'");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_toml_config_sets_the_run_and_unknown_fields_are_refused() {
    let dir = std::env::temp_dir().join(format!("shapewise-toml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("run.toml");
    std::fs::write(
        &good,
        "parameterization = \"mup\"\nwidth = 64\ndepth = 1\nd_head = 32\ncontext = 16\nbatch = 2\ntokens = 96\n[data]\nkind = \"builtin\"\nseed = 3\nvocab = 32\n",
    )
    .unwrap();
    let out = shapewise(&["train", "--config", good.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["tokens"], 96);
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "widht = 64\n").unwrap();
    let out = shapewise(&["train", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("widht"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn recommend_ranks_shapes_from_a_csv_and_refuses_bad_input_with_exit_2() {
    let csv = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/chinchilla_approach3.csv"
    );
    let base = [
        "recommend",
        "--runs",
        csv,
        "--parameterization",
        "sp",
        "--budget-flops",
        "1e22",
        "--vocab",
        "32000",
        "--context",
        "2048",
        "--top",
        "3",
        "--resamples",
        "20",
    ];
    let text = shapewise(&base);
    assert!(text.status.success(), "{}", stderr(&text));
    let out = String::from_utf8(text.stdout).unwrap();
    assert!(out.contains("sp (fit on 245 runs: L(C) = 1.8"), "{out}");
    assert!(out.contains("rank  width x depth"), "{out}");
    assert!(out.contains("Plan: conclusive"), "{out}");

    // --json: the planner's answer, three ranked shapes, each with an interval.
    let json = shapewise(&[&base[..], &["--json"]].concat());
    assert!(json.status.success(), "{}", stderr(&json));
    let answer: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let plan = &answer["parameterizations"][0];
    assert_eq!(plan["parameterization"], "sp");
    assert_eq!(plan["shapes"].as_array().unwrap().len(), 3);
    let loss = plan["shapes"][0]["predicted_loss"].as_f64().unwrap();
    let [low, high] = [0, 1].map(|i| plan["shapes"][0]["interval"][i].as_f64().unwrap());
    assert!(low <= loss && loss <= high, "{plan}");

    // Refusals: exit 2 with the reason.
    for (args, reason) in [
        (
            vec!["recommend", "--runs", csv, "--budget-flops", "1e22"],
            "missing field 'parameterization'",
        ),
        (
            vec![
                "recommend",
                "--runs",
                "/nonexistent.csv",
                "--budget-flops",
                "1e22",
            ],
            "cannot read",
        ),
        (
            vec![
                "recommend",
                "--runs",
                csv,
                "--parameterization",
                "sp",
                "--budget-flops=-1",
            ],
            "budget",
        ),
        (
            vec![
                "recommend",
                "--server",
                "https://example.org",
                "--budget-flops",
                "1e22",
            ],
            "http:// URL",
        ),
        (
            vec![
                "recommend",
                "--server",
                "http://127.0.0.1:1",
                "--budget-flops",
                "1e22",
            ],
            "cannot reach",
        ),
    ] {
        let output = shapewise(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(reason),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}
