// Error type and the PHI_CHECK macro: every failed check throws phi::Error with file:line and a
// message that tells the user what to fix. Checks are never compiled out.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace phi {

/// The one exception type of phi-cluster. `what()` is meant for an operator's eyes.
class Error : public std::runtime_error {
public:
    explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

[[noreturn]] void throw_error(const char* file, int line, const std::string& msg);

}  // namespace phi

#define PHI_CHECK(cond, ...)                                                         \
    do {                                                                             \
        if (!(cond)) [[unlikely]] {                                                  \
            ::phi::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__));      \
        }                                                                            \
    } while (0)

#define PHI_FAIL(...) ::phi::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
