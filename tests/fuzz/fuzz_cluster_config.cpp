// Cluster YAML: parse_cluster_config accepts it or throws phi::Error naming the key path; nothing
// of yaml-cpp's own may escape (it did for non-scalar keys, issue 14).
#include "common/error.h"
#include "coordinator/app/cluster_config.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        phi::app::parse_cluster_config(std::string(phi::fuzz::text(data, size)), "fuzz.yaml", "/base");
    } catch (const phi::Error&) {
    }
    return 0;
}
