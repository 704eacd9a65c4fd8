#include <gtest/gtest.h>
#include <chrono>
#include "coordinator/tokenizer/tokenizer.h"
#include "tests/support/fixtures.h"
TEST(Repro, DecodeSpeed) {
    auto tok = phi::tokenizer::Tokenizer::load(phi::test::fixture_dir("serving_tokenizer"));
    auto t0 = std::chrono::steady_clock::now();
    size_t total = 0;
    for (int32_t id = 0; id < 269; ++id) { if (tok.id_to_token(id)) total += tok.decode(std::span<const int32_t>(&id, 1), false).size(); }
    auto t1 = std::chrono::steady_clock::now();
    auto d = tok.incremental_decoder(true);
    for (int32_t id = 0; id < 269; ++id) total += d.step(id).size();
    auto t2 = std::chrono::steady_clock::now();
    printf("decode 269: %.3f ms, incremental 269: %.3f ms (%zu)\n", std::chrono::duration<double, std::milli>(t1 - t0).count(), std::chrono::duration<double, std::milli>(t2 - t1).count(), total);
}
