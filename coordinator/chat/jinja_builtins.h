// Filters, tests, functions and methods available to chat templates: the ones Jinja 3.1 and HF
// transformers provide that the interpreter reproduces exactly. Anything not listed here is refused
// when the template is compiled.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "coordinator/chat/jinja_value.h"

namespace phi::chat::jinja {

using KwArgs = std::vector<std::pair<std::string, Value>>;

bool is_supported_filter(std::string_view name);
bool is_supported_test(std::string_view name);
/// Methods callable as `value.name(...)` (str and dict methods).
bool is_supported_method(std::string_view name);
/// Globals callable as `name(...)`: raise_exception, range.
bool is_supported_function(std::string_view name);

Value apply_filter(Runtime& rt, const std::string& name, const Value& input, const std::vector<Value>& args,
                   const KwArgs& kwargs);
bool apply_test(Runtime& rt, const std::string& name, const Value& input, const std::vector<Value>& args,
                const KwArgs& kwargs);
Value call_callable(Runtime& rt, const Value& callee, const std::vector<Value>& args, const KwArgs& kwargs);

}  // namespace phi::chat::jinja
