// Filters, tests, functions and methods for chat templates (see jinja_builtins.h). Each one follows
// its definition in jinja2/filters.py, jinja2/tests.py, HF's chat_template_utils.py or CPython's
// str/dict methods; map/select/reject/selectattr/rejectattr/items are lazy generators, as in Jinja.
#include "coordinator/chat/jinja_builtins.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "coordinator/chat/py_format.h"
#include "coordinator/chat/py_text.h"

namespace phi::chat::jinja {
namespace {

constexpr std::string_view k_filters[] = {
    "abs",     "capitalize", "count",      "d",      "default", "first",  "items",      "join",
    "last",    "length",     "list",       "lower",  "map",     "reject", "rejectattr", "replace",
    "reverse", "safe",       "select",     "selectattr", "string", "tojson", "trim", "upper"};
constexpr std::string_view k_tests[] = {
    "defined", "undefined", "none",    "boolean",     "true",     "false", "integer",  "float",
    "number",  "string",    "mapping", "iterable",    "sequence", "odd",   "even",     "divisibleby",
    "eq",      "equalto",   "==",      "ne",          "!=",       "lt",    "lessthan", "<",
    "le",      "<=",        "gt",      "greaterthan", ">",        "ge",    ">=",       "in"};
constexpr std::string_view k_methods[] = {"strip", "lstrip", "rstrip", "startswith", "endswith",
                                          "split", "upper",  "lower",  "capitalize", "replace",
                                          "join",  "items",  "keys",   "values",     "get",
                                          "format"};

template <size_t N>
bool contains_name(const std::string_view (&names)[N], std::string_view name) {
    return std::find(std::begin(names), std::end(names), name) != std::end(names);
}

struct Param {
    const char* name;
    std::optional<Value> default_value;  // nullopt: required
};

// Python argument binding for a builtin with the given parameters.
std::vector<Value> bind(const std::string& fn, std::initializer_list<Param> params,
                        const std::vector<Value>& args, const KwArgs& kwargs, bool positional_only = false) {
    const std::vector<Param> ps(params);
    if (args.size() > ps.size()) {
        fail(fn + "() takes at most " + std::to_string(ps.size()) + " arguments (" +
             std::to_string(args.size()) + " given)");
    }
    std::vector<std::optional<Value>> bound(ps.size());
    for (size_t k = 0; k < args.size(); ++k) bound[k] = args[k];
    for (const auto& [key, value] : kwargs) {
        if (positional_only) fail(fn + "() takes no keyword arguments");
        size_t k = 0;
        while (k < ps.size() && key != ps[k].name) ++k;
        if (k == ps.size()) fail(fn + "() got an unexpected keyword argument '" + key + "'");
        if (bound[k]) fail(fn + "() got multiple values for argument '" + key + "'");
        bound[k] = value;
    }
    std::vector<Value> out;
    out.reserve(ps.size());
    for (size_t k = 0; k < ps.size(); ++k) {
        if (!bound[k]) {
            if (!ps[k].default_value)
                fail(fn + "() missing required argument '" + std::string(ps[k].name) + "'");
            bound[k] = ps[k].default_value;
        }
        out.push_back(std::move(*bound[k]));
    }
    return out;
}

std::optional<std::string> optional_str(const Value& v, const std::string& what) {
    if (v.is_none()) return std::nullopt;
    if (!v.is_string()) fail(what + " arg must be None or str");
    return v.str();
}

int64_t int_arg(const Value& v, const std::string& what) {
    if (!v.is_int_like())
        fail("'" + type_name(v) + "' object cannot be interpreted as an integer (" + what + ")");
    return v.as_int();
}

std::string ascii_case(Runtime& rt, const std::string& s, const char* op, bool upper_first, bool lower_rest,
                       bool upper_all) {
    if (!py::is_ascii(s)) {
        fail(std::string(op) + " of non-ASCII text is not supported by the chat template interpreter");
    }
    rt.charge(s.size() / 64);
    std::string out = s;
    for (size_t k = 0; k < out.size(); ++k) {
        char& c = out[k];
        const bool up = upper_all || (upper_first && k == 0);
        if (up) {
            if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
        } else if (lower_rest) {
            if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        }
    }
    return out;
}

// make_attrgetter: "a.b.0" -> getitem(getitem(getitem(x, 'a'), 'b'), 0)
std::vector<Value> attribute_parts(const Value& attribute) {
    std::vector<Value> parts;
    if (attribute.is_none()) return parts;
    if (!attribute.is_string()) {
        parts.push_back(attribute);
        return parts;
    }
    for (const std::string& p : py::split(attribute.str(), std::string("."), -1)) {
        const bool digits =
            !p.empty() && std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; });
        if (digits) {
            if (p.size() > 18) fail("attribute index too large");
            parts.push_back(Value::integer(std::stoll(p)));
        } else {
            if (!py::is_ascii(p)) fail("non-ASCII attribute names in filters are not supported");
            parts.push_back(Value::string(p));
        }
    }
    return parts;
}

