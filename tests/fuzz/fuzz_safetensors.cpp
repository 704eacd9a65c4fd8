// A .safetensors file of arbitrary bytes: the header parser and its validation (offsets, dtypes,
// shapes against the data size) must refuse it with phi::Error or accept it consistently.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "sharding/safetensors.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // SafetensorsFile maps a file: write the input to one per process.
    const std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("phi-fuzz-" + std::to_string(::getpid()) + ".safetensors");
    {
        std::ofstream f(path, std::ios::binary | std::ios::trunc);
        f.write(reinterpret_cast<const char*>(data), std::streamsize(size));
    }
    try {
        phi::SafetensorsFile file(path);
        for (const auto& [name, t] : file.tensors()) {
            // Every accepted tensor lies inside the file: touch its first and last byte.
            if (t.nbytes > 0) {
                volatile uint8_t first = t.data[0], last = t.data[t.nbytes - 1];
                (void)first;
                (void)last;
            }
        }
    } catch (const phi::Error&) {
    }
    std::filesystem::remove(path);
    return 0;
}
