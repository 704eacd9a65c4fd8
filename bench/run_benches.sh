#!/usr/bin/env bash
# Runs the benchmarks behind the numbers in the issue notes, on a Phi-2-shaped random checkpoint
# that it writes to bench/data/ (5.6 GB, not committed). Usage: bench/run_benches.sh [phi2|phi3-mini]
# Every speed is printed beside the limit measured in the same run (memory bandwidth, matmul rate).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-phi2}
./scripts/build.sh --target bench_kernels bench_decode bench_engine bench_allreduce make_random_checkpoint >/dev/null
ckpt=bench/data/$preset-random
[ -f "$ckpt/model.safetensors" ] || build/bench/decode/make_random_checkpoint "$preset" "$ckpt"
run() { echo; echo "\$ $*"; "$@"; }

run build/bench/kernels/bench_kernels
run ./scripts/mpirun.sh -np 1 build/bench/decode/bench_decode --model "$ckpt" --dtype bf16 --batch 1,16 --steps 6 --prefill 512
run ./scripts/mpirun.sh -np 1 build/bench/decode/bench_decode --model "$ckpt" --dtype f32 --batch 1,16 --steps 4
run env PHI_THREADS_PER_RANK=1 ./scripts/mpirun.sh -np 2 build/bench/decode/bench_decode --model "$ckpt" --dtype bf16 --batch 1,16 --steps 6
for np in 2 4; do run env PHI_THREADS_PER_RANK=1 ./scripts/mpirun.sh -np $np build/bench/allreduce/bench_allreduce; done
run ./scripts/mpirun.sh -np 1 build/bench/engine/bench_engine --model "$ckpt" --dtype bf16
run env PHI_THREADS_PER_RANK=1 ./scripts/mpirun.sh -np 2 build/bench/engine/bench_engine --model "$ckpt" --dtype bf16
