// Helpers shared by the native protocol's server and phi-client (docs/PROTOCOL.md).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace phi::native {

/// Offset of the first byte that does not start or continue a well-formed UTF-8 sequence (overlong
/// forms, surrogates and code points past U+10FFFF are ill-formed), or npos when `s` is valid.
size_t invalid_utf8_offset(std::string_view s);

/// The hello frame's version: a client must refuse a server whose protocol it does not know.
inline constexpr const char* k_server_name = "phi-cluster";

}  // namespace phi::native
