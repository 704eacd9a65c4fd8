// Values of the chat-template interpreter and their Python semantics: what Jinja (running on
// CPython) does with str(), repr(), ==, <, +, in, len(), iteration, attribute and item lookup.
// Templates run in HF transformers' ImmutableSandboxedEnvironment, so values are never mutated;
// sharing them by pointer is indistinguishable from Python's reference semantics, except for
// iterators, which are one-shot and deliberately shared.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/error.h"

namespace phi::chat::jinja {

/// A render-time failure (Python raised while rendering). The interpreter adds the template line.
class RuntimeError : public phi::Error {
  public:
    explicit RuntimeError(const std::string& msg) : phi::Error(msg) {}
};

/// raise_exception('...') from the template; what() is exactly the template's message.
class TemplateRaised : public phi::Error {
  public:
    explicit TemplateRaised(const std::string& msg) : phi::Error(msg) {}
};

[[noreturn]] void fail(const std::string& msg);

/// Resource limits for one render; hostile templates hit these instead of exhausting the host.
struct Limits {
    size_t max_output_bytes = size_t{16} << 20;  ///< rendered text
    size_t max_string_bytes = size_t{16} << 20;  ///< any intermediate string
    size_t max_items = size_t{1} << 20;          ///< elements of any list/dict built while rendering
    uint64_t max_work = 20'000'000;              ///< evaluation steps (nodes, iterations, bytes/64)
    int max_data_depth = 256;                    ///< nesting of context JSON and of repr/tojson/==
};

/// Per-render bookkeeping shared by the evaluator and the builtins.
class Runtime {
  public:
    explicit Runtime(const Limits& limits) : limits(limits) {}
    void charge(uint64_t units) {
        work_ += units;
        if (work_ > limits.max_work) {
            fail("chat template exceeded its evaluation budget (" + std::to_string(limits.max_work) +
                 " steps); it loops too much for the given messages");
        }
    }
    void check_string(size_t bytes) const {
        if (bytes > limits.max_string_bytes) {
            fail("chat template built a string of more than " + std::to_string(limits.max_string_bytes) +
                 " bytes");
        }
    }
    void check_items(size_t n) const {
        if (n > limits.max_items) {
            fail("chat template built a collection of more than " + std::to_string(limits.max_items) +
                 " items");
        }
    }
    const Limits& limits;

  private:
    uint64_t work_ = 0;
};

enum class ValueKind { Undefined, None, Bool, Int, Float, String, Sequence, Dict, Iterator, Loop, Callable, Namespace };

/// Python types that behave as sequences of items.
enum class SequenceKind { List, Tuple, Range, DictKeys, DictValues, DictItems };

struct Value;
struct SequenceData;
struct DictData;
class Iterator;
struct LoopState;
struct CallableData;
struct NamespaceData;
struct MacroData;

struct Value {
    ValueKind kind = ValueKind::Undefined;
    bool b = false;
    int64_t i = 0;
    double f = 0.0;
    std::shared_ptr<const std::string> s;
    std::shared_ptr<const SequenceData> seq;
    std::shared_ptr<const DictData> dict;
    std::shared_ptr<Iterator> iter;
    std::shared_ptr<LoopState> loop;
    std::shared_ptr<const CallableData> callable;
    std::shared_ptr<NamespaceData> ns;  ///< Namespace: the one mutable value (Jinja's namespace())
    /// String: a markupsafe.Markup (made by |safe). Markup escapes plain strings combined with it
    /// by +, its methods and str.format (see markup_*), so the flag travels with the value.
    bool markup = false;

    static Value undefined() { return Value{}; }
    static Value none();
    static Value boolean(bool v);
    static Value integer(int64_t v);
    static Value real(double v);
    static Value string(std::string v);
    static Value list(std::vector<Value> items);
    static Value tuple(std::vector<Value> items);
    static Value range(int64_t start, int64_t stop, int64_t step);  // checks the sandbox's size limit
    static Value dict_value(std::shared_ptr<const DictData> d);
    static Value iterator(std::shared_ptr<Iterator> it);
    static Value function(std::string name);
    static Value method(Value self, std::string name);

    bool is_undefined() const { return kind == ValueKind::Undefined; }
    bool is_none() const { return kind == ValueKind::None; }
    bool is_string() const { return kind == ValueKind::String; }
    bool is_int_like() const { return kind == ValueKind::Int || kind == ValueKind::Bool; }
    bool is_number() const { return is_int_like() || kind == ValueKind::Float; }
    bool is_list_or_tuple() const;
    const std::string& str() const { return *s; }
    int64_t as_int() const { return kind == ValueKind::Bool ? (b ? 1 : 0) : i; }
    double as_double() const { return kind == ValueKind::Float ? f : static_cast<double>(as_int()); }
};

struct SequenceData {
    SequenceKind kind = SequenceKind::List;
    std::vector<Value> items;
    int64_t range_start = 0, range_stop = 0, range_step = 1;  // kind == Range
};

/// A Python dict: insertion-ordered entries, plus an index of the string keys.
struct DictData {
    std::vector<std::pair<Value, Value>> entries;
    std::unordered_map<std::string, size_t> string_index;

