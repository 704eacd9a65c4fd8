// config.json text: parse_model_config accepts it or throws phi::Error naming the field.
#include "common/error.h"
#include "sharding/model_config.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        phi::parse_model_config(std::string(phi::fuzz::text(data, size)), "fuzz/config.json");
    } catch (const phi::Error&) {
    }
    return 0;
}