Value get_path(Runtime& rt, Value item, const std::vector<Value>& parts,
               const std::optional<Value>& default_value) {
    for (const Value& part : parts) {
        item = get_item(rt, item, part);
        if (default_value && !default_value->is_none() && item.is_undefined()) item = *default_value;
    }
    return item;
}

// The lazy generators of map/select/reject/selectattr/rejectattr/items.
class FilterIterator : public Iterator {
  public:
    enum class Mode { Map, Select, Reject, SelectAttr, RejectAttr, Items };

    FilterIterator(Mode mode, Value source, std::vector<Value> args, KwArgs kwargs)
        : mode_(mode), source_(std::move(source)), args_(std::move(args)), kwargs_(std::move(kwargs)) {}

    std::optional<Value> next(Runtime& rt) override {
        if (done_) return std::nullopt;
        if (!started_) {
            started_ = true;
            if (!start(rt)) {
                done_ = true;
                return std::nullopt;
            }
        }
        while (true) {
            std::optional<Value> item = it_.next(rt);
            if (!item) {
                done_ = true;
                return std::nullopt;
            }
            switch (mode_) {
                case Mode::Items: {
                    const Value* v = source_.dict->find(*item);
                    return Value::tuple({*item, v ? *v : Value::none()});
                }
                case Mode::Map:
                    if (map_filter_) return apply_filter(rt, *map_filter_, *item, args_, kwargs_);
                    return get_path(rt, *item, parts_, default_);
                default: {
                    const Value probe = attr_mode() ? get_path(rt, *item, parts_, std::nullopt) : *item;
                    bool ok =
                        test_name_ ? apply_test(rt, *test_name_, probe, test_args_, kwargs_) : truthy(probe);
                    if (mode_ == Mode::Reject || mode_ == Mode::RejectAttr) ok = !ok;
                    if (ok) return item;
                }
            }
        }
    }

  private:
    bool attr_mode() const { return mode_ == Mode::SelectAttr || mode_ == Mode::RejectAttr; }

    // The code before the generator's first yield: `if value:` and the argument preparation.
    bool start(Runtime& rt) {
        if (mode_ == Mode::Items) {
            if (source_.is_undefined()) return false;
            if (source_.kind != ValueKind::Dict) fail("Can only get item pairs from a mapping.");
            it_ = iterate(source_);
            return true;
        }
        if (!truthy(source_)) return false;
        if (mode_ == Mode::Map) {
            const bool has_attribute = std::any_of(kwargs_.begin(), kwargs_.end(),
                                                   [](const auto& kv) { return kv.first == "attribute"; });
            if (args_.empty() && has_attribute) {
                Value attribute;
                for (const auto& [k, v] : kwargs_) {
                    if (k == "attribute") {
                        attribute = v;
                    } else if (k == "default") {
                        default_ = v;
                    } else {
                        fail("Unexpected keyword argument '" + k + "'");
                    }
                }
                parts_ = attribute_parts(attribute);
            } else {
                if (args_.empty()) fail("map requires a filter argument");
                if (!args_[0].is_string()) fail("map requires a filter name");
                map_filter_ = args_[0].str();
                args_.erase(args_.begin());
            }
        } else {
            size_t off = 0;
            if (attr_mode()) {
                if (args_.empty()) fail("Missing parameter for attribute name");
                parts_ = attribute_parts(args_[0]);
                off = 1;
            }
            if (args_.size() > off) {
                if (!args_[off].is_string()) fail("test name must be a string");
                test_name_ = args_[off].str();
                test_args_.assign(args_.begin() + static_cast<std::ptrdiff_t>(off) + 1, args_.end());
            }
        }
        it_ = iterate(source_);
        return true;
    }

