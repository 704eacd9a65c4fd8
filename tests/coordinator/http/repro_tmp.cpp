#include <gtest/gtest.h>
#include <chrono>
#include <thread>
#include "tests/support/serving_harness.h"
using namespace std::chrono;
TEST(Repro, Speed) {
    phi::test::ServingHarness h;
    for (int lp : {-1, 0, 3, -1, 3}) {
        phi::serving::GenerationRequest r; r.text = "Log"; r.params.max_tokens = 10; r.params.temperature = 0; r.params.ignore_eos = true;
        r.logprobs = lp; if (lp >= 0) r.params.logprobs = lp;
        std::atomic<bool> done{false};
        auto s0 = h.engine().stats();
        auto t0 = steady_clock::now();
        std::vector<double> at;
        auto req = h.service().submit(r, [&](const phi::serving::OutputEvent& e) { at.push_back(duration<double, std::milli>(steady_clock::now() - t0).count()); if (e.kind == phi::serving::OutputEvent::Kind::Done) done = true; });
        while (!done) std::this_thread::sleep_for(microseconds(200));
        auto s1 = h.engine().stats();
        printf("lp %d: %.1f ms, steps %ld, step_s %.4f fwd %.4f sample %.4f; events:", lp, duration<double, std::milli>(steady_clock::now() - t0).count(), s1.steps - s0.steps, s1.step_seconds - s0.step_seconds, s1.forward_seconds - s0.forward_seconds, s1.sample_seconds - s0.sample_seconds);
        for (double a : at) printf(" %.1f", a);
        printf("\n");
    }
}
