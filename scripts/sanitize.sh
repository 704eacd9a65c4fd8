#!/usr/bin/env bash
# The sanitizer and fuzz jobs, with clang; scripts/test.sh (the README's test command, what CI runs)
# calls it after the main suite:
#  1. AddressSanitizer + UndefinedBehaviorSanitizer build (build-asan/, also libFuzzer-instrumented):
#     the unit and in-process suites, then every fuzzer of tests/fuzz over its committed corpus,
#     deterministically (fixed -seed and -runs: a random find never turns an unrelated change red;
#     open-ended fuzzing runs outside CI and what it finds becomes a corpus file).
#  2. ThreadSanitizer build (build-tsan/): the threaded suites (engine on the fake runner, serving,
#     HTTP, native server, thread communicator) with OMP_NUM_THREADS=1 (the OpenMP runtime is not
#     instrumented).
# Only the targets these jobs run are built. Any report fails the job; the suppression files in
# scripts/sanitizers/ hold third-party libraries' own reports only (each entry says why). A fuzzer's
# failing input is written under build-asan/fuzz-work/. Usage: scripts/sanitize.sh [asan|tsan|fuzz]...
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
jobs="$(nproc)"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(asan fuzz tsan)

export CC=clang-14 CXX=clang++-14
export PHI_SOURCE_DIR="$root"
sup="$root/scripts/sanitizers"
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1"
export LSAN_OPTIONS="suppressions=$sup/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$sup/tsan.supp"

configure() {  # dir, sanitizers, fuzzers ON/OFF
    cmake -S . -B "$1" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
        -DPHI_SANITIZE="$2" -DPHI_BUILD_FUZZERS="$3" -DPHI_ENABLE_CUDA=OFF -DPHI_BUILD_BENCH=OFF >/dev/null
}

asan_suites=(test_kernels test_sharding test_cluster test_thread_communicator test_worker test_app
             test_chat_template test_sampling test_tokenizer test_service test_http test_native
             test_engine_fake test_engine_speculative test_engine_adapters)
tsan_suites=(test_thread_communicator test_engine_fake test_service test_http test_native)
fuzzers=(fuzz_safetensors fuzz_model_config fuzz_tokenizer_json fuzz_tokenizer_text fuzz_chat_template
         fuzz_cluster_config fuzz_native_frames fuzz_http_body)
# Executions per fuzzer in CI (each fixed): sized so the whole fuzz step takes a few minutes.
declare -A fuzz_runs=([fuzz_safetensors]=20000 [fuzz_model_config]=20000 [fuzz_tokenizer_json]=3000
                      [fuzz_tokenizer_text]=6000 [fuzz_chat_template]=20000 [fuzz_cluster_config]=20000
                      [fuzz_native_frames]=3000 [fuzz_http_body]=10000)

run_suites() {  # build dir, suites...
    local dir="$1"
    shift
    for t in "$@"; do
        local exe
        exe="$(find "$dir/tests" -type f -name "$t" -perm -u+x | head -n1)"
        echo "sanitize: $dir: $t"
        "$exe" --gtest_brief=1 >"$dir/$t.log" 2>&1 || { tail -n 80 "$dir/$t.log"; echo "sanitize: $t FAILED ($dir)"; exit 1; }
    done
}

for step in "${steps[@]}"; do
    case "$step" in
        asan)
            configure build-asan "address,undefined" ON
            cmake --build build-asan -j "$jobs" --target "${asan_suites[@]}" fuzzers
            run_suites build-asan "${asan_suites[@]}"
            ;;
        fuzz)
            cmake --build build-asan -j "$jobs" --target fuzzers
            for f in "${fuzzers[@]}"; do
                work="build-asan/fuzz-work/$f"
                rm -rf "$work" && mkdir -p "$work"
                echo "sanitize: $f: ${fuzz_runs[$f]} runs"
                # New inputs go to $work, never into the committed corpus.
                "build-asan/tests/fuzz/$f" -seed=1 -runs="${fuzz_runs[$f]}" -max_len=65536 -timeout=60 -artifact_prefix="$work/" \
                    -rss_limit_mb=4096 "$work" "tests/fuzz/corpus/$f" >"build-asan/$f.log" 2>&1 ||
                    { tail -n 60 "build-asan/$f.log"; echo "sanitize: $f FAILED"; exit 1; }
                grep -E "^(#[0-9]+ *DONE|Done [0-9]+ runs)" "build-asan/$f.log" | tail -n1
            done
            ;;
        tsan)
            configure build-tsan thread OFF
            cmake --build build-tsan -j "$jobs" --target "${tsan_suites[@]}"
            OMP_NUM_THREADS=1 run_suites build-tsan "${tsan_suites[@]}"
            ;;
        *)
            echo "sanitize: unknown step '$step' (asan, fuzz or tsan)" >&2
            exit 2
            ;;
    esac
done
echo "sanitize: all jobs passed"
