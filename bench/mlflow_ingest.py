"""Metric ingest through the MLflow tracking REST API: shapewise against an MLflow server.

For each server URL: creates an experiment and a run through `/api/2.0/mlflow`, then posts
`--batches` batches of 1,000 metric values (`runs/log-batch`, the call the MLflow client's
`log_metrics` and its async logging make; keys `train_loss` and `grad_norm`, consecutive steps)
over one keep-alive connection, bodies encoded beforehand so that the client's JSON encoding is
not timed. Prints metric values per second for each repeat, the median, and the ratio of the
first server's median to each other's.

    python3 bench/mlflow_ingest.py http://127.0.0.1:8080 http://127.0.0.1:5000
"""

import argparse
import json
import statistics
import sys
import time
import uuid

import requests

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("urls", nargs="+", help="server base URLs; the first is the one compared")
parser.add_argument("--batches", type=int, default=50, help="batches per repeat (default 50)")
parser.add_argument("--batch-size", type=int, default=1000)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--token", help="bearer token (shapewise with authentication on)")
args = parser.parse_args()


def call(session, url, path, body):
    r = session.post(f"{url}/api/2.0/mlflow/{path}", data=json.dumps(body),
                     headers={"Content-Type": "application/json"}, timeout=120)
    r.raise_for_status()
    return r.json()


def bodies(run_id, repeat):
    out = []
    step = repeat * args.batches * args.batch_size
    for _ in range(args.batches):
        metrics = []
        for i in range(args.batch_size // 2):
            step += 1
            metrics.append({"key": "train_loss", "value": 3.0 + 1.0 / step, "timestamp": 1_700_000_000_000 + step, "step": step})
            metrics.append({"key": "grad_norm", "value": 0.5 + 1.0 / step, "timestamp": 1_700_000_000_000 + step, "step": step})
        out.append(json.dumps({"run_id": run_id, "metrics": metrics}).encode())
    return out


medians = []
for url in args.urls:
    session = requests.Session()
    if args.token:
        session.headers["Authorization"] = f"Bearer {args.token}"
    experiment = call(session, url, "experiments/create", {"name": f"ingest-{uuid.uuid4().hex[:8]}"})
    run = call(session, url, "runs/create", {"experiment_id": experiment["experiment_id"], "start_time": 0})
    run_id = run["run"]["info"]["run_id"]
    rates = []
    for repeat in range(args.repeats):
        prepared = bodies(run_id, repeat)
        start = time.perf_counter()
        for data in prepared:
            r = session.post(f"{url}/api/2.0/mlflow/runs/log-batch", data=data,
                             headers={"Content-Type": "application/json"}, timeout=120)
            r.raise_for_status()
        elapsed = time.perf_counter() - start
        rates.append(args.batches * args.batch_size / elapsed)
        print(f"{url}: repeat {repeat + 1}: {rates[-1]:,.0f} metric values/s", file=sys.stderr)
    medians.append(statistics.median(rates))
    print(f"{url}: median {medians[-1]:,.0f} metric values/s over {args.repeats} repeats of "
          f"{args.batches} batches of {args.batch_size}")
for url, median in zip(args.urls[1:], medians[1:]):
    print(f"{args.urls[0]} / {url}: {medians[0] / median:.1f}x")
