#include "common/user_message.h"

#include <cctype>
#include <string_view>

#include "common/error.h"

namespace phi {

std::string user_message(const std::exception& e) {
    std::string msg = e.what();
    if (dynamic_cast<const Error*>(&e) == nullptr) return msg;
    // Strip a trailing " [name.ext:digits]", the only suffix throw_error adds.
    if (msg.empty() || msg.back() != ']') return msg;
    const size_t open = msg.rfind(" [");
    if (open == std::string::npos) return msg;
    const std::string_view loc(msg.data() + open + 2, msg.size() - open - 3);
    const size_t colon = loc.rfind(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == loc.size()) return msg;
    for (size_t i = colon + 1; i < loc.size(); ++i)
        if (!std::isdigit(static_cast<unsigned char>(loc[i]))) return msg;
    if (loc.substr(0, colon).find_first_of(" []") != std::string_view::npos) return msg;
    msg.resize(open);
    return msg;
}

}  // namespace phi
