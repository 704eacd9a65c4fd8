// UTF-8 well-formedness, in one place: the native protocol's frames, stop strings and chat templates
// all refuse ill-formed text with it.
#pragma once

#include <cstddef>
#include <string_view>

namespace phi {

/// Offset of the first byte that does not start or continue a well-formed UTF-8 sequence (overlong
/// forms, surrogates and code points past U+10FFFF are ill-formed; Unicode Table 3-7), or npos when
/// `s` is valid.
size_t invalid_utf8_offset(std::string_view s);

inline bool is_valid_utf8(std::string_view s) { return invalid_utf8_offset(s) == std::string_view::npos; }

}  // namespace phi
