#!/usr/bin/env bash
# The main job on a fresh machine: install packages, build, start a 2-rank tensor-parallel cluster
# on the bundled default model (models/phi-tiny-code, a small Phi-1-style code model trained on the
# Python standard library), wait until it is healthy, stream a completion and a chat reply with
# phi-client, show the OpenAI-compatible endpoint, and shut the cluster down cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh --target phi-worker phi-client

config=configs/default.yaml
tcp_port=$(sed -n 's/^ *tcp: *[^:]*:\([0-9]*\).*/\1/p' "$config")
http_port=$(sed -n 's/^ *http: *[^:]*:\([0-9]*\).*/\1/p' "$config")
client=build/coordinator/native/phi-client
log=build/demo-cluster.log

echo "== starting: scripts/mpirun.sh -np 2 build/coordinator/app/phi-worker --config $config (log: $log)"
./scripts/mpirun.sh -np 2 build/coordinator/app/phi-worker --config "$config" >"$log" 2>&1 &
launcher=$!
cleanup() { kill -TERM "$launcher" 2>/dev/null || true; }
trap cleanup EXIT

if ! "$client" --port "$tcp_port" --wait-ready 120; then
  echo "the cluster did not come up; its log:" >&2
  tail -30 "$log" >&2
  exit 1
fi
curl -s "http://127.0.0.1:$http_port/health" && echo

echo
echo "== phi-client, greedy completion of 'def fibonacci(n):' (streamed as it is generated)"
"$client" --port "$tcp_port" --max-tokens 96 --temperature 0 --stats "def fibonacci(n):"
echo
echo "== phi-client --chat (the model's chat template; a 5M-parameter code model answers with code)"
"$client" --port "$tcp_port" --chat --max-tokens 64 --temperature 0.7 --seed 1 --stats "Write a function that reverses a list."
echo
echo "== OpenAI-compatible HTTP: POST /v1/completions"
curl -s "http://127.0.0.1:$http_port/v1/completions" -H 'Content-Type: application/json' \
     -d '{"model": "phi-tiny-code", "prompt": "import os\n", "max_tokens": 24, "temperature": 0}'
echo
echo
echo "== shutting down (SIGTERM -> drain -> every rank exits)"
trap - EXIT
kill -TERM "$launcher"
rc=0
wait "$launcher" || rc=$?
grep -h "shut down cleanly" "$log" || true
echo "cluster exit code: $rc"
exit "$rc"
