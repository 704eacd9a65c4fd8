// Helpers shared by the libFuzzer targets: the input as text, split into parts at NUL bytes (a
// target that reads several files takes them from one input).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace phi::fuzz {

inline std::string_view text(const uint8_t* data, size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

/// The input cut at its first `parts - 1` NUL bytes; missing parts are empty.
inline std::vector<std::string_view> split(const uint8_t* data, size_t size, size_t parts) {
    std::vector<std::string_view> out;
    std::string_view rest = text(data, size);
    while (out.size() + 1 < parts) {
        const size_t nul = rest.find('\0');
        if (nul == std::string_view::npos) break;
        out.push_back(rest.substr(0, nul));
        rest.remove_prefix(nul + 1);
    }
    out.push_back(rest);
    out.resize(parts);
    return out;
}

}  // namespace phi::fuzz
