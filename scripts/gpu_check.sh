#!/usr/bin/env bash
# The one GPU check (issue 21), at most PHI_CHECK_BUDGET seconds (default 480) of GPU time: every
# CUDA test (kernels, backend conformance against the CPU backend, the model on every fixture with
# LongRoPE, greedy through the runner at tp 1 and tp 2 as two thread ranks on one GPU against the
# CPU bf16 runner), the thread communicator, the kernel benchmark, and batch-1 decode of a
# Phi-2-shaped model as a fraction of the read bandwidth measured in the same run; then a summary.
# The CUDA-only build (-DPHI_CUDA_ONLY=ON: no MPI, yaml-cpp, Boost or CLI11, which the GPU machine
# lacks) is best made on the build machine and carried (--build), so no GPU time goes to nvcc.
#
#   scripts/gpu_check.sh --build        on the BUILD machine: builds the CUDA-only targets into
#                                       build-gpu/ and copies the binaries and their non-system
#                                       libraries into gpu-bin/ (carry gpu-bin to the GPU machine)
#
#   scripts/gpu_check.sh --stage-deps   on the BUILD machine (Debian, packages of shared/TOOLCHAIN.md):
#                                       copies fmt, spdlog, nlohmann_json and GoogleTest (headers,
#                                       libraries, CMake configs) into build-gpu-deps/, for a GPU
#                                       machine without them (carry build-gpu-deps to it)
#   scripts/gpu_check.sh [--quick]      on the GPU machine (or anywhere: without a GPU every CUDA
#                                       test skips with the reason and the benchmark says why); runs
#                                       gpu-bin/ when it is there, otherwise configures and builds first
#
# Environment: BUILD_DIR (default build-gpu), JOBS (default: all cores), PHI_CUDA_ARCH (default 90:
# H100/H200), PHI_CHECK_TIMEOUT (seconds per test binary, default 600), PHI_SANITIZE=1 (kernel
# tests again under compute-sanitizer memcheck).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deps=$root/build-gpu-deps
multiarch=x86_64-linux-gnu

if [[ ${1:-} == --stage-deps ]]; then
    rm -rf "$deps"
    mkdir -p "$deps/usr/include" "$deps/usr/lib/$multiarch/cmake" "$deps/usr/share/cmake"
    for d in fmt spdlog nlohmann gtest gmock; do cp -rL "/usr/include/$d" "$deps/usr/include/"; done
    for d in fmt spdlog GTest; do cp -rL "/usr/lib/$multiarch/cmake/$d" "$deps/usr/lib/$multiarch/cmake/"; done
    cp -rL /usr/share/cmake/nlohmann_json "$deps/usr/share/cmake/"
    # Real files under every name the configs and the loader use (links may not travel).
    for f in /usr/lib/$multiarch/libfmt.so* /usr/lib/$multiarch/libspdlog.so* /usr/lib/$multiarch/libgtest*.a \
             /usr/lib/$multiarch/libgmock*.a; do
        cp -L "$f" "$deps/usr/lib/$multiarch/"
    done
    du -sh "$deps"
    echo "staged; on the GPU machine run scripts/gpu_check.sh with build-gpu-deps carried along"
    exit 0
fi

mode=run
[[ ${1:-} == --build ]] && mode=build
quick=""
[[ ${1:-} == --quick ]] && quick=--quick
budget=${PHI_CHECK_BUDGET:-480}
start=$SECONDS
left() { echo $((budget - (SECONDS - start))); }
bin=$root/gpu-bin
build=${BUILD_DIR:-$root/build-gpu}
jobs=${JOBS:-$(nproc)}
arch=${PHI_CUDA_ARCH:-90}
per_test_timeout=${PHI_CHECK_TIMEOUT:-600}

if ! command -v nvcc >/dev/null; then
    for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do [[ -x $d/nvcc ]] && export PATH=$d:$PATH && break; done
fi
command -v nvcc >/dev/null || { echo "gpu_check: nvcc not found"; exit 1; }

cmake_args=(-S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPHI_CUDA_ONLY=ON -DPHI_BUILD_TESTS=ON
            -DPHI_BUILD_BENCH=ON -DCMAKE_CUDA_ARCHITECTURES="$arch")
if [[ -d $deps ]]; then
    cmake_args+=(-DCMAKE_PREFIX_PATH="$deps/usr")
    export LD_LIBRARY_PATH=$deps/usr/lib/$multiarch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
# NCCL of the nvidia-nccl-cu13 wheel (the GPU machine's only NCCL), if the toolkit has none.
nccl_wheel=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null || true)
if [[ -n $nccl_wheel ]]; then
    cmake_args+=(-DNCCL_ROOT="$nccl_wheel")
    export LD_LIBRARY_PATH=$nccl_wheel/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

build_targets() {
    echo "== configure"
    cmake "${cmake_args[@]}" | grep -E "phi-cluster|Error|error|Build files" || true
    echo "== build (-j$jobs)"
    cmake --build "$build" -j "$jobs" --target test_cuda test_thread_communicator bench_cuda_kernels
    # The GPU model and its decode benchmark need NCCL (its device communicator interface).
    if ninja -C "$build" -t targets all 2>/dev/null | grep -q '^bench_cuda_decode:'; then
        cmake --build "$build" -j "$jobs" --target bench_cuda_decode
    fi
}

