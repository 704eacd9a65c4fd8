// Reading environment variables in one place, so every knob is greppable.
#pragma once

#include <optional>
#include <string>

namespace phi {

/// The value of environment variable `name`, or nullopt when unset or empty.
std::optional<std::string> env_string(const char* name);

}  // namespace phi
