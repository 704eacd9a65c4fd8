#!/usr/bin/env bash
# Cluster fault tests, run by CTest. Usage: fault_test.sh CASE PHI_WORKER SOURCE_DIR
#   refuse_tp   3 ranks on a 4-head model: every rank exits non-zero naming the numbers
#   tp_mismatch --tp 4 under 2 ranks: every rank exits non-zero naming both sizes
#   kill_rank   kill -9 rank 1 mid-generation: mpirun exits non-zero within 10 s
#   stall_rank  SIGSTOP rank 1 mid-generation: the watchdog ends the job within 10 s
#   stall_root  SIGSTOP rank 0 mid-generation: the followers' plan deadline ends the job within 10 s
set -uo pipefail
case_name=$1 worker=$2 src=$3
mpirun_sh="$src/scripts/mpirun.sh"
fixture="$src/tests/fixtures/phi3_mini_4k_swa"   # 4 query heads
long_fixture="$src/tests/fixtures/phi_40q10kv"   # 16k context: generation outlasts the test
out=$(mktemp)
trap 'rm -f "$out"' EXIT
fail() { echo "FAIL ($case_name): $*"; echo "--- output:"; cat "$out"; exit 1; }

expect_every_rank_error() {  # np pattern args...
  local np=$1 pattern=$2; shift 2
  timeout 60 "$mpirun_sh" -np "$np" "$worker" "$@" >"$out" 2>&1
  local rc=$?
  [ $rc -ne 0 ] || fail "exit code 0, expected an error"
  [ $rc -ne 124 ] || fail "hung (timeout)"
  local n; n=$(grep -c "$pattern" "$out")
  [ "$n" -ge "$np" ] || fail "expected '$pattern' from all $np ranks, saw it $n times"
  echo "ok: $case_name (exit $rc; every rank said: $(grep -m1 "$pattern" "$out"))"
}

# Starts a long generation in the background, waits until it is decoding, hurts one rank with
# `signal`, and checks mpirun ends non-zero within 10 s.
expect_fast_exit() {  # rank signal extra-args...
  local rank=$1 sig=$2; shift 2
  "$mpirun_sh" -np 2 "$worker" --model "$long_fixture" --prompt-ids "1 2 3" \
      --max-tokens 16000 --watchdog-ms 2000 --plan-wait-ms 3000 "$@" >"$out" 2>&1 &
  local mp=$!
  local pids=""
  for _ in $(seq 1 100); do
    pids=$(pgrep -f -- "--max-tokens 16000" | sort -n | while read -r p; do
             [ "$(ps -o comm= -p "$p")" = "phi-worker" ] && echo "$p"; done | tr '\n' ' ')
    [ "$(echo $pids | wc -w)" -ge 2 ] && grep -q "loaded on 2 rank" "$out" && break
    sleep 0.1
  done
  [ "$(echo $pids | wc -w)" -ge 2 ] || { kill -9 $mp 2>/dev/null; fail "ranks did not start"; }
  sleep 0.5
  # Rank r is the r-th started phi-worker (OpenMPI launches them in rank order).
  local target; target=$(echo $pids | cut -d' ' -f$((rank + 1)))
  local t0; t0=$(date +%s.%N)
  kill -"$sig" "$target"
  local rc=124
  for _ in $(seq 1 150); do
    if ! kill -0 $mp 2>/dev/null; then wait $mp; rc=$?; break; fi
    sleep 0.1
  done
  local dt; dt=$(echo "$(date +%s.%N) - $t0" | bc)
  if [ $rc -eq 124 ]; then kill -9 $mp $pids 2>/dev/null; fail "still running 15 s after SIG$sig to rank $rank"; fi
  [ $rc -ne 0 ] || fail "exit code 0 after SIG$sig to rank $rank"
  awk -v d="$dt" 'BEGIN { exit !(d < 10) }' || fail "took ${dt}s (> 10 s)"
  kill -9 $pids 2>/dev/null
  echo "ok: $case_name: mpirun exited $rc ${dt}s after SIG$sig to rank $rank"
  grep -iE "rank|signal|stalled|lost" "$out" | head -5
}

case "$case_name" in
  refuse_tp) expect_every_rank_error 3 "tp size 3 does not divide num_attention_heads 4" \
               --model "$fixture" --prompt-ids "1 2 3" ;;
  tp_mismatch) expect_every_rank_error 2 "\-\-tp 4 does not match the MPI world size 2" \
               --model "$fixture" --prompt-ids "1 2 3" --tp 4 ;;
  kill_rank) expect_fast_exit 1 KILL ;;
  stall_rank) expect_fast_exit 1 STOP ;;
  stall_root) expect_fast_exit 0 STOP ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