if [[ $mode == build ]]; then
    build_targets
    rm -rf "$bin"
    mkdir -p "$bin/lib"
    for t in tests/cuda/test_cuda tests/cluster/test_thread_communicator bench/cuda/bench_cuda_kernels \
             bench/cuda/bench_cuda_decode; do
        [[ -x $build/$t ]] && cp "$build/$t" "$bin/"
    done
    # Libraries the GPU machine may lack (fmt, spdlog): real files under their sonames.
    for lib in $(ldd "$bin"/* 2>/dev/null | awk '/lib(fmt|spdlog)/ {print $3}' | sort -u); do cp -L "$lib" "$bin/lib/"; done
    du -sh "$bin"
    echo "built; carry gpu-bin (and the tracked tree: fixtures) and run scripts/gpu_check.sh on the GPU machine"
    exit 0
fi

echo "== GPU"
nvidia-smi -L 2>/dev/null || echo "(nvidia-smi unavailable)"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true
if [[ -x $bin/test_cuda ]]; then
    echo "using the carried binaries in $bin"
    export LD_LIBRARY_PATH=$bin/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    test_cuda=$bin/test_cuda
    test_tc=$bin/test_thread_communicator
    bench_kernels=$bin/bench_cuda_kernels
    bench_decode=$bin/bench_cuda_decode
else
    nvcc --version | tail -2
    t0=$SECONDS
    build_targets
    echo "configure + build: $((SECONDS - t0)) s"
    test_cuda=$build/tests/cuda/test_cuda
    test_tc=$build/tests/cluster/test_thread_communicator
    bench_kernels=$build/bench/cuda/bench_cuda_kernels
    bench_decode=$build/bench/cuda/bench_cuda_decode
fi
logs=${LOG_DIR:-${OUT:-$build}}
mkdir -p "$logs"

export PHI_SOURCE_DIR=$root
summary=()
status=0
run_test() {  # name, binary
    local log=$logs/$1.log t
    echo "== $1 ($(left) s of the budget left)"
    t=$(( $(left) < per_test_timeout ? $(left) : per_test_timeout ))
    if (( t < 10 )); then summary+=("$1: NOT RUN (budget spent)"); status=1; return; fi
    if timeout "$t" "$2" --gtest_color=no >"$log" 2>&1; then :; else status=1; fi
    # Every measured error (the tolerances become 2x the worst over all fixtures), every failure.
    grep -E "^\[  FAILED  \] .*\(|^\[  PASSED|max abs|vs HF|vs CPU|runner tp|diverged|Failure|differs|^GPU:" "$log" |
        head -80 || true
    grep -m1 -E "no usable GPU" "$log" || true
    local passed failed skipped
    passed=$(grep -cE '^\[       OK \]' "$log" || true)
    failed=$(grep -cE '^\[  FAILED  \] .*\(' "$log" || true)
    skipped=$(grep -cE '^\[  SKIPPED \] .*\(' "$log" || true)
    summary+=("$1: $passed passed, $failed failed, $skipped skipped (log $log)")
}
run_test test_cuda "$test_cuda"
run_test test_thread_communicator "$test_tc"
# PHI_SANITIZE=1: the kernel tests again under compute-sanitizer's memcheck (out-of-bounds and
# misaligned accesses; a few times slower).
if [[ ${PHI_SANITIZE:-0} == 1 ]] && command -v compute-sanitizer >/dev/null; then
    echo "== compute-sanitizer memcheck"
    if compute-sanitizer --tool memcheck --error-exitcode 1 "$test_cuda" \
        --gtest_filter='CudaKernels.*:CudaMoe.*' >"$logs/sanitizer.log" 2>&1; then
        summary+=("compute-sanitizer memcheck: clean")
    else
        status=1
        grep -m20 -E "=========|FAILED" "$logs/sanitizer.log" || true
        summary+=("compute-sanitizer memcheck: ERRORS (log $logs/sanitizer.log)")
    fi
fi

echo "== bench_cuda_kernels --quick ($(left) s left)"
if (( $(left) > 30 )) && ! timeout $(( $(left) - 20 )) "$bench_kernels" --quick | tee "$logs/bench_cuda_kernels.log"; then
    status=1
fi

# Batch-1 decode on a Phi-2-shaped model (goal 0.85 of the measured read bandwidth; calm reaches
# 0.76 on an H100, HF transformers 0.39 with a static cache).
if [[ -x $bench_decode ]] && (( $(left) > 20 )); then
    layers=32
    [[ -n $quick ]] && layers=8
    echo "== bench_cuda_decode --shape phi2 --layers $layers ($(left) s left)"
    if ! timeout $(( $(left) - 5 )) "$bench_decode" --shape phi2 --layers "$layers" --steps 32 |
        tee "$logs/bench_cuda_decode.log"; then
        status=1
    fi
else
    summary+=("bench_cuda_decode: NOT RUN (no binary or budget spent)")
fi

echo "== summary"
for line in "${summary[@]}"; do echo "$line"; done
grep -E "streaming read|GEMM peak" "$logs/bench_cuda_kernels.log" 2>/dev/null || true
if [[ -f $logs/bench_cuda_decode.log ]]; then
    grep -E "^(device|model|streaming read)" "$logs/bench_cuda_decode.log" || true
    grep -E "^(eager|graphs) +1 " "$logs/bench_cuda_decode.log" | sed 's/^/batch-1 decode (phi2 shape, goal 0.85 of bw): /' || true
fi
grep -hE "vs HF|vs CPU|runner tp|max abs" "$logs/test_cuda.log" 2>/dev/null | sort | head -60 || true
echo "GPU time used by this script: $((SECONDS - start)) s of $budget"
echo "gpu_check: $([[ $status == 0 ]] && echo OK || echo FAILED)"
exit $status
