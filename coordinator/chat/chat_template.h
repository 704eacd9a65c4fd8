// Chat templates: renders the `chat_template` string of a model's tokenizer_config.json exactly as
// HF transformers' apply_chat_template does (Jinja 3.1 in an ImmutableSandboxedEnvironment with
// trim_blocks, lstrip_blocks, loopcontrols, raise_exception and HF's tojson), with a small Jinja
// interpreter. A template that uses anything outside the supported subset is refused by compile(),
// naming the construct and where it is, so it is never rendered differently from HF.
//
// Supported: {{ }}, {% if/elif/else %}, {% for %} (else, inline `if` filter, tuple targets, loop.*,
// break/continue), {% set x = ... %}, block sets {% set x | filters %}...{% endset %}, namespace()
// with {% set ns.attr = ... %}, {% macro %} (defaults, varargs, kwargs, closures over the defining
// scope) and {% call(args) m() %}...{% endcall %} with caller(), HF's {% generation %} blocks,
// {% print %}, comments, whitespace control; literals, lists, tuples, dicts; + - * / // % ** ~,
// comparisons, in / not in, and/or/not, `a if c else b`; attributes, subscripts, slices; filters
// abs capitalize count d default first items join last length list lower map reject rejectattr
// replace reverse safe select selectattr string tojson trim upper (|safe makes a Markup, which
// escapes what + , its methods and .format() combine with it, as markupsafe does); the tests Jinja
// ships except callable/sameas/escaped/filter/test/lower/upper; str methods strip lstrip rstrip
// startswith endswith split upper lower capitalize replace join format (the sandbox's
// str.format, see py_format.h), dict methods items keys values get; raise_exception(), range(),
// namespace() and strftime_now() (RenderOptions::now freezes its clock).
// Refused: call of a name that is no macro or global, filter blocks, include/import/extends/
// block, with, raw, recursive loops, loop.cycle(), dict()/cycler()/joiner()/lipsum(), other
// filters/tests/methods, *args, macro parameters named caller/varargs/kwargs.
// Case mapping (upper/lower/capitalize) is ASCII-only and raises on non-ASCII text.
#pragma once

#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"
#include "coordinator/chat/jinja_value.h"

namespace phi::chat {

namespace jinja {
struct TemplateAst;
}

/// The template called raise_exception(message); message() is exactly the template's message.
class TemplateException : public phi::Error {
  public:
    explicit TemplateException(const std::string& message)
        : phi::Error("chat template raised an error: " + message), message_(message) {}
    const std::string& message() const { return message_; }

  private:
    std::string message_;
};

/// How one render runs.
struct RenderOptions {
    jinja::Limits limits;
    /// The local time strftime_now() sees; the clock when unset. Tests freeze it (only the
    /// broken-down date and time fields are read).
    std::optional<std::tm> now;
};

/// A compiled chat template. Cheap to copy; render() is const and thread-safe.
class ChatTemplate {
  public:
    /// Parses `source`. Throws phi::Error for syntax errors and for constructs outside the supported
    /// subset: "chat template uses unsupported Jinja construct 'filter block' at line 3, column 1".
    static ChatTemplate compile(std::string_view source);

    /// Renders with `context` (a JSON object) as the template's variables, e.g. {"messages": [...],
    /// "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>", "tools": null}.
    /// Use ordered_json so objects keep their key order (Python dicts do; tojson and loops show it).
    /// Throws TemplateException for raise_exception(), phi::Error for any other failure (including
    /// the resource limits).
    std::string render(const nlohmann::ordered_json& context) const;
    std::string render(const nlohmann::ordered_json& context, const jinja::Limits& limits) const;
    std::string render(const nlohmann::ordered_json& context, const RenderOptions& options) const;

    /// The context HF's apply_chat_template(messages, tools=..., add_generation_prompt=...) builds:
    /// drops message keys whose value is null, adds `thinking`/`reasoning_content` aliases of a
    /// message's reasoning, passes `tools` (null or an array), `documents` (null), the
    /// tokenizer's special tokens (`special_tokens`: {"bos_token": ..., "eos_token": ..., ...}) and
    /// any extra template variables (`extra`, which win over special tokens, as kwargs do in HF).
    static nlohmann::ordered_json hf_context(
        const nlohmann::ordered_json& messages, bool add_generation_prompt,
        const nlohmann::ordered_json& tools = nullptr,
        const nlohmann::ordered_json& special_tokens = nlohmann::ordered_json::object(),
        const nlohmann::ordered_json& extra = nlohmann::ordered_json::object());

  private:
    std::shared_ptr<const jinja::TemplateAst> ast_;
};

}  // namespace phi::chat
