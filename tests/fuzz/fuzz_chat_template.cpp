// A chat template and a messages array (the input's two NUL-separated parts): compile() accepts
// the template or refuses it with phi::Error; render() returns text or throws phi::Error (or the
// template's own raise_exception), within tight resource limits.
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "coordinator/chat/chat_template.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto parts = phi::fuzz::split(data, size, 2);
    using ojson = nlohmann::ordered_json;
    ojson messages = ojson::array({{{"role", "system"}, {"content", "Be brief."}},
                                   {{"role", "user"}, {"content", "Hi <|end|>"}},
                                   {{"role", "assistant"}, {"content", "Hello."}}});
    if (!parts[1].empty()) {
        ojson parsed = ojson::parse(parts[1], nullptr, /*allow_exceptions=*/false);
        if (parsed.is_array()) messages = std::move(parsed);
    }
    try {
        const phi::chat::ChatTemplate t = phi::chat::ChatTemplate::compile(parts[0]);
        phi::chat::jinja::Limits limits;
        limits.max_output_bytes = 1 << 20;
        limits.max_string_bytes = 1 << 20;
        limits.max_items = 1 << 14;
        limits.max_work = 200'000;
        for (bool gen : {false, true})
            t.render(phi::chat::ChatTemplate::hf_context(messages, gen, nullptr,
                                                         {{"bos_token", "<s>"}, {"eos_token", "</s>"}}),
                     limits);
    } catch (const phi::Error&) {
    }
    return 0;
}
