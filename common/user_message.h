// What a client may be shown of an exception: its message without the " [file.cpp:12]" that
// PHI_CHECK appends for operators (common/error.cpp's throw_error writes that suffix).
#pragma once

#include <exception>
#include <string>

namespace phi {

std::string user_message(const std::exception& e);

}  // namespace phi
