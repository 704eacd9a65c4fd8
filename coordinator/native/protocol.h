// Helpers shared by the native protocol's server and phi-client (docs/PROTOCOL.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/utf8.h"

namespace phi::native {

using phi::invalid_utf8_offset;  // common/utf8.h

/// The hello frame's version: a client must refuse a server whose protocol it does not know.
inline constexpr const char* k_server_name = "phi-cluster";

/// The native protocol's port in configs/default.yaml and phi-client's default, so that
/// `phi-client "hi"` reaches the default cluster (tests/coordinator/app checks they agree).
inline constexpr uint16_t k_default_port = 8700;

}  // namespace phi::native