    Mode mode_;
    Value source_;
    std::vector<Value> args_;
    KwArgs kwargs_;
    bool started_ = false;
    bool done_ = false;
    Iteration it_;
    std::vector<Value> parts_;
    std::optional<Value> default_;
    std::optional<std::string> map_filter_;
    std::optional<std::string> test_name_;
    std::vector<Value> test_args_;
};

// reversed(x) over an immutable snapshot.
class ListIterator : public Iterator {
  public:
    explicit ListIterator(std::vector<Value> items) : items_(std::move(items)) {}
    std::optional<Value> next(Runtime& rt) override {
        rt.charge(1);
        if (pos_ >= items_.size()) return std::nullopt;
        return items_[pos_++];
    }

  private:
    std::vector<Value> items_;
    size_t pos_ = 0;
};

Value view(const Value& dict, SequenceKind kind) {
    std::vector<Value> items;
    items.reserve(dict.dict->entries.size());
    for (const auto& [k, v] : dict.dict->entries) {
        if (kind == SequenceKind::DictKeys) {
            items.push_back(k);
        } else if (kind == SequenceKind::DictValues) {
            items.push_back(v);
        } else {
            items.push_back(Value::tuple({k, v}));
        }
    }
    Value out = Value::list(std::move(items));
    const_cast<SequenceData&>(*out.seq).kind = kind;
    return out;
}

Value tojson(Runtime& rt, const Value& input, const std::vector<Value>& args, const KwArgs& kwargs) {
    // HF: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
    const std::vector<Value> a = bind("tojson",
                                      {{"ensure_ascii", Value::boolean(false)},
                                       {"indent", Value::none()},
                                       {"separators", Value::none()},
                                       {"sort_keys", Value::boolean(false)}},
                                      args, kwargs);
    JsonOptions opt;
    opt.ensure_ascii = truthy(a[0]);
    if (!a[1].is_none()) {
        if (a[1].is_string()) {
            opt.indent = a[1].str();
        } else if (a[1].is_int_like()) {
            const int64_t n = a[1].as_int();
            if (n > 4096) fail("tojson indent too large");
            opt.indent = std::string(n > 0 ? static_cast<size_t>(n) : 0, ' ');
        } else {
            fail("can't multiply sequence by non-int of type '" + type_name(a[1]) + "'");
        }
        opt.item_separator = ",";
    }
    if (!a[2].is_none()) {
        if (!a[2].is_list_or_tuple() || a[2].seq->items.size() != 2 || !a[2].seq->items[0].is_string() ||
            !a[2].seq->items[1].is_string()) {
            fail("tojson separators must be a pair of strings");
        }
        opt.item_separator = a[2].seq->items[0].str();
        opt.key_separator = a[2].seq->items[1].str();
    }
    opt.sort_keys = truthy(a[3]);
    std::string out;
    append_json(out, input, opt, rt);
    rt.check_string(out.size());
    rt.charge(out.size() / 64);
    return Value::string(std::move(out));
}