    const Value* find(const Value& key) const;  // key must be hashable
    void set(Value key, Value value);           // Python d[key] = value (keeps the first key's slot)
};

/// A Python iterator (generator, reversed()): one-shot, shared between copies of a Value.
class Iterator {
  public:
    virtual ~Iterator() = default;
    virtual std::optional<Value> next(Runtime& rt) = 0;
};

/// What `iter(value)` walks: sequences, dict keys, string characters, iterators, Undefined.
class Iteration {
  public:
    Iteration() = default;
    std::optional<Value> next(Runtime& rt);
    /// len(iterable) when Python's len() works on the iterated object.
    std::optional<size_t> length() const;

  private:
    friend Iteration iterate(const Value& v);
    Value source_;
    size_t pos_ = 0;  // item index, or byte offset for strings
};

/// iter(value); raises TypeError (RuntimeError) when the value is not iterable.
Iteration iterate(const Value& v);

/// State of a `{% for %}` loop, exposed to the template as `loop` (Jinja's LoopContext).
struct LoopState {
    Iteration source;
    std::vector<Value> lookahead;  // items pulled early by loop.last / loop.length / loop.nextitem
    size_t lookahead_pos = 0;
    int64_t index0 = -1;
    std::optional<int64_t> length;
    Value previous;  // Undefined before the first item
    bool has_previous = false;
    Value current;

    std::optional<Value> pull(Runtime& rt);  // next item for the loop body
    bool peek(Runtime& rt, Value* out);      // next item without consuming it
    int64_t total_length(Runtime& rt);       // loop.length
};

struct CallableData {
    bool is_method = false;
    std::string name;
    Value self;                                // bound object, for methods
    std::shared_ptr<const MacroData> macro;  // a template macro or call-block caller (evaluator's)
};

/// Jinja's Namespace (HF's TemplateNamespace): attributes set by `{% set ns.attr = value %}` are
/// seen by every holder of the object, across loop scopes; that is its purpose.
struct NamespaceData {
    DictData attrs;
};

/// markupsafe.escape(str): & < > ' " as HTML entities.
std::string html_escape(std::string_view s);
/// markupsafe.escape(v) as text: Markup is kept, any other value is str()'d and escaped.
std::string markup_escape(const Value& v, Runtime& rt);
/// A Markup string.
Value markup_string(std::string s);

// ---- Python semantics ----

/// Python type name, for error messages ('int', 'str', 'list', 'Undefined', ...).
std::string type_name(const Value& v);

bool truthy(const Value& v);

/// str(v) appended to `out`; raises for values whose str() is an address (iterators, methods).
void append_str(std::string& out, const Value& v, Runtime& rt);
std::string to_str(const Value& v, Runtime& rt);
/// repr(v)
void append_repr(std::string& out, const Value& v, Runtime& rt, int depth = 0);

/// Python ==; charges its work to `rt` when given.
bool equals(const Value& a, const Value& b, Runtime* rt = nullptr, int depth = 0);
/// a < b, a <= b, ... ; raises TypeError like Python for unorderable operands.
enum class CompareOp { Eq, Ne, Lt, Le, Gt, Ge, In, NotIn };
bool compare(Runtime& rt, CompareOp op, const Value& a, const Value& b);
/// `needle in container`
bool contains(Runtime& rt, const Value& container, const Value& needle);

enum class BinaryOp { Add, Sub, Mul, Div, FloorDiv, Mod, Pow };
Value binary(Runtime& rt, BinaryOp op, const Value& a, const Value& b);
Value negate(const Value& v);
Value positive(const Value& v);

/// len(v), nullopt when Python's len() raises TypeError.
std::optional<size_t> length(const Value& v);

/// Hashable by Python's rules (dict keys, `in` on dicts).
bool hashable(const Value& v);

/// Jinja's environment.getattr / getitem in HF's sandbox (missing -> Undefined).
Value get_attr(Runtime& rt, const Value& obj, const std::string& name);
Value get_item(Runtime& rt, const Value& obj, const Value& key);
/// obj[start:stop:step], evaluated directly by Python (errors propagate).
Value get_slice(Runtime& rt, const Value& obj, const Value& start, const Value& stop, const Value& step);

/// Python `list(v)`.
std::vector<Value> to_list(Runtime& rt, const Value& v);

/// Context data: JSON -> Value (objects keep their order with ordered_json).
Value from_json(const nlohmann::ordered_json& j, int max_depth);

/// HF's tojson: json.dumps(x, ensure_ascii, indent, separators, sort_keys).
struct JsonOptions {
    bool ensure_ascii = false;
    std::optional<std::string> indent;  // already expanded to the indent string
    std::string item_separator = ", ";
    std::string key_separator = ": ";
    bool sort_keys = false;
};
void append_json(std::string& out, const Value& v, const JsonOptions& opt, Runtime& rt, int depth = 0,
                 int level = 0);

}  // namespace phi::chat::jinja
