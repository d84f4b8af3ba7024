#!/usr/bin/env python3
"""shapewise from a notebook: launch a sweep, watch it, analyse it with pandas, import a run
trained elsewhere and stream its metrics.

Runs top to bottom as a script (CI runs it against a fresh server, see .ci/notebook.sh), or cell
by cell (`# %%` markers) in Jupyter, VS Code or any editor that knows them. It needs only
`requests` and `pandas`:

    python3 -m pip install requests pandas
    shapewise serve &                       # or: cargo run --release -- serve
    python3 examples/notebook.py --url http://127.0.0.1:8080

Every unexpected answer raises, so the script exits non-zero; its last line is `notebook: OK`.
"""

# %% Setup: where the server is, and one helper for every request
import argparse
import io
import math
import os
import time

import pandas as pd
import requests

parser = argparse.ArgumentParser(description="shapewise from a notebook: a sweep, pandas, imports")
parser.add_argument(
    "--url",
    default=os.environ.get("SHAPEWISE_URL", "http://127.0.0.1:8080"),
    help="base URL of a shapewise server (default: $SHAPEWISE_URL or http://127.0.0.1:8080)",
)
parser.add_argument(
    "--timeout",
    type=float,
    default=float(os.environ.get("SHAPEWISE_TIMEOUT", "300")),
    help="seconds to wait for the sweep to finish (default 300)",
)
# parse_known_args: a Jupyter kernel passes its own arguments (-f kernel.json).
args, _ = parser.parse_known_args()
BASE = args.url.rstrip("/")
API = BASE + "/api/v1"
session = requests.Session()
# A server with authentication on needs a token (`shapewise token create ...`).
if os.environ.get("SHAPEWISE_TOKEN"):
    session.headers["Authorization"] = "Bearer " + os.environ["SHAPEWISE_TOKEN"]


class ApiError(RuntimeError):
    """The server answered something this notebook did not expect."""


def api(method, path, expect=200, **kwargs):
    """Calls `API + path` and returns the decoded JSON (or text for CSV); raises on any other status.

    Errors from shapewise are JSON `{"error": kind, "detail": message}`: show the detail.
    """
    response = session.request(method, API + path, timeout=30, **kwargs)
    if response.status_code != expect:
        try:
            body = response.json()
            detail = f"{body.get('error')}: {body.get('detail')}"
        except ValueError:
            detail = response.text[:500]
        raise ApiError(
            f"{method} {path}: expected HTTP {expect}, got {response.status_code} ({detail})"
        )
    if response.headers.get("content-type", "").startswith("text/csv"):
        return response.text
    return response.json() if response.content else None


def check(condition, message):
    """An assertion that survives `python -O`: the notebook doubles as a CI test."""
    if not condition:
        raise AssertionError(message)


health = session.get(BASE + "/healthz", timeout=10)
check(health.status_code == 200, f"{BASE}/healthz answered {health.status_code}")
print(f"server: {BASE} is up")
pd.set_option("display.width", 120)

# %% (a) Launch a sweep: muP vs CompleteP at depths 1 and 2, on the built-in corpus
#
# A sweep is a grid (parameterizations x widths x depths x lrs x seeds); everything in `config`
# is shared by all its runs. These runs are tiny (30 steps of 8 x 32 tokens) so the whole grid
# trains in seconds on two CPU cores. The base shape is the smallest model: hyperparameters tuned
# at width 64, depth 1 transfer to the others through each parameterization's rules.
CONTEXT, BATCH, STEPS = 32, 8, 30
sweep_spec = {
    "name": f"notebook depth transfer {time.strftime('%Y-%m-%d %H:%M:%S')}",
    "parameterizations": ["mup", "completep"],
    "widths": [64],
    "depths": [1, 2],
    "lrs": [0.01],
    "seeds": [0],
    "tags": ["notebook"],
    "config": {
        "d_head": 32,
        "context": CONTEXT,
        "batch": BATCH,
        "tokens": BATCH * CONTEXT * STEPS,
        "base_width": 64,
        "base_depth": 1,
        "data": {"kind": "builtin", "seed": 0, "vocab": 256},
    },
}
created = api("POST", "/sweeps", expect=201, json=sweep_spec)
sweep_id = created["sweep"]["id"]
run_ids = created["run_ids"]
check(len(run_ids) == 4, f"a 2 x 1 x 2 x 1 x 1 grid should queue 4 runs, got {run_ids}")
print(f"sweep {sweep_id}: queued runs {run_ids}")

# A grid point the trainer would refuse is refused up front, with the reason in `detail`
# (here: width 100 is not a multiple of d_head 32), and nothing is queued.
try:
    api("POST", "/sweeps", expect=201, json={**sweep_spec, "widths": [100]})
    raise AssertionError("a sweep with width 100 and d_head 32 was accepted")
