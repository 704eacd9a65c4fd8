#!/usr/bin/env bash
# The one GPU check: configures the CUDA-only build (-DPHI_CUDA_ONLY=ON: no MPI, yaml-cpp, Boost or
# CLI11, which the GPU machine lacks), builds the CUDA tests, the in-process TP test and the CUDA
# benchmark with ninja, runs them, and prints a short summary.
#
#   scripts/gpu_check.sh --stage-deps   on the BUILD machine (Debian, packages of shared/TOOLCHAIN.md):
#                                       copies fmt, spdlog, nlohmann_json and GoogleTest (headers,
#                                       libraries, CMake configs) into build-gpu-deps/, for a GPU
#                                       machine without them (carry build-gpu-deps to it)
#   scripts/gpu_check.sh [--quick]      on the GPU machine (or anywhere: without a GPU every CUDA
#                                       test skips with the reason and the benchmark says why)
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

quick=""
[[ ${1:-} == --quick ]] && quick=--quick
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

echo "== GPU"
nvidia-smi -L 2>/dev/null || echo "(nvidia-smi unavailable)"
nvcc --version | tail -2
echo "== configure"
t0=$SECONDS
cmake "${cmake_args[@]}" | grep -E "phi-cluster|Error|error|Build files" || true
echo "== build (-j$jobs)"
cmake --build "$build" -j "$jobs" --target test_cuda test_thread_communicator bench_cuda_kernels
# The GPU model and its decode benchmark need NCCL (its device communicator interface).
have_decode=0
if ninja -C "$build" -t targets all 2>/dev/null | grep -q '^bench_cuda_decode:'; then
    cmake --build "$build" -j "$jobs" --target bench_cuda_decode && have_decode=1
fi
echo "configure + build: $((SECONDS - t0)) s"

export PHI_SOURCE_DIR=$root
summary=()
status=0
run_test() {  # name, binary
    local log=$build/$1.log
    echo "== $1"
    if timeout "$per_test_timeout" "$2" --gtest_color=no >"$log" 2>&1; then :; else status=1; fi
    grep -E "^\[  FAILED  \] .*\(|^\[  PASSED|max abs|Failure|^GPU:" "$log" | head -40 || true
    grep -m1 -E "no usable GPU" "$log" || true
    local passed failed skipped
    passed=$(grep -cE '^\[       OK \]' "$log" || true)
    failed=$(grep -cE '^\[  FAILED  \] .*\(' "$log" || true)
    skipped=$(grep -cE '^\[  SKIPPED \] .*\(' "$log" || true)
    summary+=("$1: $passed passed, $failed failed, $skipped skipped (log $log)")
}
run_test test_cuda "$build/tests/cuda/test_cuda"
run_test test_thread_communicator "$build/tests/cluster/test_thread_communicator"
# PHI_SANITIZE=1: the kernel tests again under compute-sanitizer's memcheck (out-of-bounds and
# misaligned accesses; a few times slower).
if [[ ${PHI_SANITIZE:-0} == 1 ]] && command -v compute-sanitizer >/dev/null; then
    echo "== compute-sanitizer memcheck"
    if compute-sanitizer --tool memcheck --error-exitcode 1 "$build/tests/cuda/test_cuda" \
        --gtest_filter='CudaKernels.*:CudaMoe.*' >"$build/sanitizer.log" 2>&1; then
        summary+=("compute-sanitizer memcheck: clean")
    else
        status=1
        grep -m20 -E "=========|FAILED" "$build/sanitizer.log" || true
        summary+=("compute-sanitizer memcheck: ERRORS (log $build/sanitizer.log)")
    fi
fi

echo "== bench_cuda_kernels $quick"
if ! timeout "$per_test_timeout" "$build/bench/cuda/bench_cuda_kernels" $quick | tee "$build/bench_cuda_kernels.log"; then
    status=1
fi

if [[ $have_decode == 1 ]]; then
    layers=32
    [[ -n $quick ]] && layers=8
    echo "== bench_cuda_decode --layers $layers"
    if ! timeout "$per_test_timeout" "$build/bench/cuda/bench_cuda_decode" --layers "$layers" --steps 32 |
        tee "$build/bench_cuda_decode.log"; then
        status=1
    fi
fi

echo "== summary"
for line in "${summary[@]}"; do echo "$line"; done
grep -E "streaming read|GEMM peak" "$build/bench_cuda_kernels.log" || true
[[ $have_decode == 1 ]] && { grep -E "^(eager|graphs) " "$build/bench_cuda_decode.log" || true; }
echo "gpu_check: $([[ $status == 0 ]] && echo OK || echo FAILED)"
exit $status
