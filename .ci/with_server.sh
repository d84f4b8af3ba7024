#!/usr/bin/env bash
# CI: runs a command against a real server on a free port with a throw-away database, with the
# server's URL in SHAPEWISE_URL. Called after the Rust tests; the debug binary they built is
# reused. Usage: bash .ci/with_server.sh COMMAND [ARGS...]
#   (or SHAPEWISE_BIN=path/to/shapewise bash .ci/with_server.sh ...)
# With SHAPEWISE_AUTH=on the server requires tokens: a fresh admin token is passed to it and
# to the command as SHAPEWISE_TOKEN. Other SHAPEWISE_* variables (SHAPEWISE_WORKERS, ...) reach
# the server as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

# The server binary (debug profile: `cargo test` already built it, so this is quick), or the
# one named by SHAPEWISE_BIN (then nothing is built).
if [[ -n "${SHAPEWISE_BIN:-}" ]]; then
    binary=$SHAPEWISE_BIN
else
    cargo build --quiet
    binary=target/debug/shapewise
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/shapewise-ci.XXXXXX")
server_pid=
cleanup() {
    local status=$?
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -s "$work/server.log" ]]; then
        echo "with_server: $* FAILED (exit $status); last lines of the server log:" >&2
        tail -n 40 "$work/server.log" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free port: bind port 0, read what the kernel chose, release it.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
url="http://127.0.0.1:$port"

if [[ "${SHAPEWISE_AUTH:-off}" == "on" ]]; then
    SHAPEWISE_TOKEN=$(python3 -c 'import secrets; print("ci-admin-" + secrets.token_hex(32))')
    export SHAPEWISE_TOKEN
    export SHAPEWISE_ADMIN_TOKEN=$SHAPEWISE_TOKEN
fi

NO_COLOR=1 "$binary" serve --addr "127.0.0.1:$port" --db "$work/shapewise.db" >"$work/server.log" 2>&1 &
server_pid=$!

# Wait for /healthz (up to 60 s), giving up at once if the server exits.
python3 - "$url" "$server_pid" <<'PY'
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while True:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
            if response.status == 200:
                break
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(f"with_server: the server exited before answering {url}/healthz")
    if time.monotonic() > deadline:
        sys.exit(f"with_server: {url}/healthz did not answer within 60 s")
    time.sleep(0.2)
PY
echo "with_server: server up at $url after $((SECONDS - started)) s"

SHAPEWISE_URL=$url "$@"
echo "with_server: $* done in $((SECONDS - started)) s"