Value join(Runtime& rt, const Value& input, const std::vector<Value>& args, const KwArgs& kwargs) {
    const std::vector<Value> a =
        bind("join", {{"d", Value::string("")}, {"attribute", Value::none()}}, args, kwargs);
    const std::string sep = to_str(a[0], rt);
    const std::vector<Value> parts = attribute_parts(a[1]);
    Iteration it = iterate(input);
    std::string out;
    bool first = true;
    while (std::optional<Value> item = it.next(rt)) {
        if (!first) out += sep;
        first = false;
        append_str(out, a[1].is_none() ? *item : get_path(rt, *item, parts, std::nullopt), rt);
        rt.check_string(out.size());
    }
    rt.charge(out.size() / 64);
    return Value::string(std::move(out));
}

Value last(Runtime& rt, const Value& input) {
    switch (input.kind) {
        case ValueKind::Undefined:
            return Value::undefined();
        case ValueKind::String: {
            if (input.s->empty()) return Value::undefined();
            size_t start = input.s->size() - 1;
            while (start > 0 && (static_cast<unsigned char>((*input.s)[start]) & 0xC0) == 0x80) --start;
            return Value::string(input.s->substr(start));
        }
        case ValueKind::Sequence:
            return input.seq->items.empty() ? Value::undefined() : input.seq->items.back();
        case ValueKind::Dict:
            return input.dict->entries.empty() ? Value::undefined() : input.dict->entries.back().first;
        default:
            fail("'" + type_name(input) + "' object is not reversible");
    }
}

Value reverse(Runtime& rt, const Value& input) {
    switch (input.kind) {
        case ValueKind::String: {
            rt.charge(input.s->size() / 64);
            const std::vector<size_t> off = py::code_point_offsets(*input.s);
            std::string out;
            out.reserve(input.s->size());
            for (size_t k = off.size() - 1; k > 0; --k) out.append(*input.s, off[k - 1], off[k] - off[k - 1]);
            return Value::string(std::move(out));
        }
        case ValueKind::Undefined:
            return Value::iterator(std::make_shared<ListIterator>(std::vector<Value>{}));
        case ValueKind::Sequence: {
            std::vector<Value> items(input.seq->items.rbegin(), input.seq->items.rend());
            return Value::iterator(std::make_shared<ListIterator>(std::move(items)));
        }
        case ValueKind::Dict: {
            std::vector<Value> keys;
            for (auto it = input.dict->entries.rbegin(); it != input.dict->entries.rend(); ++it)
                keys.push_back(it->first);
            return Value::iterator(std::make_shared<ListIterator>(std::move(keys)));
        }
        case ValueKind::Iterator: {
            std::vector<Value> items = to_list(rt, input);
            std::reverse(items.begin(), items.end());
            return Value::list(std::move(items));
        }
        default:
            fail("argument must be iterable");
    }
}

}  // namespace

bool is_supported_filter(std::string_view name) {
    return contains_name(k_filters, name);
}
bool is_supported_test(std::string_view name) {
    return contains_name(k_tests, name);
}
bool is_supported_method(std::string_view name) {
    return contains_name(k_methods, name);
}
bool is_supported_function(std::string_view name) {
    return name == "raise_exception" || name == "range" || name == "namespace" || name == "strftime_now";
}

namespace {

Value apply_plain_filter(Runtime& rt, const std::string& name, const Value& input, const std::vector<Value>& args,
                         const KwArgs& kwargs);
Value call_plain_method(Runtime& rt, const Value& self, const std::string& m, const std::vector<Value>& args,
                        const KwArgs& kwargs);

// Markup's wrapped str methods escape their string arguments (markupsafe _simple_escaping_wrapper).
std::vector<Value> escape_args(Runtime& rt, const std::vector<Value>& args) {
    std::vector<Value> out;
    for (const Value& a : args) out.push_back(a.is_string() ? markup_string(markup_escape(a, rt)) : a);
    return out;
}
KwArgs escape_kwargs(Runtime& rt, const KwArgs& kwargs) {
    KwArgs out;
    for (const auto& [k, a] : kwargs) out.emplace_back(k, a.is_string() ? markup_string(markup_escape(a, rt)) : a);
    return out;
}
Value as_markup(Value v) {
    v.markup = true;
    return v;
}

}  // namespace

