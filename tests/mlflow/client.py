"""The official MLflow client against shapewise's MLflow-compatible API.

Logs a run the way a PyTorch training script would (set_experiment, start_run, log_params,
40 steps of log_metrics, set_tag, end_run), reads it back through the client (get_run,
get_metric_history, search_runs, search_experiments), and checks that shapewise shows the same
run through its own API, with its columns, series and FLOPs filled in.

Run against a live server:  bash .ci/with_server.sh python3 tests/mlflow/client.py
(SHAPEWISE_URL and, with authentication on, SHAPEWISE_TOKEN come from the harness).
"""

import math
import os
import sys

import requests

url = os.environ["SHAPEWISE_URL"]
token = os.environ.get("SHAPEWISE_TOKEN")
os.environ["MLFLOW_TRACKING_URI"] = url
if token:
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
# No retries on a refusal: a 4xx must surface at once.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

headers = {"Authorization": f"Bearer {token}"} if token else {}
STEPS = 40
WIDTH, DEPTH, PARAMS, TOKENS_PER_STEP = 64, 4, 200_000, 2048


def loss_at(step):
    return 5.5 - 2.0 * (1 - math.exp(-step / 12))


experiment = mlflow.set_experiment("mlflow-client-check")
with mlflow.start_run(run_name="torch-proxy-64x4") as run:
    mlflow.log_params(
        {
            "parameterization": "completep",
            "width": WIDTH,
            "depth": DEPTH,
            "lr": 0.0078125,
            "n_params": PARAMS,
            "context": 128,
            "vocab": 256,
            "tokens": STEPS * TOKENS_PER_STEP,
            "optimizer": "adamw",
        }
    )
    mlflow.set_tag("team", "scaling")
    for step in range(1, STEPS + 1):
        metrics = {"train_loss": loss_at(step), "grad_norm": 1.0 / step}
        if step % 10 == 0:
            metrics["val_loss"] = loss_at(step) + 0.05
        mlflow.log_metrics(metrics, step=step)
    run_id = run.info.run_id

client = MlflowClient()
got = client.get_run(run_id)
assert got.info.status == "FINISHED", got.info
assert got.info.run_name == "torch-proxy-64x4", got.info
assert got.data.params["optimizer"] == "adamw", got.data.params
assert got.data.tags["team"] == "scaling", got.data.tags
assert abs(got.data.metrics["train_loss"] - loss_at(STEPS)) < 1e-12, got.data.metrics
history = client.get_metric_history(run_id, "train_loss")
assert len(history) == STEPS, len(history)
assert [m.step for m in history] == list(range(1, STEPS + 1))
assert len(client.get_metric_history(run_id, "grad_norm")) == STEPS
found = client.search_runs(
    [experiment.experiment_id], filter_string="params.width = '64' and metrics.train_loss < 4"
)
assert [r.info.run_id for r in found] == [run_id], found
assert client.search_runs([experiment.experiment_id], filter_string="params.width = '128'") == []
names = [e.name for e in client.search_experiments()]
assert "mlflow-client-check" in names, names

# A param cannot change, as in MLflow.
try:
    client.log_param(run_id, "width", 128)
    raise AssertionError("a changed param was accepted")
except MlflowException as e:
    assert "cannot change" in str(e), e

# The same run through shapewise's API: its columns, series and FLOPs.
listed = requests.get(
    f"{url}/api/v1/runs",
    params={"parameterization": "completep", "width": WIDTH, "tag": "mlflow-client-check"},
    headers=headers,
    timeout=30,
)
listed.raise_for_status()
runs = listed.json()["runs"]
assert [str(r["id"]) for r in runs] == [run_id], runs
r = runs[0]
assert r["status"] == "succeeded" and r["depth"] == DEPTH and r["lr"] == 0.0078125, r
assert r["tokens"] == STEPS * TOKENS_PER_STEP and r["params_non_embedding"] == PARAMS, r
assert r["flops"] == 6.0 * PARAMS * STEPS * TOKENS_PER_STEP, r
assert abs(r["final_val_loss"] - (loss_at(STEPS) + 0.05)) < 1e-12, r
series = requests.get(f"{url}/api/v1/runs/{run_id}/metrics", headers=headers, timeout=30)
series.raise_for_status()
points = series.json()["points"]
assert [p["step"] for p in points] == list(range(1, STEPS + 1)), points[:3]
assert points[-1]["tokens"] == STEPS * TOKENS_PER_STEP, points[-1]
assert sum(p["val_loss"] is not None for p in points) == 4

print(f"mlflow client check: run {run_id}, {STEPS} steps, ok", file=sys.stderr)
