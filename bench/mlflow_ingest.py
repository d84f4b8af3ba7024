"""Metric ingest through the MLflow tracking REST API: shapewise against an MLflow server.

For each server URL: creates an experiment and a run through `/api/2.0/mlflow`, then posts
`--batches` batches of 1,000 metric values (`runs/log-batch`, the call the MLflow client's
`log_metrics` and its async logging make; keys `train_loss` and `grad_norm`, consecutive steps)
over one keep-alive connection (`http.client`, `TCP_NODELAY`, each request sent in one write so
that Nagle's algorithm and delayed ACKs add no stalls), bodies encoded beforehand so that the
client's JSON encoding is not timed. Prints metric values per second for each repeat, the median, and the ratio of the
first server's median to each other's.

    python3 bench/mlflow_ingest.py http://127.0.0.1:8080 http://127.0.0.1:5000
"""

import argparse
import http.client
import json
import socket
import statistics
import sys
import time
import urllib.parse
import uuid

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("urls", nargs="+", help="server base URLs; the first is the one compared")
parser.add_argument("--batches", type=int, default=50, help="batches per repeat (default 50)")
parser.add_argument("--batch-size", type=int, default=1000)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--token", help="bearer token (shapewise with authentication on)")
args = parser.parse_args()


class Connection:
    """One keep-alive HTTP connection with Nagle's algorithm off."""

    def __init__(self, url, token):
        parsed = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def post(self, path, data):
        self.conn.request("POST", f"/api/2.0/mlflow/{path}", body=data, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"{path}: HTTP {response.status}: {body[:300]!r}")
        return json.loads(body)


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
    connection = Connection(url, args.token)
    name = f"ingest-{uuid.uuid4().hex[:8]}"
    experiment = connection.post("experiments/create", json.dumps({"name": name}).encode())
    run = connection.post("runs/create", json.dumps(
        {"experiment_id": experiment["experiment_id"], "start_time": 0}).encode())
    run_id = run["run"]["info"]["run_id"]
    rates = []
    for repeat in range(args.repeats):
        prepared = bodies(run_id, repeat)
        start = time.perf_counter()
        for data in prepared:
            connection.post("runs/log-batch", data)
        elapsed = time.perf_counter() - start
        rates.append(args.batches * args.batch_size / elapsed)
        print(f"{url}: repeat {repeat + 1}: {rates[-1]:,.0f} metric values/s", file=sys.stderr)
    medians.append(statistics.median(rates))
    print(f"{url}: median {medians[-1]:,.0f} metric values/s over {args.repeats} repeats of "
          f"{args.batches} batches of {args.batch_size}")
for url, median in zip(args.urls[1:], medians[1:]):
    print(f"{args.urls[0]} / {url}: {medians[0] / median:.1f}x")
