#include <gtest/gtest.h>
#include <thread>
#include "tests/support/serving_harness.h"
TEST(Repro, PartialSubmitLeaksQueue) {
    for (int iter = 0; iter < 20; ++iter) {
    phi::test::ServingHarnessOptions ho;
    ho.engine.max_num_seqs = 1;
    ho.engine.max_queued = 1;
    phi::test::ServingHarness h(ho);
    auto req = [](int n) { phi::serving::GenerationRequest r; r.text = "many"; r.n = n; r.params.max_tokens = 8; r.params.temperature = 0; return r; };
    try { h.service().submit(req(4), [](const phi::serving::OutputEvent&) {}); FAIL(); } catch (const phi::serving::ApiError& e) { EXPECT_EQ(e.status, 429); }
    std::this_thread::sleep_for(std::chrono::milliseconds(iter % 2 ? 0 : 1)); for (int k = 0; k < 100; ++k) { try { auto r = h.service().submit(req(1), [](const phi::serving::OutputEvent&) {}); break; } catch (const phi::serving::ApiError&) { std::this_thread::sleep_for(std::chrono::milliseconds(10)); } }
 std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::atomic<bool> done{false};
    try { h.service().submit(req(1), [&](const phi::serving::OutputEvent& e) { if (e.kind == phi::serving::OutputEvent::Kind::Done) done = true; }); }
    catch (const phi::serving::ApiError& e) { ADD_FAILURE() << "iter " << iter << ": " << e.what() << " queued " << h.engine().stats().queued << " in_flight " << h.service().in_flight(); continue; }
    for (int i = 0; i < 200 && !done; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_TRUE(done);
    }
}