except ApiError as refused:
    check("422" in str(refused) and "d_head" in str(refused), f"unexpected refusal: {refused}")
    print(f"refused as expected: {refused}")

# %% (b) Poll the sweep until every run has finished
started = time.monotonic()
last_line = None
while True:
    sweep = api("GET", f"/sweeps/{sweep_id}")
    progress = sweep["progress"]
    elapsed = time.monotonic() - started
    bar = "#" * round(20 * progress["fraction_done"])
    line = (
        f"sweep {sweep_id} [{bar:<20}] {progress['finished']}/{progress['total']} finished, "
        f"{progress['running']} running, {progress['queued']} queued"
    )
    if line != last_line:  # one line per change, not one per poll
        print(f"[{elapsed:6.1f}s] {line}", flush=True)
        last_line = line
    if progress["finished"] == progress["total"]:
        break
    if elapsed > args.timeout:
        raise TimeoutError(
            f"sweep {sweep_id} did not finish within {args.timeout:.0f}s: {progress}"
        )
    time.sleep(0.5)

statuses = {run["id"]: run["status"] for run in sweep["runs"]}
check(
    progress["succeeded"] == progress["total"] == 4,
    f"every run should succeed: {statuses}, errors "
    f"{[run.get('error') for run in sweep['runs'] if run['status'] != 'succeeded']}",
)
print(f"sweep {sweep_id}: all {progress['total']} runs succeeded in {elapsed:.1f}s")

# The runs list takes the same filters as columns: `?sweep_id=..&status=..`, `in:`, `ge:`, ...
listed = api("GET", "/runs", params={"sweep_id": sweep_id, "status": "succeeded", "sort": "id"})
check(listed["total"] == 4, f"runs list filtered by sweep: {listed['total']} runs")
check([r["id"] for r in listed["runs"]] == sorted(run_ids), "runs list order or ids")

# %% (c) Every run's metrics in one DataFrame (JSON endpoint)
runs = pd.DataFrame(listed["runs"]).set_index("id")
frames = []
for run_id, run in runs.iterrows():
    points = api("GET", f"/runs/{run_id}/metrics")["points"]
    check(len(points) > 0, f"run {run_id} has no metrics")
    frame = pd.DataFrame(points)
    frame["run_id"] = run_id
    frame["parameterization"] = run["parameterization"]
    frame["depth"] = run["depth"]
    frames.append(frame)
metrics = pd.concat(frames, ignore_index=True)
print(f"\nmetrics (JSON): {len(metrics)} rows from {metrics['run_id'].nunique()} runs")
print(metrics[["run_id", "parameterization", "depth", "step", "tokens", "train_loss", "val_loss"]].tail(3))
check(
    (metrics.groupby("run_id")["step"].max() == STEPS).all(),
    f"every run should end at step {STEPS}",
)

# %% (c, continued) The same data from the CSV exports, straight into pandas
runs_csv = pd.read_csv(
    io.StringIO(api("GET", "/runs.csv", params={"sweep_id": sweep_id, "sort": "id"}))
)
check(list(runs_csv["id"]) == sorted(run_ids), f"runs.csv ids: {list(runs_csv['id'])}")
check((runs_csv["status"] == "succeeded").all(), "runs.csv statuses")
metrics_csv = pd.concat(
    [pd.read_csv(io.StringIO(api("GET", f"/runs/{run_id}/metrics.csv"))) for run_id in run_ids],
    ignore_index=True,
)
check(len(metrics_csv) == len(metrics), f"CSV has {len(metrics_csv)} rows, JSON {len(metrics)}")
joined = metrics.merge(metrics_csv, on=["run_id", "step"], suffixes=("_json", "_csv"))
check(len(joined) == len(metrics), "CSV and JSON should hold the same (run, step) points")
check(
    ((joined["train_loss_json"] - joined["train_loss_csv"]).abs() < 1e-9).all(),
    "CSV and JSON training losses differ",
)
print(f"metrics (CSV): {len(metrics_csv)} rows, identical to the JSON ones")

# %% (c, summary) Final validation loss per parameterization and depth
#
# The run's `final_val_loss` column, next to the last evaluated point of each curve.
last_val = (
    metrics.dropna(subset=["val_loss"]).sort_values("step").groupby("run_id")["val_loss"].last()
)
runs_csv["last_curve_val_loss"] = runs_csv["id"].map(last_val)
summary = runs_csv.pivot_table(
    index="parameterization", columns="depth", values="final_val_loss", aggfunc="mean"
)
summary.columns = [f"depth {d}" for d in summary.columns]
print("\nfinal validation loss (nats/token):")
print(summary.round(4).to_string())
print(
    runs_csv[["id", "parameterization", "depth", "tokens", "flops", "final_val_loss", "tokens_per_sec"]]
    .to_string(index=False)
)
uniform = math.log(256)
check(
    runs_csv["final_val_loss"].between(0, uniform).all(),
    f"every run should beat the uniform loss ln(256) = {uniform:.3f}",
)
check(summary.shape == (2, 2) and summary.notna().all().all(), "summary table shape")
# At the base depth (m_L = 1) CompleteP's depth rules are all 1, so it trains exactly like muP:
# same seed, same plan, same losses. They part ways only once the model is deeper than its base.
check(
    abs(summary.loc["mup", "depth 1"] - summary.loc["completep", "depth 1"]) < 1e-6,
    f"muP and CompleteP should agree at the base depth:\n{summary}",
)

