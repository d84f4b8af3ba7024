#!/usr/bin/env bash
# Runs `shapewise bench` and the PyTorch reference alternately, ROUNDS times each, on the same
# shapes, batch, context, vocab, activation and positions, then prints per-shape medians of
# tokens/s and the ratio shapewise / PyTorch.
#
# Usage: bench/compare.sh [ROUNDS] [extra options for both, e.g. --activation gelu --positions learned]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
steps=${STEPS:-20}
cargo build --release --quiet
out=$(mktemp)
for round in $(seq "$rounds"); do
  echo "round $round/$rounds" >&2
  ./target/release/shapewise bench --json --steps "$steps" "$@" >>"$out"
  python3 bench/torch_reference.py --json --steps "$steps" "$@" >>"$out"
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
shapes = sorted({r["shape"] for r in rows}, key=lambda s: [int(x) for x in s.split("x")])
print(f"{'shape':>8} {'shapewise tok/s':>16} {'pytorch tok/s':>14} {'ratio':>6} {'shapewise GFLOP/s':>18} {'pytorch GFLOP/s':>16}")
for shape in shapes:
    med = {}
    for impl in ("shapewise", "pytorch"):
        sel = [r for r in rows if r["shape"] == shape and r["impl"] == impl]
        med[impl] = (statistics.median(r["tokens_per_sec"] for r in sel),
                     statistics.median(r["gflops_per_sec"] for r in sel))
    ratio = med["shapewise"][0] / med["pytorch"][0]
    print(f"{shape:>8} {med['shapewise'][0]:>16.0f} {med['pytorch'][0]:>14.0f} {ratio:>6.2f} {med['shapewise'][1]:>18.1f} {med['pytorch'][1]:>16.1f}")
PY
rm -f "$out"
