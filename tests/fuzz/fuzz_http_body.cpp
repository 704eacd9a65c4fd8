// HTTP request bodies: the JSON of /v1/completions (first byte even) or /v1/chat/completions
// (odd), through the request parser and the Service's prompt building (tokenization, the chat
// template) on the in-process serving stack. Every refusal is an ApiError naming a field or the
// body; nothing else may escape.
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "coordinator/serving/service.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/support/serving_harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static phi::test::ServingHarness harness_at_exit;  // one per process, stopped at exit
    phi::test::ServingHarness* harness = &harness_at_exit;
    if (size == 0) return 0;
    const bool chat = data[0] & 1;
    nlohmann::json body;
    try {
        // As the server parses a body: bounded nesting.
        body = nlohmann::json::parse(phi::fuzz::text(data + 1, size - 1), [](int depth, nlohmann::json::parse_event_t,
                                                                             nlohmann::json&) {
            if (depth > 64) throw phi::Error("too deep");
            return true;
        });
    } catch (const nlohmann::json::exception&) {
        return 0;
    } catch (const phi::Error&) {
        return 0;
    }
    try {
        const phi::serving::GenerationRequest r = phi::serving::parse_generation_request(body, chat);
        harness->service().prompt_ids(r);
    } catch (const phi::serving::ApiError&) {
    }
    return 0;
}
