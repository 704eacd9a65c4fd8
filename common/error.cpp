// Builds the final error message; file:line goes last so the actionable text reads first.
#include "common/error.h"

#include <cstring>

namespace phi {

void throw_error(const char* file, int line, const std::string& msg) {
    const char* base = std::strrchr(file, '/');
    throw Error(msg, fmt::format("{}:{}", base ? base + 1 : file, line));
}

std::string user_message(const std::exception& e) {
    if (const auto* pe = dynamic_cast<const Error*>(&e)) return pe->message();
    return e.what();
}

}  // namespace phi