# %% (d) Import a run trained elsewhere (say, PyTorch), giving FLOPs only
#
# shapewise counts tokens as flops / (6 params) when only FLOPs are given (params: the
# non-embedding parameter count). Extra fields (here `framework`) are kept in the run's config.
width, depth = 64, 2
params = depth * (12 * width**2 + 13 * width) + 2 * width  # the same count shapewise uses
external_tokens = 1_000_000
external = {
    "name": "pytorch 64x2 completep",
    "parameterization": "completep",
    "params": params,
    "flops": 6.0 * params * external_tokens,
    "final_loss": 3.1,
    "width": width,
    "depth": depth,
    "lr": 0.01,
    "tags": ["notebook", "external"],
    "framework": "pytorch",
    # the first points come with the import; the rest are streamed below
    "metrics": [
        {"step": 1, "flops": 6.0 * params * 1 * BATCH * CONTEXT, "train_loss": 5.5},
        {"step": 10, "flops": 6.0 * params * 10 * BATCH * CONTEXT, "train_loss": 4.9},
    ],
}
imported = api("POST", "/runs/import", expect=201, json={"runs": [external]})
(imported_id,) = imported["ids"]
run = api("GET", f"/runs/{imported_id}")
check(run["source"] == "imported", f"source: {run['source']}")
check(run["status"] == "succeeded", f"an imported run is stored as finished: {run['status']}")
expected_tokens = round(external["flops"] / (6 * params))
check(
    run["tokens"] == expected_tokens == external_tokens,
    f"tokens should be flops / (6 params) = {expected_tokens}, the server says {run['tokens']}",
)
check(run["config"].get("framework") == "pytorch", f"extra fields kept: {run['config']}")
print(
    f"\nimported run {imported_id}: params {params}, flops {run['flops']:.4g} "
    f"-> tokens {run['tokens']} (= flops / 6 params)"
)

# %% (e) Stream metrics into the imported run, in batches, as a training loop would
#
# In a real notebook this is the logging hook of your training loop: buffer a few points,
# POST them, keep training. Here a made-up loss curve stands in for the model.
tokens_per_step = BATCH * CONTEXT
pending, appended = [], 0
for step in range(11, 51):
    point = {
        "step": step,
        "flops": 6.0 * params * tokens_per_step * step,
        "train_loss": 3.1 + 2.4 * math.exp(-step / 12),
        "lr": 0.01,
        "wall_secs": 0.05 * step,
    }
    if step % 10 == 0:
        point["val_loss"] = point["train_loss"] + 0.05
    pending.append(point)
    if len(pending) == 10:  # flush every 10 steps
        answer = api("POST", f"/runs/{imported_id}/metrics", json={"points": pending})
        check(answer["appended"] == len(pending), f"appended {answer}")
        appended += answer["appended"]
        pending = []
        print(f"streamed steps up to {step} ({appended} points so far)")

# Only imported runs take appended metrics: shapewise's own runs are written by its trainer.
try:
    api("POST", f"/runs/{run_ids[0]}/metrics", json={"points": [{"step": 99, "tokens": 1, "train_loss": 3.0}]})
    raise AssertionError("appending to a run trained by shapewise was accepted")
except ApiError as refused:
    check("422" in str(refused), f"unexpected refusal: {refused}")

# Read the curve back: JSON and CSV agree, and the server derived tokens for each point.
curve = pd.DataFrame(api("GET", f"/runs/{imported_id}/metrics")["points"])
curve_csv = pd.read_csv(io.StringIO(api("GET", f"/runs/{imported_id}/metrics.csv")))
expected_points = len(external["metrics"]) + appended
check(len(curve) == expected_points, f"{len(curve)} points stored, expected {expected_points}")
check(len(curve_csv) == expected_points, f"metrics.csv has {len(curve_csv)} rows")
check(list(curve["step"]) == [1, 10] + list(range(11, 51)), "steps out of order or missing")
check(
    (curve["tokens"] == curve["step"] * tokens_per_step).all(),
    "per-point tokens should be flops / (6 params)",
)
print(
    f"imported run {imported_id}: {len(curve)} points read back "
    f"({curve['val_loss'].notna().sum()} with val loss), last train loss "
    f"{curve['train_loss'].iloc[-1]:.3f}"
)

# %% Done
print("notebook: OK")
