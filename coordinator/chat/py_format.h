// str.format() for chat templates, as Jinja's SandboxedFormatter runs it: replacement fields with
// automatic, positional and keyword names, attribute (sandboxed getattr) and item lookups, !s/!r
// conversions and the format-spec mini-language for str, int, bool and float. What it does not
// reproduce exactly (nested fields in specs, !a, 'n'/'c' types, zero padding with grouping,
// alternate float forms...) raises instead of guessing.
#pragma once

#include <string>
#include <vector>

#include "coordinator/chat/jinja_builtins.h"
#include "coordinator/chat/jinja_value.h"

namespace phi::chat::jinja {

/// `format_string.format(*args, **kwargs)`. With `escape` (the format string is a Markup), every
/// formatted field is HTML-escaped, as markupsafe's EscapeFormatter does.
std::string py_format(Runtime& rt, const std::string& format_string, const std::vector<Value>& args,
                      const KwArgs& kwargs, bool escape);

}  // namespace phi::chat::jinja
