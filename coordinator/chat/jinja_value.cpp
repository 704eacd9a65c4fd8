// Python object semantics for the chat-template interpreter (see jinja_value.h). Each function
// names the CPython / Jinja behaviour it reproduces; where the exact behaviour would need machinery
// we do not have (string formatting, big integers, set-like dict views), it raises instead of
// guessing, so a template is never rendered differently from HF transformers.
#include "common/utf8.h"
#include "coordinator/chat/jinja_value.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "coordinator/chat/py_text.h"

namespace phi::chat::jinja {

void fail(const std::string& msg) {
    throw RuntimeError(msg);
}

namespace {

[[noreturn]] void undefined_error(const Value& v) {
    if (v.s) fail("'" + *v.s + "' is undefined");
    fail("an undefined value was used");
}

bool is_mutating_list_method(std::string_view n) {
    return n == "append" || n == "clear" || n == "extend" || n == "insert" || n == "pop" || n == "remove" ||
           n == "reverse" || n == "sort";
}
bool is_mutating_dict_method(std::string_view n) {
    return n == "clear" || n == "pop" || n == "popitem" || n == "setdefault" || n == "update";
}
bool is_dict_attribute(std::string_view n) {
    return is_mutating_dict_method(n) || n == "copy" || n == "fromkeys" || n == "get" || n == "items" ||
           n == "keys" || n == "values";
}
bool is_str_attribute(std::string_view n) {
    static const char* const k_names[] = {
        "capitalize", "casefold",     "center",       "count",   "encode",     "endswith",    "expandtabs",
        "find",       "format",       "format_map",   "index",   "isalnum",    "isalpha",     "isascii",
        "isdecimal",  "isdigit",      "isidentifier", "islower", "isnumeric",  "isprintable", "isspace",
        "istitle",    "isupper",      "join",         "ljust",   "lower",      "lstrip",      "maketrans",
        "partition",  "removeprefix", "removesuffix", "replace", "rfind",      "rindex",      "rjust",
        "rpartition", "rsplit",       "rstrip",       "split",   "splitlines", "startswith",  "strip",
        "swapcase",   "title",        "translate",    "upper",   "zfill"};
    return std::find(std::begin(k_names), std::end(k_names), n) != std::end(k_names);
}
bool is_int_method(std::string_view n) {
    return n == "as_integer_ratio" || n == "bit_count" || n == "bit_length" || n == "conjugate" ||
           n == "from_bytes" || n == "to_bytes";
}
bool is_float_method(std::string_view n) {
    return n == "as_integer_ratio" || n == "conjugate" || n == "fromhex" || n == "hex" || n == "is_integer";
}

int64_t checked_add(int64_t a, int64_t b) {
    int64_t r = 0;
    if (__builtin_add_overflow(a, b, &r)) fail("integer overflow in chat template arithmetic");
    return r;
}
int64_t checked_sub(int64_t a, int64_t b) {
    int64_t r = 0;
    if (__builtin_sub_overflow(a, b, &r)) fail("integer overflow in chat template arithmetic");
    return r;
}
int64_t checked_mul(int64_t a, int64_t b) {
    int64_t r = 0;
    if (__builtin_mul_overflow(a, b, &r)) fail("integer overflow in chat template arithmetic");
    return r;
}

// CPython's float floor division and modulo (Objects/floatobject.c, _float_div_mod).
void float_div_mod(double vx, double wx, double* floordiv, double* mod) {
    *mod = std::fmod(vx, wx);
    double div = (vx - *mod) / wx;
    if (*mod != 0.0) {
        if ((wx < 0) != (*mod < 0)) {
            *mod += wx;
            div -= 1.0;
        }
    } else {
        *mod = std::copysign(0.0, wx);
    }
    if (div != 0.0) {
        *floordiv = std::floor(div);
        if (div - *floordiv > 0.5) *floordiv += 1.0;
    } else {
        *floordiv = std::copysign(0.0, vx / wx);
    }
}

// Numbers compare exactly in Python, also int against float: long double holds both exactly here.
long double exact(const Value& v) {
    return v.kind == ValueKind::Float ? static_cast<long double>(v.f) : static_cast<long double>(v.as_int());
}

[[noreturn]] void type_error_binary(const char* op, const Value& a, const Value& b) {
    fail(std::string("unsupported operand type(s) for ") + op + ": '" + type_name(a) + "' and '" +
         type_name(b) + "'");
}

Value repeat_sequence(Runtime& rt, const Value& seq, int64_t count) {
    std::vector<Value> items;
    if (count > 0 && !seq.seq->items.empty()) {
        const size_t n = seq.seq->items.size();
        if (static_cast<uint64_t>(count) > rt.limits.max_items / n) rt.check_items(rt.limits.max_items + 1);
        items.reserve(n * static_cast<size_t>(count));
        for (int64_t k = 0; k < count; ++k)
            items.insert(items.end(), seq.seq->items.begin(), seq.seq->items.end());
        rt.charge(items.size());
    }
    return seq.seq->kind == SequenceKind::Tuple ? Value::tuple(std::move(items))
                                                : Value::list(std::move(items));
}

Value repeat_string(Runtime& rt, const std::string& s, int64_t count) {
    std::string out;
    if (count > 0 && !s.empty()) {
        if (static_cast<uint64_t>(count) > rt.limits.max_string_bytes / s.size()) {
            rt.check_string(rt.limits.max_string_bytes + 1);
        }
        out.reserve(s.size() * static_cast<size_t>(count));
        for (int64_t k = 0; k < count; ++k) out += s;
        rt.charge(out.size() / 64);
    }
    return Value::string(std::move(out));
}

// PySlice_Unpack + PySlice_AdjustIndices: returns the slice length.
int64_t adjust_slice(int64_t length, const Value& vstart, const Value& vstop, const Value& vstep,
                     int64_t* start, int64_t* stop, int64_t* step) {
    auto bound = [](const Value& v) -> std::optional<int64_t> {
        if (v.is_none()) return std::nullopt;
        if (!v.is_int_like()) fail("slice indices must be integers or None or have an __index__ method");
        return v.as_int();
    };
    const std::optional<int64_t> s0 = bound(vstart);
    const std::optional<int64_t> s1 = bound(vstop);
    const std::optional<int64_t> st = bound(vstep);
    *step = st.value_or(1);
    if (*step == 0) fail("slice step cannot be zero");
    if (*step < -INT64_MAX) *step = -INT64_MAX;
    *start = s0 ? *s0 : (*step < 0 ? INT64_MAX : 0);
    *stop = s1 ? *s1 : (*step < 0 ? INT64_MIN : INT64_MAX);
    auto clamp = [&](int64_t* v) {
        if (*v < 0) {
            *v = (*v < -length) ? (*step < 0 ? -1 : 0) : *v + length;
        } else if (*v >= length) {
            *v = *step < 0 ? length - 1 : length;
        }
    };
    clamp(start);
    clamp(stop);
    if (*step < 0) {
        if (*stop < *start) return (*start - *stop - 1) / (-*step) + 1;
    } else if (*start < *stop) {
        return (*stop - *start - 1) / *step + 1;
    }
    return 0;
}

Value attribute_of_builtin(const Value& obj, const std::string& name, bool* found) {
    *found = true;
    switch (obj.kind) {
        case ValueKind::Dict:
            if (is_mutating_dict_method(name)) return Value::undefined();  // sandbox: unsafe -> Undefined
            if (is_dict_attribute(name)) return Value::method(obj, name);
            break;
        case ValueKind::String:
            if (is_str_attribute(name)) return Value::method(obj, name);
            break;
        case ValueKind::Sequence:
            switch (obj.seq->kind) {
                case SequenceKind::List:
                    if (is_mutating_list_method(name)) return Value::undefined();
                    if (name == "copy" || name == "count" || name == "index") return Value::method(obj, name);
                    break;
                case SequenceKind::Tuple:
                    if (name == "count" || name == "index") return Value::method(obj, name);
                    break;
                case SequenceKind::Range:
                    if (name == "start") return Value::integer(obj.seq->range_start);
                    if (name == "stop") return Value::integer(obj.seq->range_stop);
                    if (name == "step") return Value::integer(obj.seq->range_step);
                    if (name == "count" || name == "index") return Value::method(obj, name);
                    break;
                case SequenceKind::DictKeys:
                case SequenceKind::DictValues:
                case SequenceKind::DictItems:
                    if (name == "isdisjoint" || name == "mapping") {
                        fail("attribute '" + name + "' of a dict view is not supported in chat templates");
                    }
                    break;
            }
            break;
        case ValueKind::Bool:
        case ValueKind::Int:
            if (name == "real" || name == "numerator") return Value::integer(obj.as_int());
            if (name == "imag") return Value::integer(0);
            if (name == "denominator") return Value::integer(1);
            if (is_int_method(name)) return Value::method(obj, name);
            break;
        case ValueKind::Float:
            if (name == "real") return Value::real(obj.f);
            if (name == "imag") return Value::real(0.0);
            if (is_float_method(name)) return Value::method(obj, name);
            break;
        case ValueKind::Iterator:
            if (name == "close" || name == "send" || name == "throw" || name.rfind("gi_", 0) == 0) {
                fail("attribute '" + name + "' of a generator is not supported in chat templates");
            }
            break;
        case ValueKind::Loop:
        case ValueKind::Undefined:
        case ValueKind::None:
        case ValueKind::Callable:
        case ValueKind::Namespace:
            break;
    }
    *found = false;
    return Value::undefined();
}

Value loop_attribute(Runtime& rt, const Value& obj, const std::string& name, bool* found) {
    LoopState& L = *obj.loop;
    *found = true;
    if (name == "index0") return Value::integer(L.index0);
    if (name == "index") return Value::integer(L.index0 + 1);
    if (name == "first") return Value::boolean(L.index0 == 0);
    if (name == "depth") return Value::integer(1);
    if (name == "depth0") return Value::integer(0);
    if (name == "length") return Value::integer(L.total_length(rt));
    if (name == "revindex") return Value::integer(L.total_length(rt) - L.index0);
    if (name == "revindex0") return Value::integer(L.total_length(rt) - (L.index0 + 1));
    if (name == "previtem") return L.has_previous ? L.previous : Value::undefined();
    if (name == "last" || name == "nextitem") {
        Value next;
        const bool has = L.peek(rt, &next);
        if (name == "last") return Value::boolean(!has);
        return has ? next : Value::undefined();
    }
    if (name == "cycle" || name == "changed") return Value::method(obj, name);
    *found = false;
    return Value::undefined();
}

}  // namespace

// ---- construction ----

Value Value::none() {
    Value v;
    v.kind = ValueKind::None;
    return v;
}
Value Value::boolean(bool x) {
    Value v;
    v.kind = ValueKind::Bool;
    v.b = x;
    return v;
}
Value Value::integer(int64_t x) {
    Value v;
    v.kind = ValueKind::Int;
    v.i = x;
    return v;
}
Value Value::real(double x) {
    Value v;
    v.kind = ValueKind::Float;
    v.f = x;
    return v;
}
Value Value::string(std::string x) {
    Value v;
    v.kind = ValueKind::String;
    v.s = std::make_shared<const std::string>(std::move(x));
    return v;
}
Value Value::list(std::vector<Value> items) {
    Value v;
    v.kind = ValueKind::Sequence;
    auto d = std::make_shared<SequenceData>();
    d->kind = SequenceKind::List;
    d->items = std::move(items);
    v.seq = std::move(d);
    return v;
}
Value Value::tuple(std::vector<Value> items) {
    Value v = list(std::move(items));
    const_cast<SequenceData&>(*v.seq).kind = SequenceKind::Tuple;
    return v;
}
Value Value::range(int64_t start, int64_t stop, int64_t step) {
    if (step == 0) fail("range() arg 3 must not be zero");
    int64_t n = 0;
    if (step > 0 && start < stop)
        n = static_cast<int64_t>((static_cast<__int128>(stop) - start - 1) / step + 1);
    if (step < 0 && start > stop)
        n = static_cast<int64_t>((static_cast<__int128>(start) - stop - 1) / -step + 1);
    // jinja2.sandbox.safe_range
    if (n > 100000) fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    Value v;
    v.kind = ValueKind::Sequence;
    auto d = std::make_shared<SequenceData>();
    d->kind = SequenceKind::Range;
    d->range_start = start;
    d->range_stop = stop;
    d->range_step = step;
    d->items.reserve(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) d->items.push_back(Value::integer(start + k * step));
    v.seq = std::move(d);
    return v;
}
Value Value::dict_value(std::shared_ptr<const DictData> d) {
    Value v;
    v.kind = ValueKind::Dict;
    v.dict = std::move(d);
    return v;
}
Value Value::iterator(std::shared_ptr<Iterator> it) {
    Value v;
    v.kind = ValueKind::Iterator;
    v.iter = std::move(it);
    return v;
}
Value Value::function(std::string name) {
    Value v;
    v.kind = ValueKind::Callable;
    auto c = std::make_shared<CallableData>();
    c->name = std::move(name);
    v.callable = std::move(c);
    return v;
}
Value Value::method(Value self, std::string name) {
    Value v;
    v.kind = ValueKind::Callable;
    auto c = std::make_shared<CallableData>();
    c->is_method = true;
    c->name = std::move(name);
    c->self = std::move(self);
    v.callable = std::move(c);
    return v;
}

bool Value::is_list_or_tuple() const {
    return kind == ValueKind::Sequence &&
           (seq->kind == SequenceKind::List || seq->kind == SequenceKind::Tuple);
}

// ---- dict ----

const Value* DictData::find(const Value& key) const {
    if (key.kind == ValueKind::String) {
        const auto it = string_index.find(*key.s);
        return it == string_index.end() ? nullptr : &entries[it->second].second;
    }
    for (const auto& [k, v] : entries) {
        if (k.kind != ValueKind::String && equals(k, key)) return &v;
    }
    return nullptr;
}

void DictData::set(Value key, Value value) {
    if (key.kind == ValueKind::String) {
        const auto it = string_index.find(*key.s);
        if (it != string_index.end()) {
            entries[it->second].second = std::move(value);
            return;
        }
        string_index.emplace(*key.s, entries.size());
        entries.emplace_back(std::move(key), std::move(value));
        return;
    }
    for (auto& [k, v] : entries) {
        if (k.kind != ValueKind::String && equals(k, key)) {
            v = std::move(value);
            return;
        }
    }
    entries.emplace_back(std::move(key), std::move(value));
}

// ---- iteration ----

Iteration iterate(const Value& v) {
    Iteration it;
    switch (v.kind) {
        case ValueKind::Undefined:
        case ValueKind::Sequence:
        case ValueKind::Dict:
        case ValueKind::Iterator:
            break;
        case ValueKind::String:
            break;
        case ValueKind::Loop:
            fail("iterating over 'loop' is not supported in chat templates");
        default:
            fail("'" + type_name(v) + "' object is not iterable");
    }
    it.source_ = v;
    return it;
}

std::optional<Value> Iteration::next(Runtime& rt) {
    rt.charge(1);
    switch (source_.kind) {
        case ValueKind::Sequence:
            if (pos_ < source_.seq->items.size()) return source_.seq->items[pos_++];
            return std::nullopt;
        case ValueKind::Dict:
            if (pos_ < source_.dict->entries.size()) return source_.dict->entries[pos_++].first;
            return std::nullopt;
        case ValueKind::String:
            if (pos_ < source_.s->size()) {
                size_t len = 0;
                py::decode_at(*source_.s, pos_, &len);
                const size_t at = pos_;
                pos_ += len;
                return Value::string(source_.s->substr(at, len));
            }
            return std::nullopt;
        case ValueKind::Iterator:
            return source_.iter->next(rt);
        default:
            return std::nullopt;
    }
}

std::optional<size_t> Iteration::length() const {
    if (source_.kind == ValueKind::Iterator) return std::nullopt;
    return jinja::length(source_);
}

std::optional<Value> LoopState::pull(Runtime& rt) {
    std::optional<Value> item;
    if (lookahead_pos < lookahead.size()) {
        item = std::move(lookahead[lookahead_pos++]);
        if (lookahead_pos == lookahead.size()) {
            lookahead.clear();
            lookahead_pos = 0;
        }
    } else {
        item = source.next(rt);
    }
    if (!item) return std::nullopt;
    if (index0 >= 0) {
        previous = current;
        has_previous = true;
    }
    ++index0;
    current = *item;
    return item;
}

bool LoopState::peek(Runtime& rt, Value* out) {
    if (lookahead_pos < lookahead.size()) {
        *out = lookahead[lookahead_pos];
        return true;
    }
    std::optional<Value> item = source.next(rt);
    if (!item) return false;
    lookahead.push_back(*item);
    *out = *item;
    return true;
}

int64_t LoopState::total_length(Runtime& rt) {
    if (length) return *length;
    if (const std::optional<size_t> n = source.length()) {
        length = static_cast<int64_t>(*n);
        return *length;
    }
    while (std::optional<Value> item = source.next(rt)) {
        lookahead.push_back(std::move(*item));
        rt.check_items(lookahead.size());
    }
    length = index0 + 1 + static_cast<int64_t>(lookahead.size() - lookahead_pos);
    return *length;
}

// ---- type names, truthiness, str/repr ----

std::string type_name(const Value& v) {
    switch (v.kind) {
        case ValueKind::Undefined:
            return "Undefined";
        case ValueKind::None:
            return "NoneType";
        case ValueKind::Bool:
            return "bool";
        case ValueKind::Int:
            return "int";
        case ValueKind::Float:
            return "float";
        case ValueKind::String:
            return "str";
        case ValueKind::Sequence:
            switch (v.seq->kind) {
                case SequenceKind::List:
                    return "list";
                case SequenceKind::Tuple:
                    return "tuple";
                case SequenceKind::Range:
                    return "range";
                case SequenceKind::DictKeys:
                    return "dict_keys";
                case SequenceKind::DictValues:
                    return "dict_values";
                case SequenceKind::DictItems:
                    return "dict_items";
            }
            return "list";
        case ValueKind::Dict:
            return "dict";
        case ValueKind::Iterator:
            return "generator";
        case ValueKind::Loop:
            return "LoopContext";
        case ValueKind::Callable:
            if (v.callable->macro) return "Macro";
            return v.callable->is_method ? "builtin_function_or_method" : "function";
        case ValueKind::Namespace:
            return "TemplateNamespace";
    }
    return "object";
}

bool truthy(const Value& v) {
    switch (v.kind) {
        case ValueKind::Undefined:
        case ValueKind::None:
            return false;
        case ValueKind::Bool:
            return v.b;
        case ValueKind::Int:
            return v.i != 0;
        case ValueKind::Float:
            return v.f != 0.0;
        case ValueKind::String:
            return !v.s->empty();
        case ValueKind::Sequence:
            return !v.seq->items.empty();
        case ValueKind::Dict:
            return !v.dict->entries.empty();
        case ValueKind::Iterator:
        case ValueKind::Callable:
        case ValueKind::Namespace:
            return true;
        case ValueKind::Loop:
            fail("testing 'loop' itself for truth is not supported in chat templates");
    }
    return false;
}

void append_str(std::string& out, const Value& v, Runtime& rt) {
    switch (v.kind) {
        case ValueKind::Undefined:
            return;
        case ValueKind::String:
            out += *v.s;
            return;
        case ValueKind::Iterator:
            fail("a generator cannot be rendered as text (HF would print its memory address); use |list");
        case ValueKind::Loop:
            fail("'loop' itself cannot be rendered as text in chat templates");
        case ValueKind::Callable:
            if (v.callable->macro) {  // Macro.__repr__
                out += "<Macro ";
                append_repr(out, Value::string(v.callable->name), rt);
                out += ">";
                return;
            }
            fail("a function or method cannot be rendered as text (call it with parentheses)");
        case ValueKind::Namespace: {  // Namespace.__repr__
            out += "<Namespace ";
            append_repr(out, Value::dict_value(std::make_shared<DictData>(v.ns->attrs)), rt);
            out += ">";
            return;
        }
        default:
            append_repr(out, v, rt);
    }
}

std::string to_str(const Value& v, Runtime& rt) {
    if (v.kind == ValueKind::String) return *v.s;
    std::string out;
    append_str(out, v, rt);
    return out;
}

void append_repr(std::string& out, const Value& v, Runtime& rt, int depth) {
    if (depth > rt.limits.max_data_depth) fail("value nested too deeply to render");
    rt.charge(1);
    rt.check_string(out.size());
    switch (v.kind) {
        case ValueKind::Undefined:
            out += "Undefined";
            return;
        case ValueKind::None:
            out += "None";
            return;
        case ValueKind::Bool:
            out += v.b ? "True" : "False";
            return;
        case ValueKind::Int:
            out += std::to_string(v.i);
            return;
        case ValueKind::Float:
            out += py::repr_float(v.f);
            return;
        case ValueKind::String:
            rt.charge(v.s->size() / 64);
            if (v.markup) out += "Markup(";
            out += py::repr_string(*v.s);
            if (v.markup) out += ")";
            return;
        case ValueKind::Sequence: {
            const SequenceData& d = *v.seq;
            auto items = [&](const char* open, const char* close) {
                out += open;
                for (size_t k = 0; k < d.items.size(); ++k) {
                    if (k) out += ", ";
                    append_repr(out, d.items[k], rt, depth + 1);
                }
                out += close;
            };
            switch (d.kind) {
                case SequenceKind::List:
                    items("[", "]");
                    return;
                case SequenceKind::Tuple:
                    items("(", d.items.size() == 1 ? ",)" : ")");
                    return;
                case SequenceKind::Range:
                    out += "range(" + std::to_string(d.range_start) + ", " + std::to_string(d.range_stop);
                    if (d.range_step != 1) out += ", " + std::to_string(d.range_step);
                    out += ")";
                    return;
                case SequenceKind::DictKeys:
                    items("dict_keys([", "])");
                    return;
                case SequenceKind::DictValues:
                    items("dict_values([", "])");
                    return;
                case SequenceKind::DictItems:
                    items("dict_items([", "])");
                    return;
            }
            return;
        }
        case ValueKind::Dict: {
            out += "{";
            bool first = true;
            for (const auto& [k, val] : v.dict->entries) {
                if (!first) out += ", ";
                first = false;
                append_repr(out, k, rt, depth + 1);
                out += ": ";
                append_repr(out, val, rt, depth + 1);
            }
            out += "}";
            return;
        }
        case ValueKind::Iterator:
        case ValueKind::Loop:
        case ValueKind::Callable:
        case ValueKind::Namespace:
            append_str(out, v, rt);  // the same text, or raises
            return;
    }
}

// ---- comparison ----

bool equals(const Value& a, const Value& b, Runtime* rt, int depth) {
    if (depth > 256) fail("value nested too deeply to compare");
    if (rt) rt->charge(1);
    if (a.is_number() && b.is_number()) {
        if (a.is_int_like() && b.is_int_like()) return a.as_int() == b.as_int();
        return exact(a) == exact(b);
    }
    if (a.kind != b.kind) return false;
    switch (a.kind) {
        case ValueKind::Undefined:
        case ValueKind::None:
            return true;
        case ValueKind::String:
            if (rt) rt->charge(std::min(a.s->size(), b.s->size()) / 64);
            return *a.s == *b.s;
        case ValueKind::Sequence: {
            const SequenceKind ka = a.seq->kind;
            const SequenceKind kb = b.seq->kind;
            const bool view_a = ka == SequenceKind::DictKeys || ka == SequenceKind::DictValues ||
                                ka == SequenceKind::DictItems;
            const bool view_b = kb == SequenceKind::DictKeys || kb == SequenceKind::DictValues ||
                                kb == SequenceKind::DictItems;
            if (view_a && view_b) fail("comparing dict views is not supported in chat templates");
            if (ka != kb) return false;
            const auto& x = a.seq->items;
            const auto& y = b.seq->items;
            if (x.size() != y.size()) return false;
            for (size_t k = 0; k < x.size(); ++k) {
                if (!equals(x[k], y[k], rt, depth + 1)) return false;
            }
            return true;
        }
        case ValueKind::Dict: {
            if (a.dict->entries.size() != b.dict->entries.size()) return false;
            for (const auto& [k, v] : a.dict->entries) {
                const Value* other = b.dict->find(k);
                if (!other || !equals(v, *other, rt, depth + 1)) return false;
            }
            return true;
        }
        case ValueKind::Iterator:
            return a.iter == b.iter;
        case ValueKind::Loop:
            return a.loop == b.loop;
        case ValueKind::Callable:
            fail("comparing functions or methods is not supported in chat templates");
        case ValueKind::Namespace:
            return a.ns == b.ns;  // object identity
        default:
            return false;
    }
}

namespace {

// Python's rich comparison for ordering operators; returns the truth of `a OP b`.
bool order(Runtime& rt, CompareOp op, const Value& a, const Value& b, int depth) {
    if (depth > 256) fail("value nested too deeply to compare");
    if (a.is_undefined()) undefined_error(a);
    if (b.is_undefined()) undefined_error(b);
    auto apply = [op](auto x, auto y) {
        switch (op) {
            case CompareOp::Lt:
                return x < y;
            case CompareOp::Le:
                return x <= y;
            case CompareOp::Gt:
                return x > y;
            case CompareOp::Ge:
                return x >= y;
            default:
                return false;
        }
    };
    if (a.is_number() && b.is_number()) {
        if (a.is_int_like() && b.is_int_like()) return apply(a.as_int(), b.as_int());
        return apply(exact(a), exact(b));
    }
    if (a.is_string() && b.is_string()) {
        rt.charge(std::min(a.s->size(), b.s->size()) / 64);
        return apply(a.s->compare(*b.s), 0);  // UTF-8 order == code points
    }
    if (a.kind == ValueKind::Sequence && b.kind == ValueKind::Sequence && a.seq->kind == b.seq->kind &&
        (a.seq->kind == SequenceKind::List || a.seq->kind == SequenceKind::Tuple)) {
        const auto& x = a.seq->items;
        const auto& y = b.seq->items;
        const size_t n = std::min(x.size(), y.size());
        for (size_t k = 0; k < n; ++k) {
            if (!equals(x[k], y[k], &rt, depth + 1)) return order(rt, op, x[k], y[k], depth + 1);
        }
        return apply(x.size(), y.size());
    }
    const char* sym = op == CompareOp::Lt   ? "<"
                      : op == CompareOp::Le ? "<="
                      : op == CompareOp::Gt ? ">"
                                            : ">=";
    fail(std::string("'") + sym + "' not supported between instances of '" + type_name(a) + "' and '" +
         type_name(b) + "'");
}

}  // namespace

bool compare(Runtime& rt, CompareOp op, const Value& a, const Value& b) {
    switch (op) {
        case CompareOp::Eq:
            return equals(a, b, &rt);
        case CompareOp::Ne:
            return !equals(a, b, &rt);
        case CompareOp::In:
            return contains(rt, b, a);
        case CompareOp::NotIn:
            return !contains(rt, b, a);
        default:
            return order(rt, op, a, b, 0);
    }
}

bool hashable(const Value& v) {
    switch (v.kind) {
        case ValueKind::Undefined:
        case ValueKind::None:
        case ValueKind::Bool:
        case ValueKind::Int:
        case ValueKind::Float:
        case ValueKind::String:
            return true;
        case ValueKind::Sequence:
            if (v.seq->kind == SequenceKind::Range) return true;
            if (v.seq->kind != SequenceKind::Tuple) return false;
            return std::all_of(v.seq->items.begin(), v.seq->items.end(),
                               [](const Value& x) { return hashable(x); });
        case ValueKind::Dict:
            return false;
        case ValueKind::Iterator:
        case ValueKind::Loop:
        case ValueKind::Callable:
        case ValueKind::Namespace:
            return true;
    }
    return false;
}

bool contains(Runtime& rt, const Value& container, const Value& needle) {
    switch (container.kind) {
        case ValueKind::Undefined:
            return false;
        case ValueKind::String:
            if (!needle.is_string()) {
                fail("'in <string>' requires string as left operand, not " + type_name(needle));
            }
            rt.charge(container.s->size() / 64);
            return container.s->find(*needle.s) != std::string::npos;
        case ValueKind::Dict:
            if (!hashable(needle)) fail("unhashable type: '" + type_name(needle) + "'");
            if (needle.is_string()) rt.charge(needle.s->size() / 64);
            return container.dict->find(needle) != nullptr;
        case ValueKind::Sequence: {
            const SequenceData& d = *container.seq;
            if (d.kind == SequenceKind::DictKeys) {
                if (!hashable(needle)) fail("unhashable type: '" + type_name(needle) + "'");
            }
            if (d.kind == SequenceKind::DictItems) {
                if (!(needle.kind == ValueKind::Sequence && needle.seq->kind == SequenceKind::Tuple &&
                      needle.seq->items.size() == 2)) {
                    return false;
                }
                if (!hashable(needle.seq->items[0]))
                    fail("unhashable type: '" + type_name(needle.seq->items[0]) + "'");
            }
            rt.charge(d.items.size());
            for (const Value& x : d.items) {
                if (equals(x, needle, &rt)) return true;
            }
            return false;
        }
        case ValueKind::Iterator:
            while (std::optional<Value> x = container.iter->next(rt)) {
                if (equals(*x, needle, &rt)) return true;
            }
            return false;
        case ValueKind::Loop:
            fail("'in loop' is not supported in chat templates");
        default:
            fail("argument of type '" + type_name(container) + "' is not iterable");
    }
}

// ---- arithmetic ----

Value binary(Runtime& rt, BinaryOp op, const Value& a, const Value& b) {
    if (a.is_undefined()) undefined_error(a);
    if (b.is_undefined()) undefined_error(b);
    const bool both_int = a.is_int_like() && b.is_int_like();
    const bool both_num = a.is_number() && b.is_number();
    switch (op) {
        case BinaryOp::Add:
            if (both_int) return Value::integer(checked_add(a.as_int(), b.as_int()));
            if (both_num) return Value::real(a.as_double() + b.as_double());
            if (a.is_string() && b.is_string()) {
                rt.check_string(a.s->size() + b.s->size());
                rt.charge((a.s->size() + b.s->size()) / 64);
                if (a.markup || b.markup) {
                    // Markup.__add__ / __radd__ escape the plain operand
                    return markup_string(markup_escape(a, rt) + markup_escape(b, rt));
                }
                return Value::string(*a.s + *b.s);
            }
            if (a.kind == ValueKind::Sequence && b.kind == ValueKind::Sequence &&
                a.seq->kind == b.seq->kind &&
                (a.seq->kind == SequenceKind::List || a.seq->kind == SequenceKind::Tuple)) {
                rt.check_items(a.seq->items.size() + b.seq->items.size());
                rt.charge(a.seq->items.size() + b.seq->items.size());
                std::vector<Value> items = a.seq->items;
                items.insert(items.end(), b.seq->items.begin(), b.seq->items.end());
                return a.seq->kind == SequenceKind::Tuple ? Value::tuple(std::move(items))
                                                          : Value::list(std::move(items));
            }
            if (a.is_string() || b.is_string()) {
                fail("can only concatenate str (not \"" + type_name(a.is_string() ? b : a) + "\") to str");
            }
            type_error_binary("+", a, b);
        case BinaryOp::Sub:
            if (both_int) return Value::integer(checked_sub(a.as_int(), b.as_int()));
            if (both_num) return Value::real(a.as_double() - b.as_double());
            type_error_binary("-", a, b);
        case BinaryOp::Mul:
            if (both_int) return Value::integer(checked_mul(a.as_int(), b.as_int()));
            if (both_num) return Value::real(a.as_double() * b.as_double());
            if (a.is_string() && b.is_int_like()) {
                Value r = repeat_string(rt, *a.s, b.as_int());
                r.markup = a.markup;
                return r;
            }
            if (b.is_string() && a.is_int_like()) {
                Value r = repeat_string(rt, *b.s, a.as_int());
                r.markup = b.markup;
                return r;
            }
            if (a.is_list_or_tuple() && b.is_int_like()) return repeat_sequence(rt, a, b.as_int());
            if (b.is_list_or_tuple() && a.is_int_like()) return repeat_sequence(rt, b, a.as_int());
            type_error_binary("*", a, b);
        case BinaryOp::Div: {
            if (!both_num) type_error_binary("/", a, b);
            if (b.as_double() == 0.0) fail("division by zero");
            if (both_int) {
                const int64_t k = int64_t{1} << 53;
                if (a.as_int() > k || a.as_int() < -k || b.as_int() > k || b.as_int() < -k) {
                    fail("true division of integers beyond 2**53 is not supported in chat templates");
                }
            }
            return Value::real(a.as_double() / b.as_double());
        }
        case BinaryOp::FloorDiv:
        case BinaryOp::Mod: {
            const bool is_mod = op == BinaryOp::Mod;
            if (is_mod && a.is_string())
                fail("string formatting with '%' is not supported in chat templates");
            if (!both_num) type_error_binary(is_mod ? "%" : "//", a, b);
            if (both_int) {
                const int64_t x = a.as_int();
                const int64_t y = b.as_int();
                if (y == 0) fail(is_mod ? "integer modulo by zero" : "integer division or modulo by zero");
                if (x == INT64_MIN && y == -1) {
                    if (is_mod) return Value::integer(0);
                    fail("integer overflow in chat template arithmetic");
                }
                int64_t q = x / y;
                int64_t r = x % y;
                if (r != 0 && ((r < 0) != (y < 0))) {
                    r += y;
                    q -= 1;
                }
                return Value::integer(is_mod ? r : q);
            }
            const double y = b.as_double();
            if (y == 0.0) fail(is_mod ? "float modulo" : "float floor division by zero");
            double q = 0.0;
            double r = 0.0;
            float_div_mod(a.as_double(), y, &q, &r);
            return Value::real(is_mod ? r : q);
        }
        case BinaryOp::Pow: {
            if (!both_num) type_error_binary("** or pow()", a, b);
            if (both_int && b.as_int() >= 0) {
                int64_t base = a.as_int();
                int64_t e = b.as_int();
                int64_t result = 1;
                while (e > 0) {
                    if (e & 1) result = checked_mul(result, base);
                    e >>= 1;
                    if (e > 0) base = checked_mul(base, base);
                }
                return Value::integer(result);
            }
            const double x = a.as_double();
            const double y = b.as_double();
            if (x == 0.0 && y < 0.0) fail("0.0 cannot be raised to a negative power");
            if (x < 0.0 && std::isfinite(y) && y != std::floor(y)) {
                fail("a negative number raised to a fractional power is complex; not supported");
            }
            const double r = std::pow(x, y);
            if (std::isinf(r) && std::isfinite(x) && std::isfinite(y))
                fail("(34, 'Numerical result out of range')");
            return Value::real(r);
        }
    }
    fail("unknown operator");
}

Value negate(const Value& v) {
    if (v.is_undefined()) undefined_error(v);
    if (v.is_int_like()) {
        if (v.as_int() == INT64_MIN) fail("integer overflow in chat template arithmetic");
        return Value::integer(-v.as_int());
    }
    if (v.kind == ValueKind::Float) return Value::real(-v.f);
    fail("bad operand type for unary -: '" + type_name(v) + "'");
}

Value positive(const Value& v) {
    if (v.is_undefined()) undefined_error(v);
    if (v.is_int_like()) return Value::integer(v.as_int());
    if (v.kind == ValueKind::Float) return v;
    fail("bad operand type for unary +: '" + type_name(v) + "'");
}

std::optional<size_t> length(const Value& v) {
    switch (v.kind) {
        case ValueKind::Undefined:
            return 0;
        case ValueKind::String:
            return py::code_point_count(*v.s);
        case ValueKind::Sequence:
            return v.seq->items.size();
        case ValueKind::Dict:
            return v.dict->entries.size();
        case ValueKind::Loop:
            fail("len(loop) is not supported in chat templates; use loop.length");
        default:
            return std::nullopt;
    }
}

// ---- attribute / item access ----

Value get_attr(Runtime& rt, const Value& obj, const std::string& name) {
    if (obj.is_undefined()) undefined_error(obj);
    bool found = false;
    if (obj.kind == ValueKind::Loop) {
        return loop_attribute(rt, obj, name,
                              &found);  // LoopContext is not subscriptable: missing -> Undefined
    }
    if (obj.kind == ValueKind::Namespace) {  // Namespace.__getattribute__: its attributes only
        if (const Value* item = obj.ns->attrs.find(Value::string(name))) return *item;
        return Value::undefined();
    }
    if (obj.kind == ValueKind::Callable && obj.callable->macro) {
        if (name == "name") return Value::string(obj.callable->name);
        if (name == "arguments" || name == "defaults" || name == "catch_kwargs" || name == "catch_varargs" ||
            name == "caller" || name == "explicit_caller" || name == "environment") {
            fail("attribute '" + name + "' of a macro is not supported in chat templates");
        }
        return Value::undefined();
    }
    Value v = attribute_of_builtin(obj, name, &found);
    if (found) return v;
    if (obj.kind == ValueKind::Dict) {
        if (const Value* item = obj.dict->find(Value::string(name))) return *item;
    }
    return Value::undefined();
}

Value get_item(Runtime& rt, const Value& obj, const Value& key) {
    if (obj.is_undefined()) undefined_error(obj);
    if (key.is_string()) rt.charge(key.s->size() / 64);
    if (obj.is_string()) rt.charge(obj.s->size() / 64);
    switch (obj.kind) {
        case ValueKind::Dict:
            if (hashable(key)) {
                if (const Value* item = obj.dict->find(key)) return *item;
            }
            break;
        case ValueKind::Sequence: {
            const SequenceKind k = obj.seq->kind;
            const bool indexable =
                k == SequenceKind::List || k == SequenceKind::Tuple || k == SequenceKind::Range;
            if (indexable && key.is_int_like()) {
                int64_t idx = key.as_int();
                const auto n = static_cast<int64_t>(obj.seq->items.size());
                if (idx < 0) idx += n;
                if (idx >= 0 && idx < n) return obj.seq->items[static_cast<size_t>(idx)];
                return Value::undefined();  // IndexError -> Undefined
            }
            break;
        }
        case ValueKind::String:
            if (key.is_int_like()) {
                const std::vector<size_t> off = py::code_point_offsets(*obj.s);
                const auto n = static_cast<int64_t>(off.size() - 1);
                int64_t idx = key.as_int();
                if (idx < 0) idx += n;
                if (idx >= 0 && idx < n) {
                    const auto u = static_cast<size_t>(idx);
                    Value c = Value::string(obj.s->substr(off[u], off[u + 1] - off[u]));
                    c.markup = obj.markup;  // Markup.__getitem__ returns Markup
                    return c;
                }
                return Value::undefined();
            }
            break;
        default:
            break;
    }
    // Jinja falls back to the attribute for string keys.
    if (key.is_string()) {
        if (obj.kind == ValueKind::Namespace || obj.kind == ValueKind::Callable) return get_attr(rt, obj, *key.s);
        if (obj.kind == ValueKind::Loop) {
            bool found = false;
            return loop_attribute(rt, obj, *key.s, &found);
        }
        bool found = false;
        Value v = attribute_of_builtin(obj, *key.s, &found);
        if (found) return v;
    }
    return Value::undefined();
}

Value get_slice(Runtime& rt, const Value& obj, const Value& start, const Value& stop, const Value& step) {
    if (obj.is_undefined()) undefined_error(obj);
    int64_t a = 0;
    int64_t b = 0;
    int64_t s = 1;
    if (obj.kind == ValueKind::String) {
        rt.charge(obj.s->size() / 64);
        const std::vector<size_t> off = py::code_point_offsets(*obj.s);
        const int64_t n = adjust_slice(static_cast<int64_t>(off.size() - 1), start, stop, step, &a, &b, &s);
        std::string out;
        if (s == 1) {
            if (n > 0) out = obj.s->substr(off[a], off[a + n] - off[a]);
        } else {
            for (int64_t k = 0, idx = a; k < n; ++k, idx += s) {
                out.append(*obj.s, off[idx], off[idx + 1] - off[idx]);
            }
        }
        rt.charge(out.size() / 64);
        Value r = Value::string(std::move(out));
        r.markup = obj.markup;
        return r;
    }
    if (obj.kind == ValueKind::Sequence) {
        const SequenceData& d = *obj.seq;
        if (d.kind == SequenceKind::DictKeys || d.kind == SequenceKind::DictValues ||
            d.kind == SequenceKind::DictItems) {
            fail("'" + type_name(obj) + "' object is not subscriptable");
        }
        const int64_t n = adjust_slice(static_cast<int64_t>(d.items.size()), start, stop, step, &a, &b, &s);
        if (d.kind == SequenceKind::Range) {
            const __int128 start =
                static_cast<__int128>(d.range_start) + static_cast<__int128>(a) * d.range_step;
            const __int128 stop =
                static_cast<__int128>(d.range_start) + static_cast<__int128>(b) * d.range_step;
            const __int128 step = static_cast<__int128>(d.range_step) * s;
            for (const __int128 x : {start, stop, step}) {
                if (x > INT64_MAX || x < INT64_MIN) fail("integer overflow in chat template arithmetic");
            }
            return Value::range(static_cast<int64_t>(start), static_cast<int64_t>(stop),
                                static_cast<int64_t>(step));
        }
        std::vector<Value> items;
        items.reserve(static_cast<size_t>(n));
        for (int64_t k = 0, idx = a; k < n; ++k, idx += s) items.push_back(d.items[static_cast<size_t>(idx)]);
        rt.charge(items.size());
        return d.kind == SequenceKind::Tuple ? Value::tuple(std::move(items)) : Value::list(std::move(items));
    }
    if (obj.kind == ValueKind::Dict) fail("unhashable type: 'slice'");
    fail("'" + type_name(obj) + "' object is not subscriptable");
}

std::vector<Value> to_list(Runtime& rt, const Value& v) {
    Iteration it = iterate(v);
    std::vector<Value> out;
    while (std::optional<Value> x = it.next(rt)) {
        out.push_back(std::move(*x));
        rt.check_items(out.size());
    }
    return out;
}

// ---- JSON ----

Value from_json(const nlohmann::ordered_json& j, int max_depth) {
    if (max_depth < 0) PHI_FAIL("chat template context is nested too deeply");
    switch (j.type()) {
        case nlohmann::ordered_json::value_t::null:
            return Value::none();
        case nlohmann::ordered_json::value_t::boolean:
            return Value::boolean(j.get<bool>());
        case nlohmann::ordered_json::value_t::number_integer:
            return Value::integer(j.get<int64_t>());
        case nlohmann::ordered_json::value_t::number_unsigned: {
            const auto u = j.get<uint64_t>();
            PHI_CHECK(u <= static_cast<uint64_t>(INT64_MAX), "chat template context integer {} is too large",
                      u);
            return Value::integer(static_cast<int64_t>(u));
        }
        case nlohmann::ordered_json::value_t::number_float:
            return Value::real(j.get<double>());
        case nlohmann::ordered_json::value_t::string: {
            const auto& s = j.get_ref<const std::string&>();
            PHI_CHECK(phi::is_valid_utf8(s), "chat template context holds a string that is not valid UTF-8");
            return Value::string(s);
        }
        case nlohmann::ordered_json::value_t::array: {
            std::vector<Value> items;
            items.reserve(j.size());
            for (const auto& x : j) items.push_back(from_json(x, max_depth - 1));
            return Value::list(std::move(items));
        }
        case nlohmann::ordered_json::value_t::object: {
            auto d = std::make_shared<DictData>();
            for (const auto& [k, x] : j.items()) {
                PHI_CHECK(phi::is_valid_utf8(k), "chat template context holds a key that is not valid UTF-8");
                d->set(Value::string(k), from_json(x, max_depth - 1));
            }
            return Value::dict_value(std::move(d));
        }
        default:
            PHI_FAIL("chat template context holds a JSON value of unsupported type '{}'", j.type_name());
    }
}

namespace {

void append_json_number_key(std::string& out, const Value& k) {
    if (k.kind == ValueKind::Float) {
        if (std::isnan(k.f)) {
            out += "NaN";
        } else if (std::isinf(k.f)) {
            out += k.f > 0 ? "Infinity" : "-Infinity";
        } else {
            out += py::repr_float(k.f);
        }
    } else {
        out += std::to_string(k.as_int());
    }
}

}  // namespace

void append_json(std::string& out, const Value& v, const JsonOptions& opt, Runtime& rt, int depth,
                 int level) {
    if (depth > rt.limits.max_data_depth) fail("value nested too deeply for tojson");
    rt.charge(1);
    rt.check_string(out.size());
    switch (v.kind) {
        case ValueKind::None:
            out += "null";
            return;
        case ValueKind::Bool:
            out += v.b ? "true" : "false";
            return;
        case ValueKind::Int:
        case ValueKind::Float:
            append_json_number_key(out, v);
            return;
        case ValueKind::String:
            rt.charge(v.s->size() / 64);
            py::append_json_string(out, *v.s, opt.ensure_ascii);
            return;
        case ValueKind::Sequence: {
            if (v.seq->kind != SequenceKind::List && v.seq->kind != SequenceKind::Tuple) break;
            const auto& items = v.seq->items;
            if (items.empty()) {
                out += "[]";
                return;
            }
            out += '[';
            std::string newline_indent;
            if (opt.indent) {
                newline_indent = "\n";
                for (int k = 0; k <= level; ++k) newline_indent += *opt.indent;
                out += newline_indent;
            }
            for (size_t k = 0; k < items.size(); ++k) {
                if (k) {
                    out += opt.item_separator;
                    out += newline_indent;
                }
                append_json(out, items[k], opt, rt, depth + 1, level + 1);
            }
            if (opt.indent) {
                out += '\n';
                for (int k = 0; k < level; ++k) out += *opt.indent;
            }
            out += ']';
            return;
        }
        case ValueKind::Dict: {
            const auto& entries = v.dict->entries;
            if (entries.empty()) {
                out += "{}";
                return;
            }
            std::vector<size_t> order(entries.size());
            for (size_t k = 0; k < order.size(); ++k) order[k] = k;
            if (opt.sort_keys) {
                std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
                    return compare(rt, CompareOp::Lt, entries[x].first, entries[y].first);
                });
            }
            out += '{';
            std::string newline_indent;
            if (opt.indent) {
                newline_indent = "\n";
                for (int k = 0; k <= level; ++k) newline_indent += *opt.indent;
                out += newline_indent;
            }
            bool first = true;
            for (const size_t idx : order) {
                const Value& key = entries[idx].first;
                if (!first) {
                    out += opt.item_separator;
                    out += newline_indent;
                }
                first = false;
                switch (key.kind) {
                    case ValueKind::String:
                        py::append_json_string(out, *key.s, opt.ensure_ascii);
                        break;
                    case ValueKind::Bool:
                        out += key.b ? "\"true\"" : "\"false\"";
                        break;
                    case ValueKind::None:
                        out += "\"null\"";
                        break;
                    case ValueKind::Int:
                    case ValueKind::Float:
                        out += '"';
                        append_json_number_key(out, key);
                        out += '"';
                        break;
                    default:
                        fail("keys must be str, int, float, bool or None, not " + type_name(key));
                }
                out += opt.key_separator;
                append_json(out, entries[idx].second, opt, rt, depth + 1, level + 1);
            }
            if (opt.indent) {
                out += '\n';
                for (int k = 0; k < level; ++k) out += *opt.indent;
            }
            out += '}';
            return;
        }
        default:
            break;
    }
    fail("Object of type " + type_name(v) + " is not JSON serializable");
}

// ---- Markup ----

std::string html_escape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (const char c : s) {
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '\'':
                out += "&#39;";
                break;
            case '"':
                out += "&#34;";
                break;
            default:
                out += c;
        }
    }
    return out;
}

std::string markup_escape(const Value& v, Runtime& rt) {
    if (v.is_string() && v.markup) return v.str();
    return html_escape(to_str(v, rt));
}

Value markup_string(std::string s) {
    Value v = Value::string(std::move(s));
    v.markup = true;
    return v;
}

}  // namespace phi::chat::jinja
