#!/usr/bin/env bash
# Server headroom under many workers: starts a server (release build, --workers 0, a fresh
# database) and runs `shapewise bench-workers` against it twice: heartbeats as fast as the server
# answers (ingest capacity), then paced at one heartbeat per worker every PACE_MS (latency at a
# load below capacity). The benchmark client runs on the same machine and shares its cores.
#
#   bash bench/worker_headroom.sh              # 50 workers, 1000 points per heartbeat, 20 s each
#   WORKERS=100 BATCH=500 PACE_MS=250 bash bench/worker_headroom.sh
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${WORKERS:-50}
batch=${BATCH:-1000}
seconds=${SECONDS_EACH:-20}
pace=${PACE_MS:-150}
bin=${SHAPEWISE_BIN:-target/release/shapewise}
[[ -x $bin ]] || cargo build --release --locked
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
"$bin" serve --addr "127.0.0.1:$port" --db "$dir/db.sqlite" --workers 0 --auth off \
    >"$dir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
    bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null && break
    sleep 0.1
done
url=http://127.0.0.1:$port
echo "== flat out"
"$bin" bench-workers --server "$url" --workers "$workers" --batch "$batch" --seconds "$seconds"
echo "== paced: one heartbeat per worker every $pace ms"
"$bin" bench-workers --server "$url" --workers "$workers" --batch "$batch" --seconds "$seconds" \
    --interval-ms "$pace"