Value apply_filter(Runtime& rt, const std::string& name, const Value& input, const std::vector<Value>& args,
                   const KwArgs& kwargs) {
    rt.charge(1);
    if (name == "safe") {  // do_mark_safe: Markup(value)
        bind("safe", {}, args, kwargs);
        if (input.is_string() && input.markup) return input;
        return markup_string(to_str(input, rt));
    }
    if (input.is_string() && input.markup) {
        // These filters go through soft_str() or slicing and so keep (and, for trim's chars, escape
        // into) the Markup; the others return plain values.
        if (name == "trim") return as_markup(apply_plain_filter(rt, name, input, escape_args(rt, args), escape_kwargs(rt, kwargs)));
        if (name == "upper" || name == "lower" || name == "capitalize" || name == "string" || name == "reverse") {
            return as_markup(apply_plain_filter(rt, name, input, args, kwargs));
        }
    }
    return apply_plain_filter(rt, name, input, args, kwargs);
}

namespace {

Value apply_plain_filter(Runtime& rt, const std::string& name, const Value& input, const std::vector<Value>& args,
                         const KwArgs& kwargs) {
    if (name == "trim") {
        const std::vector<Value> a = bind("trim", {{"chars", Value::none()}}, args, kwargs);
        if (input.is_string()) rt.charge(input.s->size() / 64);
        return Value::string(py::strip(to_str(input, rt), optional_str(a[0], "strip"), py::StripSide::Both));
    }
    if (name == "length" || name == "count") {
        bind(name, {}, args, kwargs);
        if (input.is_string()) rt.charge(input.s->size() / 64);
        const std::optional<size_t> n = length(input);
        if (!n) fail("object of type '" + type_name(input) + "' has no len()");
        return Value::integer(static_cast<int64_t>(*n));
    }
    if (name == "upper" || name == "lower" || name == "capitalize") {
        bind(name, {}, args, kwargs);
        const std::string s = to_str(input, rt);
        if (name == "upper") return Value::string(ascii_case(rt, s, "upper", false, false, true));
        if (name == "lower") return Value::string(ascii_case(rt, s, "lower", false, true, false));
        return Value::string(ascii_case(rt, s, "capitalize", true, true, false));
    }
    if (name == "default" || name == "d") {
        const std::vector<Value> a = bind(
            name, {{"default_value", Value::string("")}, {"boolean", Value::boolean(false)}}, args, kwargs);
        if (input.is_undefined() || (truthy(a[1]) && !truthy(input))) return a[0];
        return input;
    }
    if (name == "string") {
        bind(name, {}, args, kwargs);
        return input.is_string() ? input : Value::string(to_str(input, rt));
    }
    if (name == "tojson") return tojson(rt, input, args, kwargs);
    if (name == "join") return join(rt, input, args, kwargs);
    if (name == "first") {
        bind(name, {}, args, kwargs);
        Iteration it = iterate(input);
        std::optional<Value> v = it.next(rt);
        return v ? *v : Value::undefined();
    }
    if (name == "last") {
        bind(name, {}, args, kwargs);
        return last(rt, input);
    }
    if (name == "list") {
        bind(name, {}, args, kwargs);
        return Value::list(to_list(rt, input));
    }
    if (name == "items") {
        bind(name, {}, args, kwargs);
        return Value::iterator(std::make_shared<FilterIterator>(FilterIterator::Mode::Items, input,
                                                                std::vector<Value>{}, KwArgs{}));
    }
    if (name == "map" || name == "select" || name == "reject" || name == "selectattr" ||
        name == "rejectattr") {
        const FilterIterator::Mode mode = name == "map"          ? FilterIterator::Mode::Map
                                          : name == "select"     ? FilterIterator::Mode::Select
                                          : name == "reject"     ? FilterIterator::Mode::Reject
                                          : name == "selectattr" ? FilterIterator::Mode::SelectAttr
                                                                 : FilterIterator::Mode::RejectAttr;
        return Value::iterator(std::make_shared<FilterIterator>(mode, input, args, kwargs));
    }
    if (name == "reverse") {
        bind(name, {}, args, kwargs);
        return reverse(rt, input);
    }
    if (name == "replace") {
        const std::vector<Value> a =
            bind("replace", {{"old", std::nullopt}, {"new", std::nullopt}, {"count", Value::none()}}, args,
                 kwargs);
        const int64_t count = a[2].is_none() ? -1 : int_arg(a[2], "replace count");
        const std::string s = to_str(input, rt);
        std::string out = py::replace(s, to_str(a[0], rt), to_str(a[1], rt), count);
        rt.check_string(out.size());
        rt.charge(out.size() / 64);
        return Value::string(std::move(out));
    }
    if (name == "abs") {
        bind(name, {}, args, kwargs);
        if (input.is_int_like()) {
            if (input.as_int() == INT64_MIN) fail("integer overflow in chat template arithmetic");
            return Value::integer(input.as_int() < 0 ? -input.as_int() : input.as_int());
        }
        if (input.kind == ValueKind::Float) return Value::real(std::fabs(input.f));
        fail("bad operand type for abs(): '" + type_name(input) + "'");
    }
    fail("no filter named '" + name + "'");
}

}  // namespace

