// Builds the final error message; file:line goes last so the actionable text reads first.
#include "common/error.h"

#include <cstring>

namespace phi {

void throw_error(const char* file, int line, const std::string& msg) {
    const char* base = std::strrchr(file, '/');
    throw Error(fmt::format("{} [{}:{}]", msg, base ? base + 1 : file, line));
}

}  // namespace phi
