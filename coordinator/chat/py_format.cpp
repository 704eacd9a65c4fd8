// str.format() for chat templates (see py_format.h); mirrors CPython's Objects/stringlib/unicode_format.h
// and Python/formatter_unicode.c for the parts it supports.
#include "coordinator/chat/py_format.h"

#include <cmath>
#include <cstdio>
#include <optional>

#include "coordinator/chat/py_text.h"

namespace phi::chat::jinja {
namespace {

struct Spec {
    std::optional<std::string> fill;  // one code point
    char align = 0;                   // < > = ^ or 0
    char sign = 0;                    // + - space or 0
    bool alternate = false;
    bool zero = false;
    int64_t width = -1;
    char grouping = 0;  // , _ or 0
    int64_t precision = -1;
    char type = 0;
};

[[noreturn]] void unsupported_spec(const std::string& spec) {
    fail("format spec '" + spec + "' is not supported in chat templates");
}

bool is_align(char c) {
    return c == '<' || c == '>' || c == '=' || c == '^';
}

int64_t parse_number(const std::string& s, size_t* pos) {
    int64_t v = 0;
    while (*pos < s.size() && s[*pos] >= '0' && s[*pos] <= '9') {
        v = v * 10 + (s[*pos] - '0');
        if (v > 100000) fail("Too many decimal digits in format string");
        ++*pos;
    }
    return v;
}

Spec parse_spec(const std::string& s) {
    Spec spec;
    size_t pos = 0;
    size_t first_len = 0;
    if (!s.empty()) py::decode_at(s, 0, &first_len);
    if (first_len > 0 && first_len < s.size() && is_align(s[first_len])) {
        spec.fill = s.substr(0, first_len);
        spec.align = s[first_len];
        pos = first_len + 1;
    } else if (!s.empty() && is_align(s[0])) {
        spec.align = s[0];
        pos = 1;
    }
    if (pos < s.size() && (s[pos] == '+' || s[pos] == '-' || s[pos] == ' ')) spec.sign = s[pos++];
    if (pos < s.size() && s[pos] == 'z') unsupported_spec(s);
    if (pos < s.size() && s[pos] == '#') {
        spec.alternate = true;
        ++pos;
    }
    if (pos < s.size() && s[pos] == '0') {
        spec.zero = true;
        ++pos;
    }
    if (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') spec.width = parse_number(s, &pos);
    if (pos < s.size() && (s[pos] == ',' || s[pos] == '_')) spec.grouping = s[pos++];
    if (pos < s.size() && (s[pos] == ',' || s[pos] == '_')) fail("Cannot specify both ',' and '_'.");
    if (pos < s.size() && s[pos] == '.') {
        ++pos;
        if (pos >= s.size() || s[pos] < '0' || s[pos] > '9') fail("Format specifier missing precision");
        spec.precision = parse_number(s, &pos);
    }
    if (s.size() - pos > 1) fail("Invalid format specifier '" + s + "'");
    if (pos < s.size()) spec.type = s[pos];
    if (spec.zero && (spec.grouping || spec.fill || spec.align)) unsupported_spec(s);
    return spec;
}

std::string pad(const std::string& body, const std::string& sign_prefix, const Spec& spec, char default_align) {
    const std::string fill = spec.fill.value_or(spec.zero ? "0" : " ");
    const char align = spec.align ? spec.align : (spec.zero ? '=' : default_align);
    const int64_t len = static_cast<int64_t>(py::code_point_count(body) + py::code_point_count(sign_prefix));
    const int64_t n = spec.width > len ? spec.width - len : 0;
    auto repeat = [&](int64_t k) {
        std::string out;
        for (int64_t i = 0; i < k; ++i) out += fill;
        return out;
    };
    switch (align) {
        case '<':
            return sign_prefix + body + repeat(n);
        case '^':
            return repeat(n / 2) + sign_prefix + body + repeat(n - n / 2);
        case '=':
            return sign_prefix + repeat(n) + body;
        default:
            return repeat(n) + sign_prefix + body;
    }
}

std::string group_digits(const std::string& digits, char sep, size_t every) {
    if (!sep) return digits;
    std::string out;
    const size_t n = digits.size();
    for (size_t k = 0; k < n; ++k) {
        if (k > 0 && (n - k) % every == 0) out += sep;
        out += digits[k];
    }
    return out;
}

std::string sign_of(bool negative, const Spec& spec) {
    if (negative) return "-";
    if (spec.sign == '+') return "+";
    if (spec.sign == ' ') return " ";
    return "";
}

std::string format_str(const std::string& s, const Spec& spec, const std::string& raw) {
    if (spec.type && spec.type != 's') fail(std::string("Unknown format code '") + spec.type + "' for object of type 'str'");
    if (spec.sign) fail("Sign not allowed in string format specifier");
    if (spec.alternate) fail("Alternate form (#) not allowed in string format specifier");
    if (spec.align == '=') fail("'=' alignment not allowed in string format specifier");
    if (spec.grouping) fail(std::string("Cannot specify '") + spec.grouping + "' with 's'.");
    if (spec.zero) unsupported_spec(raw);
    std::string body = s;
    if (spec.precision >= 0) {
        const std::vector<size_t> off = py::code_point_offsets(s);
        if (static_cast<size_t>(spec.precision) < off.size() - 1) body = s.substr(0, off[static_cast<size_t>(spec.precision)]);
    }
    return pad(body, "", spec, '<');
}

std::string format_float(double v, Spec spec, const std::string& raw) {
    char type = spec.type;
    if (type == 0) {
        if (spec.precision >= 0 || spec.grouping) unsupported_spec(raw);
        const bool negative = std::signbit(v) && !std::isnan(v);
        std::string r = py::repr_float(std::fabs(v));
        return pad(r, sign_of(negative, spec), spec, '>');
    }
    if (spec.alternate) unsupported_spec(raw);
    const int precision = static_cast<int>(spec.precision >= 0 ? spec.precision : 6);
    double x = v;
    if (type == '%') x *= 100.0;
    const bool negative = std::signbit(x) && !std::isnan(x);
    const double ax = std::fabs(x);
    std::string body;
    if (std::isnan(ax)) {
        body = (type == 'F' || type == 'E' || type == 'G') ? "NAN" : "nan";
    } else {
        const char conv = type == '%' ? 'f' : type;
        if (conv != 'f' && conv != 'F' && conv != 'e' && conv != 'E' && conv != 'g' && conv != 'G') {
            fail(std::string("Unknown format code '") + type + "' for object of type 'float'");
        }
        if ((conv == 'g' || conv == 'G') && spec.grouping) unsupported_spec(raw);
        const std::string f = std::string("%.*") + conv;
        const int n = std::snprintf(nullptr, 0, f.c_str(), precision, ax);
        body.resize(static_cast<size_t>(n) + 1);
        std::snprintf(body.data(), body.size(), f.c_str(), precision, ax);
        body.resize(static_cast<size_t>(n));
        if (spec.grouping && std::isfinite(ax)) {
            size_t int_end = 0;
            while (int_end < body.size() && body[int_end] >= '0' && body[int_end] <= '9') ++int_end;
            body = group_digits(body.substr(0, int_end), spec.grouping, 3) + body.substr(int_end);
        }
    }
    if (type == '%') body += '%';
    return pad(body, sign_of(negative, spec), spec, '>');
}

std::string format_int(int64_t v, const Spec& spec, const std::string& raw) {
    const char type = spec.type;
    if (type == 'e' || type == 'E' || type == 'f' || type == 'F' || type == 'g' || type == 'G' || type == '%') {
        return format_float(static_cast<double>(v), spec, raw);
    }
    if (spec.precision >= 0) fail("Precision not allowed in integer format specifier");
    int base = 10;
    std::string prefix;
    if (type == 'b') {
        base = 2, prefix = "0b";
    } else if (type == 'o') {
        base = 8, prefix = "0o";
    } else if (type == 'x') {
        base = 16, prefix = "0x";
    } else if (type == 'X') {
        base = 16, prefix = "0X";
    } else if (type != 0 && type != 'd') {
        if (type == 'n' || type == 'c') unsupported_spec(raw);
        fail(std::string("Unknown format code '") + type + "' for object of type 'int'");
    }
    if (spec.grouping == ',' && base != 10) fail(std::string("Cannot specify ',' with '") + type + "'.");
    const bool negative = v < 0;
    uint64_t a = negative ? uint64_t{0} - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
    std::string digits;
    do {
        const int d = static_cast<int>(a % static_cast<uint64_t>(base));
        digits.insert(digits.begin(), static_cast<char>(d < 10 ? '0' + d : (type == 'X' ? 'A' : 'a') + d - 10));
        a /= static_cast<uint64_t>(base);
    } while (a);
    digits = group_digits(digits, spec.grouping, base == 10 ? 3 : 4);
    return pad(digits, sign_of(negative, spec) + (spec.alternate ? prefix : ""), spec, '>');
}

std::string format_field(Runtime& rt, const Value& v, const std::string& raw) {
    if (raw.find('{') != std::string::npos) fail("nested replacement fields in a format spec are not supported in chat templates");
    if (raw.empty()) return to_str(v, rt);
    const Spec spec = parse_spec(raw);
    switch (v.kind) {
        case ValueKind::String:
            return format_str(v.str(), spec, raw);
        case ValueKind::Bool:
        case ValueKind::Int:
            return format_int(v.as_int(), spec, raw);
        case ValueKind::Float:
            return format_float(v.f, spec, raw);
        default:
            fail("unsupported format string passed to " + type_name(v) + ".__format__");
    }
}

// obj[key] as SandboxedFormatter.get_field does it: the sandbox's getitem, with digit keys as ints.
Value index_field(Runtime& rt, const Value& obj, const std::string& key) {
    const bool digits = !key.empty() && key.size() < 18 && key.find_first_not_of("0123456789") == std::string::npos;
    return get_item(rt, obj, digits ? Value::integer(std::stoll(key)) : Value::string(key));
}

}  // namespace

std::string py_format(Runtime& rt, const std::string& f, const std::vector<Value>& args, const KwArgs& kwargs,
                      bool escape) {
    std::string out;
    size_t pos = 0;
    int auto_index = 0;  // -1: manual numbering seen
    bool manual = false;
    while (pos < f.size()) {
        const char c = f[pos];
        if (c == '}') {
            if (pos + 1 < f.size() && f[pos + 1] == '}') {
                out += '}';
                pos += 2;
                continue;
            }
            fail("Single '}' encountered in format string");
        }
        if (c != '{') {
            out += c;
            ++pos;
            continue;
        }
        if (pos + 1 < f.size() && f[pos + 1] == '{') {
            out += '{';
            pos += 2;
            continue;
        }
        // a replacement field: find its matching '}' (brackets in a spec nest)
        size_t end = pos + 1;
        int depth = 1;
        bool in_bracket = false;
        while (end < f.size()) {
            if (f[end] == '[') in_bracket = true;
            if (f[end] == ']') in_bracket = false;
            if (!in_bracket && f[end] == '{') ++depth;
            if (!in_bracket && f[end] == '}' && --depth == 0) break;
            ++end;
        }
        if (end >= f.size()) fail("expected '}' before end of string");
        const std::string field = f.substr(pos + 1, end - pos - 1);
        pos = end + 1;
        // field_name [! conversion] [: spec]
        size_t name_end = 0;
        bool bracket = false;
        while (name_end < field.size()) {
            const char d = field[name_end];
            if (d == '[') bracket = true;
            if (d == ']') bracket = false;
            if (!bracket && (d == '!' || d == ':')) break;
            ++name_end;
        }
        const std::string name = field.substr(0, name_end);
        char conversion = 0;
        std::string spec;
        if (name_end < field.size() && field[name_end] == '!') {
            if (name_end + 1 >= field.size()) fail("end of string while looking for conversion specifier");
            conversion = field[name_end + 1];
            if (name_end + 2 < field.size() && field[name_end + 2] != ':') fail("expected ':' after conversion specifier");
            if (name_end + 2 < field.size()) spec = field.substr(name_end + 3);
        } else if (name_end < field.size()) {
            spec = field.substr(name_end + 1);
        }
        // the first part of the name: empty (automatic), an index or a keyword
        size_t first_end = 0;
        while (first_end < name.size() && name[first_end] != '.' && name[first_end] != '[') ++first_end;
        const std::string first = name.substr(0, first_end);
        Value v;
        if (first.empty()) {
            if (manual) fail("cannot switch from manual field specification to automatic field numbering");
            if (static_cast<size_t>(auto_index) >= args.size())
                fail("Replacement index " + std::to_string(auto_index) + " out of range for positional args tuple");
            v = args[static_cast<size_t>(auto_index++)];
        } else if (first.find_first_not_of("0123456789") == std::string::npos) {
            if (auto_index > 0) fail("cannot switch from automatic field numbering to manual field specification");
            manual = true;
            const size_t idx = std::stoul(first);
            if (idx >= args.size())
                fail("Replacement index " + first + " out of range for positional args tuple");
            v = args[idx];
        } else {
            const Value* found = nullptr;
            for (const auto& [k, x] : kwargs) {
                if (k == first) found = &x;
            }
            if (!found) fail("KeyError: '" + first + "'");
            v = *found;
        }
        size_t p = first_end;
        while (p < name.size()) {
            if (name[p] == '.') {
                size_t q = p + 1;
                while (q < name.size() && name[q] != '.' && name[q] != '[') ++q;
                const std::string attr = name.substr(p + 1, q - p - 1);
                if (attr.empty()) fail("Empty attribute in format string");
                if (attr[0] == '_') fail("access to attribute '" + attr + "' is unsafe");
                v = get_attr(rt, v, attr);
                p = q;
            } else if (name[p] == '[') {
                const size_t q = name.find(']', p);
                if (q == std::string::npos) fail("Missing ']' in format string");
                v = index_field(rt, v, name.substr(p + 1, q - p - 1));
                p = q + 1;
                if (p < name.size() && name[p] != '.' && name[p] != '[')
                    fail("Only '.' or '[' may follow ']' in format field specifier");
            } else {
                fail("Only '.' or '[' may follow ']' in format field specifier");
            }
        }
        if (conversion == 's') {
            v = Value::string(to_str(v, rt));
        } else if (conversion == 'r') {
            std::string r;
            append_repr(r, v, rt);
            v = Value::string(std::move(r));
        } else if (conversion != 0) {
            if (conversion == 'a') fail("format conversion !a is not supported in chat templates");
            fail(std::string("Unknown conversion specifier ") + conversion);
        }
        if (escape && v.is_string() && v.markup) {
            if (!spec.empty()) fail("Unsupported format specification for Markup.");
            out += v.str();
        } else {
            const std::string text = format_field(rt, v, spec);
            out += escape ? html_escape(text) : text;
        }
        rt.check_string(out.size());
    }
    rt.charge(out.size() / 64);
    return out;
}

}  // namespace phi::chat::jinja