bool apply_test(Runtime& rt, const std::string& name, const Value& input, const std::vector<Value>& args,
                const KwArgs& kwargs) {
    rt.charge(1);
    auto no_args = [&]() { bind(name, {}, args, kwargs); };
    if (name == "defined") return no_args(), !input.is_undefined();
    if (name == "undefined") return no_args(), input.is_undefined();
    if (name == "none") return no_args(), input.is_none();
    if (name == "boolean") return no_args(), input.kind == ValueKind::Bool;
    if (name == "true") return no_args(), input.kind == ValueKind::Bool && input.b;
    if (name == "false") return no_args(), input.kind == ValueKind::Bool && !input.b;
    if (name == "integer") return no_args(), input.kind == ValueKind::Int;
    if (name == "float") return no_args(), input.kind == ValueKind::Float;
    if (name == "number") return no_args(), input.is_number();
    if (name == "string") return no_args(), input.is_string();
    if (name == "mapping") return no_args(), input.kind == ValueKind::Dict;
    if (name == "iterable") {
        no_args();
        switch (input.kind) {
            case ValueKind::Undefined:
            case ValueKind::String:
            case ValueKind::Sequence:
            case ValueKind::Dict:
            case ValueKind::Iterator:
            case ValueKind::Loop:
                return true;
            default:
                return false;
        }
    }
    if (name == "sequence") {
        no_args();
        switch (input.kind) {
            case ValueKind::Undefined:
            case ValueKind::String:
            case ValueKind::Dict:
                return true;
            case ValueKind::Sequence:
                return input.seq->kind == SequenceKind::List || input.seq->kind == SequenceKind::Tuple ||
                       input.seq->kind == SequenceKind::Range;
            default:
                return false;
        }
    }
    if (name == "odd" || name == "even") {
        no_args();
        const Value r = binary(rt, BinaryOp::Mod, input, Value::integer(2));
        return equals(r, Value::integer(name == "odd" ? 1 : 0));
    }
    if (name == "divisibleby") {
        const std::vector<Value> a = bind(name, {{"num", std::nullopt}}, args, kwargs);
        return equals(binary(rt, BinaryOp::Mod, input, a[0]), Value::integer(0));
    }
    if (name == "in") {
        const std::vector<Value> a = bind(name, {{"seq", std::nullopt}}, args, kwargs);
        return contains(rt, a[0], input);
    }
    CompareOp op;
    if (name == "eq" || name == "equalto" || name == "==") {
        op = CompareOp::Eq;
    } else if (name == "ne" || name == "!=") {
        op = CompareOp::Ne;
    } else if (name == "lt" || name == "lessthan" || name == "<") {
        op = CompareOp::Lt;
    } else if (name == "le" || name == "<=") {
        op = CompareOp::Le;
    } else if (name == "gt" || name == "greaterthan" || name == ">") {
        op = CompareOp::Gt;
    } else if (name == "ge" || name == ">=") {
        op = CompareOp::Ge;
    } else {
        fail("no test named '" + name + "'");
    }
    // operator.eq & co. take exactly two positional arguments
    if (!kwargs.empty()) fail(name + "() takes no keyword arguments");
    if (args.size() != 1) fail(name + " expected 2 arguments, got " + std::to_string(args.size() + 1));
    return compare(rt, op, input, args[0]);
}

