#!/usr/bin/env bash
# Schemathesis against a live server: every operation of the OpenAPI document, every check, at
# least 50 examples each, with an admin token (and, for the `ignored_auth` check, without).
# Zero 5xx and zero disagreements with the document are required.
# Usage (the server needs auth on and no training workers, so queued runs stay queued):
#   SHAPEWISE_AUTH=on SHAPEWISE_WORKERS=0 bash .ci/with_server.sh bash .ci/fuzz_api.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SHAPEWISE_URL:?run through .ci/with_server.sh}"
: "${SHAPEWISE_TOKEN:?run with SHAPEWISE_AUTH=on}"
examples=${FUZZ_EXAMPLES:-50}
report=${FUZZ_REPORT:-target/schemathesis}
mkdir -p "$report"
st --config-file .ci/schemathesis.toml run "$SHAPEWISE_URL/api/v1/openapi.json" \
    --checks all \
    --max-examples "$examples" \
    --seed "${FUZZ_SEED:-1}" \
    --workers 2 \
    --request-timeout 60 \
    --header "Authorization: Bearer $SHAPEWISE_TOKEN" \
    --report junit --report-dir "$report" \
    --no-color