Value call_callable(Runtime& rt, const Value& callee, const std::vector<Value>& args, const KwArgs& kwargs) {
    rt.charge(1);
    if (callee.is_undefined()) {
        if (callee.s) fail("'" + *callee.s + "' is undefined");
        fail("an undefined value was called");
    }
    if (callee.kind != ValueKind::Callable) fail("'" + type_name(callee) + "' object is not callable");
    const CallableData& c = *callee.callable;
    if (!c.is_method) {
        if (c.name == "raise_exception") {
            const std::vector<Value> a = bind("raise_exception", {{"message", std::nullopt}}, args, kwargs);
            throw TemplateRaised(to_str(a[0], rt));
        }
        if (c.name == "range") {
            if (!kwargs.empty()) fail("range() takes no keyword arguments");
            if (args.empty() || args.size() > 3) fail("range expected 1 to 3 arguments");
            std::vector<int64_t> v;
            for (const Value& x : args) v.push_back(int_arg(x, "range"));
            if (v.size() == 1) return Value::range(0, v[0], 1);
            return Value::range(v[0], v[1], v.size() == 3 ? v[2] : 1);
        }
        fail("function '" + c.name + "' is not supported");
    }
    const Value& self = c.self;
    const std::string& m = c.name;
    if (self.is_string() && !self.markup && m == "format") {  // the sandbox's format_string
        return Value::string(py_format(rt, self.str(), args, kwargs, false));
    }
    if (self.is_string() && self.markup) {
        if (m == "format") return markup_string(py_format(rt, self.str(), args, kwargs, true));
        if (m == "strip" || m == "lstrip" || m == "rstrip" || m == "upper" || m == "lower" || m == "capitalize" ||
            m == "replace") {
            return as_markup(call_plain_method(rt, self, m, escape_args(rt, args), escape_kwargs(rt, kwargs)));
        }
        if (m == "split") {
            const Value parts = call_plain_method(rt, self, m, args, kwargs);
            std::vector<Value> items;
            for (const Value& p : parts.seq->items) items.push_back(as_markup(p));
            return Value::list(std::move(items));
        }
        if (m == "join") {  // Markup.join escapes every item
            const std::vector<Value> a = bind(m, {{"iterable", std::nullopt}}, args, kwargs, true);
            std::vector<Value> items;
            Iteration it = iterate(a[0]);
            while (std::optional<Value> item = it.next(rt)) items.push_back(markup_string(markup_escape(*item, rt)));
            return as_markup(call_plain_method(rt, self, m, {Value::list(std::move(items))}, {}));
        }
    }
    return call_plain_method(rt, self, m, args, kwargs);
}

namespace {

Value call_plain_method(Runtime& rt, const Value& self, const std::string& m, const std::vector<Value>& args,
                        const KwArgs& kwargs) {
    if (self.is_string()) {
        const std::string& s = self.str();
        rt.charge(s.size() / 64);
        if (m == "strip" || m == "lstrip" || m == "rstrip") {
            const std::vector<Value> a = bind(m, {{"chars", Value::none()}}, args, kwargs, true);
            const py::StripSide side = m == "strip"    ? py::StripSide::Both
                                       : m == "lstrip" ? py::StripSide::Left
                                                       : py::StripSide::Right;
            return Value::string(py::strip(s, optional_str(a[0], m), side));
        }
        if (m == "startswith" || m == "endswith") {
            const std::vector<Value> a = bind(m, {{"prefix", std::nullopt}}, args, kwargs, true);
            std::vector<std::string> options;
            if (a[0].is_string()) {
                options.push_back(a[0].str());
            } else if (a[0].kind == ValueKind::Sequence && a[0].seq->kind == SequenceKind::Tuple) {
                for (const Value& x : a[0].seq->items) {
                    if (!x.is_string())
                        fail("tuple for " + m + " must only contain str, not " + type_name(x));
                    options.push_back(x.str());
                }
            } else {
                fail(m + " first arg must be str or a tuple of str, not " + type_name(a[0]));
            }
            for (const std::string& o : options) {
                if (o.size() > s.size()) continue;
                if (m == "startswith" ? s.compare(0, o.size(), o) == 0
                                      : s.compare(s.size() - o.size(), o.size(), o) == 0) {
                    return Value::boolean(true);
                }
            }
            return Value::boolean(false);
        }
        if (m == "split") {
            const std::vector<Value> a =
                bind(m, {{"sep", Value::none()}, {"maxsplit", Value::integer(-1)}}, args, kwargs);
            const std::optional<std::string> sep = optional_str(a[0], "split");
            if (sep && sep->empty()) fail("empty separator");
            std::vector<Value> parts;
            for (std::string& p : py::split(s, sep, int_arg(a[1], "maxsplit")))
                parts.push_back(Value::string(std::move(p)));
            rt.check_items(parts.size());
            return Value::list(std::move(parts));
        }
        if (m == "upper" || m == "lower" || m == "capitalize") {
            bind(m, {}, args, kwargs, true);
            if (m == "upper") return Value::string(ascii_case(rt, s, "upper", false, false, true));
            if (m == "lower") return Value::string(ascii_case(rt, s, "lower", false, true, false));
            return Value::string(ascii_case(rt, s, "capitalize", true, true, false));
        }
        if (m == "replace") {
            const std::vector<Value> a =
                bind(m, {{"old", std::nullopt}, {"new", std::nullopt}, {"count", Value::integer(-1)}}, args,
                     kwargs, true);
            if (!a[0].is_string() || !a[1].is_string()) fail("replace() arguments must be str");
            std::string out = py::replace(s, a[0].str(), a[1].str(), int_arg(a[2], "replace count"));
            rt.check_string(out.size());
            return Value::string(std::move(out));
        }
        if (m == "join") {
            const std::vector<Value> a = bind(m, {{"iterable", std::nullopt}}, args, kwargs, true);
            Iteration it = iterate(a[0]);
            std::string out;
            size_t index = 0;
            while (std::optional<Value> item = it.next(rt)) {
                if (!item->is_string()) {
                    fail("sequence item " + std::to_string(index) + ": expected str instance, " +
                         type_name(*item) + " found");
                }
                if (index) out += s;
                out += item->str();
                rt.check_string(out.size());
                rt.charge((s.size() + item->s->size()) / 64);
                ++index;
            }
            return Value::string(std::move(out));
        }
    }
    if (self.kind == ValueKind::Dict) {
        if (m == "items" || m == "keys" || m == "values") {
            bind(m, {}, args, kwargs, true);
            const SequenceKind kind = m == "items"  ? SequenceKind::DictItems
                                      : m == "keys" ? SequenceKind::DictKeys
                                                    : SequenceKind::DictValues;
            rt.charge(self.dict->entries.size());
            return view(self, kind);
        }
        if (m == "get") {
            const std::vector<Value> a =
                bind(m, {{"key", std::nullopt}, {"default", Value::none()}}, args, kwargs, true);
            if (!hashable(a[0])) fail("unhashable type: '" + type_name(a[0]) + "'");
            const Value* v = self.dict->find(a[0]);
            return v ? *v : a[1];
        }
    }
    fail("method '" + m + "' of '" + type_name(self) + "' is not supported by the chat template interpreter");
}

}  // namespace

}  // namespace phi::chat::jinja
