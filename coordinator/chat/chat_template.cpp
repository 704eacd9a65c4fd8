// Evaluator for compiled chat templates (see chat_template.h). Scoping follows the code Jinja 3.1
// generates: the template body is one scope; every iteration of a for loop gets a fresh scope that
// sees the enclosing ones (so `set` inside a loop never leaks out, and does not carry over to the
// next iteration); the loop's else block has its own scope; `if` has none. Names resolve through
// the scopes, then the render context, then the globals (range, raise_exception).
#include "coordinator/chat/chat_template.h"

#include <fmt/format.h>

#include <ctime>
#include <optional>
#include <utility>
#include <vector>

#include "coordinator/chat/jinja_ast.h"
#include "coordinator/chat/jinja_builtins.h"

namespace phi::chat {

namespace jinja {
struct Scope;

/// A macro or call-block caller: its definition and the scope it closes over (Jinja compiles
/// macros to Python closures, so a macro sees the variables of the scope it was defined in, at
/// call time, not those of its caller).
struct MacroData {
    const Stmt* def = nullptr;
    std::weak_ptr<Scope> closure;  // kept alive by the evaluator (pinned_) for the render
};
/// Variables of one Jinja scope (the template, a loop iteration, a macro call, a block set).
struct Scope {
    std::vector<std::pair<std::string, Value>> vars;
    std::shared_ptr<Scope> parent;
};
}  // namespace jinja

namespace {

using namespace jinja;

constexpr int k_max_macro_depth = 100;

class Evaluator {
  public:
    Evaluator(const TemplateAst& ast, const Value& context, const Limits& limits, std::optional<std::tm> now)
        : ast_(ast), rt_(limits), context_(context), now_(now) {}

    std::string run() {
        scope_ = std::make_shared<Scope>();
        bind_undefined(ast_.root_undefined);
        exec_body(ast_.body);
        return std::move(out_);
    }

    /// Evaluates an expression without variables (for compile-time checks).
    Value eval_constant(const Expr& e) {
        scope_ = std::make_shared<Scope>();
        return eval(e);
    }

    int line() const { return line_; }
    int column() const { return column_; }

  private:
    enum class Flow { Normal, Break, Continue };

    // Makes `scope` the current scope until destroyed.
    class EnterScope {
      public:
        EnterScope(Evaluator& ev, std::shared_ptr<Scope> scope) : ev_(ev), saved_(std::move(ev.scope_)) {
            ev_.scope_ = std::move(scope);
        }
        ~EnterScope() { ev_.scope_ = std::move(saved_); }
        EnterScope(const EnterScope&) = delete;
        EnterScope& operator=(const EnterScope&) = delete;

      private:
        Evaluator& ev_;
        std::shared_ptr<Scope> saved_;
    };
    std::shared_ptr<Scope> child_scope() const {
        auto s = std::make_shared<Scope>();
        s->parent = scope_;
        return s;
    }

    // Sends output to a buffer until destroyed (macro bodies, block sets).
    class Capture {
      public:
        explicit Capture(Evaluator& ev) : ev_(ev), saved_(std::move(ev.out_)) { ev_.out_.clear(); }
        ~Capture() { ev_.out_ = std::move(saved_); }
        std::string take() { return std::exchange(ev_.out_, std::string()); }
        Capture(const Capture&) = delete;
        Capture& operator=(const Capture&) = delete;

      private:
        Evaluator& ev_;
        std::string saved_;
    };

    // `for x in xs if cond`: filters lazily, evaluating `cond` in the scope of the loop statement.
    class LoopFilter : public Iterator {
      public:
        LoopFilter(Evaluator& ev, const Stmt& stmt, const Value& iterable)
            : ev_(ev), stmt_(stmt), it_(iterate(iterable)), scope_(ev.scope_) {}
        std::optional<Value> next(Runtime& rt) override {
            while (std::optional<Value> item = it_.next(rt)) {
                auto inner = std::make_shared<Scope>();
                inner->parent = scope_;
                EnterScope enter(ev_, std::move(inner));
                ev_.assign(stmt_.target, *item);
                if (truthy(ev_.eval(*stmt_.filter))) return item;
            }
            return std::nullopt;
        }

      private:
        Evaluator& ev_;
        const Stmt& stmt_;
        Iteration it_;
        std::shared_ptr<Scope> scope_;
    };

    void at(int line, int column) {
        line_ = line;
        column_ = column;
    }

    void emit(std::string_view text) {
        if (out_.size() + text.size() > rt_.limits.max_output_bytes) {
            fail("chat template output exceeds " + std::to_string(rt_.limits.max_output_bytes) + " bytes");
        }
        out_ += text;
    }

    Value lookup(const std::string& name) {
        for (const Scope* s = scope_.get(); s; s = s->parent.get()) {
            for (auto it = s->vars.rbegin(); it != s->vars.rend(); ++it) {
                if (it->first == name) return it->second;
            }
        }
        if (const Value* v = context_.dict->find(Value::string(name))) return *v;
        if (is_supported_function(name)) return Value::function(name);
        Value u;
        u.s = std::make_shared<const std::string>(name);
        return u;
    }

    // Locals Jinja starts as undefined in a new scope (ScopeAnalysis in jinja_parser.cpp).
    void bind_undefined(const std::vector<std::string>& names) {
        for (const std::string& n : names) {
            Value u;
            u.s = std::make_shared<const std::string>(n);
            store(n, std::move(u));
        }
    }

    void store(const std::string& name, Value value) {
        auto& frame = scope_->vars;
        for (auto& [k, v] : frame) {
            if (k == name) {
                v = std::move(value);
                return;
            }
        }
        frame.emplace_back(name, std::move(value));
    }

    void assign(const Target& target, const Value& value) {
        if (!target.is_tuple) {
            store(target.name, value);
            return;
        }
        Iteration it = iterate(value);
        std::vector<Value> items;
        while (std::optional<Value> x = it.next(rt_)) {
            items.push_back(std::move(*x));
            if (items.size() > target.items.size()) {
                fail("too many values to unpack (expected " + std::to_string(target.items.size()) + ")");
            }
        }
        if (items.size() < target.items.size()) {
            fail("not enough values to unpack (expected " + std::to_string(target.items.size()) + ", got " +
                 std::to_string(items.size()) + ")");
        }
        for (size_t k = 0; k < items.size(); ++k) assign(target.items[k], items[k]);
    }

    Flow exec_body(const Body& body) {
        for (const StmtPtr& s : body) {
            const Flow f = exec(*s);
            if (f != Flow::Normal) return f;
        }
        return Flow::Normal;
    }

    Flow exec(const Stmt& s) {
        rt_.charge(1);
        at(s.line, s.column);
        switch (s.kind) {
            case StmtKind::Text:
                emit(s.text);
                return Flow::Normal;
            case StmtKind::Output: {
                const Value v = eval(*s.expr);
                if (v.is_string()) {
                    emit(v.str());
                } else {
                    std::string text;
                    append_str(text, v, rt_);
                    emit(text);
                }
                return Flow::Normal;
            }
            case StmtKind::If:
                for (const IfBranch& b : s.branches) {
                    if (!b.test || truthy(eval(*b.test))) return exec_body(b.body);
                }
                return Flow::Normal;
            case StmtKind::Set:
                assign(s.target, eval(*s.expr));
                return Flow::Normal;
            case StmtKind::Break:
                return Flow::Break;
            case StmtKind::Continue:
                return Flow::Continue;
            case StmtKind::For:
                exec_for(s);
                return Flow::Normal;
            case StmtKind::Macro:
                store(s.name, make_macro(s, s.name));
                return Flow::Normal;
            case StmtKind::CallBlock: {
                const Value caller = make_macro(s, "caller");
                Value result;
                if (s.expr) {
                    result = eval_call(*s.expr, &caller);  // the call gets caller=<the body>
                } else {
                    result = call_macro(caller, {}, {});  // {% generation %}
                }
                at(s.line, s.column);
                std::string text;
                append_str(text, result, rt_);
                emit(text);
                return Flow::Normal;
            }
            case StmtKind::SetBlock: {
                Value value;
                {
                    EnterScope enter(*this, child_scope());
                    bind_undefined(s.body_undefined);
                    std::string captured;
                    {
                        Capture capture(*this);
                        exec_body(s.body);
                        captured = capture.take();
                    }
                    value = Value::string(std::move(captured));
                    if (s.expr) {
                        store(k_block_capture, value);
                        value = eval(*s.expr);
                    }
                }
                assign(s.target, value);
                return Flow::Normal;
            }
            case StmtKind::NamespaceSet: {
                const Value ns = lookup(s.target.name);
                if (ns.kind != ValueKind::Namespace) fail("cannot assign attribute on non-namespace object");
                const Value value = eval(*s.expr);
                at(s.line, s.column);
                if (!s.name.empty() && s.name[0] == '_') {
                    fail("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '" +
                         s.name + "'");
                }
                ns.ns->attrs.set(Value::string(s.name), value);
                return Flow::Normal;
            }
        }
        return Flow::Normal;
    }

    Value make_macro(const Stmt& def, const std::string& name) {
        pinned_.push_back(scope_);
        auto m = std::make_shared<MacroData>();
        m->def = &def;
        m->closure = scope_;
        Value v = Value::function(name);
        auto c = std::make_shared<CallableData>(*v.callable);
        c->macro = std::move(m);
        v.callable = std::move(c);
        return v;
    }

    // jinja2.runtime.Macro.__call__ and the function macro_body() compiles.
    Value call_macro(const Value& callee, const std::vector<Value>& args, KwArgs kwargs) {
        const MacroData& m = *callee.callable->macro;
        const Stmt& def = *m.def;
        const std::string& name = callee.callable->name;
        const size_t n = def.params.size();
        std::vector<std::optional<Value>> bound(n);
        for (size_t k = 0; k < std::min(n, args.size()); ++k) bound[k] = args[k];
        auto pop_kwarg = [&kwargs](const std::string& key) -> std::optional<Value> {
            for (auto it = kwargs.begin(); it != kwargs.end(); ++it) {
                if (it->first == key) {
                    Value v = std::move(it->second);
                    kwargs.erase(it);
                    return v;
                }
            }
            return std::nullopt;
        };
        if (args.size() < n) {
            for (size_t k = args.size(); k < n; ++k) bound[k] = pop_kwarg(def.params[k]);
        }
        Value caller = Value::none();
        if (def.catch_caller) {
            if (std::optional<Value> c = pop_kwarg("caller")) caller = *c;
        }
        Value kwargs_dict;
        if (def.catch_kwargs) {
            auto d = std::make_shared<DictData>();
            for (auto& [k, v] : kwargs) d->set(Value::string(k), v);
            kwargs_dict = Value::dict_value(std::move(d));
        } else if (!kwargs.empty()) {
            for (const auto& kv : kwargs) {
                if (kv.first == "caller") {
                    fail("macro '" + name + "' was invoked with two values for the special caller argument");
                }
            }
            fail("macro '" + name + "' takes no keyword argument '" + kwargs.front().first + "'");
        }
        Value varargs;
        if (def.catch_varargs) {
            std::vector<Value> extra;
            for (size_t k = n; k < args.size(); ++k) extra.push_back(args[k]);
            varargs = Value::tuple(std::move(extra));
        } else if (args.size() > n) {
            fail("macro '" + name + "' takes not more than " + std::to_string(n) + " argument(s)");
        }
        if (++macro_depth_ > k_max_macro_depth) {
            --macro_depth_;
            fail("chat template macros call each other more than " + std::to_string(k_max_macro_depth) +
                 " deep");
        }
        struct Depth {
            ~Depth() { --depth; }
            int& depth;
        } depth{macro_depth_};
        const std::shared_ptr<Scope> closure = m.closure.lock();
        PHI_CHECK(closure, "chat template macro outlived its scope");
        auto scope = std::make_shared<Scope>();
        scope->parent = closure;
        EnterScope enter(*this, std::move(scope));
        Capture capture(*this);
        for (size_t k = 0; k < n; ++k) {
            if (bound[k]) store(def.params[k], *bound[k]);
        }
        const size_t first_default = n - def.defaults.size();
        for (size_t k = 0; k < n; ++k) {
            if (bound[k]) continue;
            if (k >= first_default) {
                store(def.params[k], eval(*def.defaults[k - first_default]));
            } else {
                Value u;  // undefined("parameter 'x' was not provided", name='x')
                u.s = std::make_shared<const std::string>(def.params[k]);
                store(def.params[k], std::move(u));
            }
        }
        if (def.catch_caller) store("caller", caller);
        if (def.catch_varargs) store("varargs", varargs);
        if (def.catch_kwargs) store("kwargs", kwargs_dict);
        bind_undefined(def.body_undefined);
        exec_body(def.body);
        return Value::string(capture.take());
    }

    // HF's TemplateNamespace(*args, **kwargs): attributes from dict(*args, **kwargs).
    Value make_namespace(const std::vector<Value>& args, const KwArgs& kwargs) {
        if (args.size() > 1) fail("dict expected at most 1 argument, got " + std::to_string(args.size()));
        auto ns = std::make_shared<NamespaceData>();
        if (!args.empty()) {
            const Value& a = args[0];
            if (a.kind == ValueKind::Dict) {
                for (const auto& [k, v] : a.dict->entries) ns->attrs.set(k, v);
            } else {
                Iteration it = iterate(a);
                while (std::optional<Value> pair = it.next(rt_)) {
                    const std::vector<Value> kv = to_list(rt_, *pair);
                    if (kv.size() != 2) fail("dictionary update sequence element has wrong length; 2 is required");
                    if (!hashable(kv[0])) fail("unhashable type: '" + type_name(kv[0]) + "'");
                    ns->attrs.set(kv[0], kv[1]);
                }
            }
        }
        for (const auto& [k, v] : kwargs) ns->attrs.set(Value::string(k), v);
        for (const auto& [k, v] : ns->attrs.entries) {
            if (k.is_string() && !k.str().empty() && k.str()[0] == '_') {
                fail("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '" +
                     k.str() + "'");
            }
        }
        Value v;
        v.kind = ValueKind::Namespace;
        v.ns = std::move(ns);
        return v;
    }

    // HF's strftime_now(format): datetime.now().strftime(format) for a naive local datetime, so
    // %z and %Z are empty; %f is the microseconds. Tests freeze the time (RenderOptions::now).
    Value strftime_now(const std::vector<Value>& args, const KwArgs& kwargs) {
        if (args.size() + kwargs.size() != 1 || (!kwargs.empty() && kwargs[0].first != "format")) {
            fail("strftime_now() takes exactly one argument (format)");
        }
        const Value& f = args.empty() ? kwargs[0].second : args[0];
        if (!f.is_string()) fail("strftime() argument 1 must be str, not " + type_name(f));
        std::tm tm{};
        long micros = 0;
        if (now_) {
            tm = *now_;
            tm.tm_isdst = 0;
            const std::time_t t = timegm(&tm);  // normalises and fills the weekday and year day
            gmtime_r(&t, &tm);
        } else {
            timespec ts{};
            clock_gettime(CLOCK_REALTIME, &ts);
            localtime_r(&ts.tv_sec, &tm);
            micros = ts.tv_nsec / 1000;
        }
        tm.tm_isdst = -1;
        const std::string& fmt = f.str();
        std::string pattern;
        for (size_t k = 0; k < fmt.size(); ++k) {
            if (fmt[k] == '%' && k + 1 < fmt.size()) {
                const char d = fmt[k + 1];
                if (d == 'f') {
                    pattern += fmt::format("{:06d}", micros);
                    ++k;
                    continue;
                }
                if (d == 'z' || d == 'Z') {
                    ++k;
                    continue;
                }
                if (d == ':' && k + 2 < fmt.size() && fmt[k + 2] == 'z') {
                    k += 2;
                    continue;
                }
                pattern += fmt.substr(k, 2);
                ++k;
                continue;
            }
            pattern += fmt[k];
        }
        if (pattern.empty()) return Value::string("");
        // strftime returns 0 both for "too small" and for an empty result; a marker tells them apart
        pattern += '\x01';
        std::string out(pattern.size() * 4 + 64, '\0');
        while (true) {
            const size_t n = std::strftime(out.data(), out.size(), pattern.c_str(), &tm);
            if (n > 0) {
                out.resize(n - 1);
                break;
            }
            rt_.check_string(out.size() * 2);
            out.resize(out.size() * 2);
        }
        return Value::string(std::move(out));
    }

    Value eval_call(const Expr& e, const Value* caller) {
        Value callee;
        if (e.node) {
            const Value obj = eval(*e.node);
            at(e.line, e.column);
            callee = get_attr(rt_, obj, e.name);
        } else {
            callee = lookup(e.name);
        }
        const std::vector<Value> args = eval_items(e.items);
        KwArgs kwargs = eval_kwargs(e.kwargs);
        if (caller) kwargs.emplace_back("caller", *caller);
        at(e.line, e.column);
        if (callee.kind == ValueKind::Callable && !callee.callable->is_method) {
            if (callee.callable->macro) return call_macro(callee, args, std::move(kwargs));
            if (callee.callable->name == "namespace") return make_namespace(args, kwargs);
            if (callee.callable->name == "strftime_now") return strftime_now(args, kwargs);
        }
        return call_callable(rt_, callee, args, kwargs);
    }

    void exec_for(const Stmt& s) {
        const Value iterable = eval(*s.expr);
        auto state = std::make_shared<LoopState>();
        state->source = s.filter ? iterate(Value::iterator(std::make_shared<LoopFilter>(*this, s, iterable)))
                                 : iterate(iterable);
        Value loop_value;
        loop_value.kind = ValueKind::Loop;
        loop_value.loop = state;
        // Jinja clears its "no iteration" flag at the end of the body, so an iteration left through
        // break or continue does not count.
        bool run_else = true;
        while (std::optional<Value> item = state->pull(rt_)) {
            EnterScope enter(*this, child_scope());
            assign(s.target, *item);
            store("loop", loop_value);
            bind_undefined(s.body_undefined);
            const Flow f = exec_body(s.body);
            if (f == Flow::Break) break;
            if (f == Flow::Normal) run_else = false;
        }
        if (run_else && !s.else_body.empty()) {
            EnterScope enter(*this, child_scope());
            bind_undefined(s.else_undefined);
            exec_body(s.else_body);
        }
    }

    std::vector<Value> eval_items(const std::vector<ExprPtr>& items) {
        std::vector<Value> out;
        out.reserve(items.size());
        for (const ExprPtr& e : items) out.push_back(eval(*e));
        return out;
    }

    KwArgs eval_kwargs(const std::vector<Keyword>& kwargs) {
        KwArgs out;
        out.reserve(kwargs.size());
        for (const Keyword& k : kwargs) out.emplace_back(k.name, eval(*k.value));
        return out;
    }

    Value eval(const Expr& e) {
        rt_.charge(1);
        at(e.line, e.column);
        switch (e.kind) {
            case ExprKind::Const:
                return e.constant;
            case ExprKind::Name:
                return lookup(e.name);
            case ExprKind::Tuple:
                return Value::tuple(eval_items(e.items));
            case ExprKind::List:
                return Value::list(eval_items(e.items));
            case ExprKind::Dict: {
                auto d = std::make_shared<DictData>();
                for (size_t k = 0; k + 1 < e.items.size(); k += 2) {
                    Value key = eval(*e.items[k]);
                    Value value = eval(*e.items[k + 1]);
                    at(e.line, e.column);
                    if (!hashable(key)) fail("unhashable type: '" + type_name(key) + "'");
                    if (key.kind == ValueKind::Iterator || key.kind == ValueKind::Loop ||
                        key.kind == ValueKind::Callable || key.kind == ValueKind::Sequence) {
                        if (!(key.kind == ValueKind::Sequence && key.seq->kind == SequenceKind::Tuple)) {
                            fail("dict keys of type '" + type_name(key) +
                                 "' are not supported in chat templates");
                        }
                    }
                    d->set(std::move(key), std::move(value));
                }
                return Value::dict_value(std::move(d));
            }
            case ExprKind::Getattr: {
                const Value obj = eval(*e.node);
                at(e.line, e.column);
                return get_attr(rt_, obj, e.name);
            }
            case ExprKind::Getitem: {
                const Value obj = eval(*e.node);
                const Value key = eval(*e.arg);
                at(e.line, e.column);
                return get_item(rt_, obj, key);
            }
            case ExprKind::Slice: {
                const Value obj = eval(*e.node);
                Value bounds[3];
                for (int k = 0; k < 3; ++k) bounds[k] = e.items[k] ? eval(*e.items[k]) : Value::none();
                at(e.line, e.column);
                return get_slice(rt_, obj, bounds[0], bounds[1], bounds[2]);
            }
            case ExprKind::Call:
                return eval_call(e, nullptr);
            case ExprKind::Filter: {
                const Value input = eval(*e.node);
                const std::vector<Value> args = eval_items(e.items);
                const KwArgs kwargs = eval_kwargs(e.kwargs);
                at(e.line, e.column);
                return apply_filter(rt_, e.name, input, args, kwargs);
            }
            case ExprKind::Test: {
                const Value input = eval(*e.node);
                const std::vector<Value> args = eval_items(e.items);
                const KwArgs kwargs = eval_kwargs(e.kwargs);
                at(e.line, e.column);
                return Value::boolean(apply_test(rt_, e.name, input, args, kwargs));
            }
            case ExprKind::Not:
                return Value::boolean(!truthy(eval(*e.node)));
            case ExprKind::Neg: {
                const Value v = eval(*e.node);
                at(e.line, e.column);
                return negate(v);
            }
            case ExprKind::Pos: {
                const Value v = eval(*e.node);
                at(e.line, e.column);
                return positive(v);
            }
            case ExprKind::Binary: {
                const Value a = eval(*e.node);
                const Value b = eval(*e.arg);
                at(e.line, e.column);
                return binary(rt_, e.op, a, b);
            }
            case ExprKind::Concat: {
                std::string out;
                for (const ExprPtr& item : e.items) {
                    const Value v = eval(*item);
                    append_str(out, v, rt_);
                    rt_.check_string(out.size());
                }
                rt_.charge(out.size() / 64);
                return Value::string(std::move(out));
            }
            case ExprKind::Compare: {
                Value left = eval(*e.node);
                for (size_t k = 0; k < e.items.size(); ++k) {
                    Value right = eval(*e.items[k]);
                    at(e.line, e.column);
                    if (!compare(rt_, e.compare_ops[k], left, right)) return Value::boolean(false);
                    left = std::move(right);
                }
                return Value::boolean(true);
            }
            case ExprKind::And: {
                Value left = eval(*e.node);
                if (!truthy(left)) return left;
                return eval(*e.arg);
            }
            case ExprKind::Or: {
                Value left = eval(*e.node);
                if (truthy(left)) return left;
                return eval(*e.arg);
            }
            case ExprKind::CondExpr:
                if (truthy(eval(*e.arg))) return eval(*e.node);
                if (e.arg2) return eval(*e.arg2);
                return Value::undefined();
        }
        fail("unknown expression");
    }

    const TemplateAst& ast_;
    Runtime rt_;
    const Value& context_;
    std::optional<std::tm> now_;
    std::shared_ptr<Scope> scope_;
    std::vector<std::shared_ptr<Scope>> pinned_;  // scopes macros close over
    int macro_depth_ = 0;
    std::string out_;
    int line_ = 0;
    int column_ = 0;
};

// Jinja folds constant expressions at compile time, and a folded slice goes through the sandbox's
// getitem (a TypeError becomes Undefined) while a slice evaluated at render time raises. Where the
// two differ for a constant slice, refuse the template.
void check_constant_slices(const Expr& e) {
    if (e.kind == ExprKind::Slice && e.constant_operands) {
        static const Value k_empty_context = Value::dict_value(std::make_shared<DictData>());
        Limits limits;
        limits.max_work = 100000;
        std::optional<Value> parts[4];
        try {
            TemplateAst none;
            Evaluator ev(none, k_empty_context, limits, std::nullopt);
            parts[0] = ev.eval_constant(*e.node);
            for (int k = 0; k < 3; ++k)
                parts[k + 1] = e.items[k] ? ev.eval_constant(*e.items[k]) : Value::none();
        } catch (const phi::Error&) {
            // Folding fails in Jinja as well, which then slices at render time, as we do.
        }
        if (parts[0] && parts[1] && parts[2] && parts[3]) {
            const Value& obj = *parts[0];
            bool sliceable =
                obj.is_string() || (obj.kind == ValueKind::Sequence &&
                                    (obj.is_list_or_tuple() || obj.seq->kind == SequenceKind::Range));
            for (int k = 1; k < 4; ++k)
                sliceable = sliceable && (parts[k]->is_int_like() || parts[k]->is_none());
            if (!sliceable) {
                throw phi::Error(
                    fmt::format("chat template uses unsupported Jinja construct 'slice of a constant {}' at "
                                "line {}, column {}",
                                type_name(obj), e.line, e.column));
            }
        }
    }
    for (const Expr* child : {e.node.get(), e.arg.get(), e.arg2.get()}) {
        if (child) check_constant_slices(*child);
    }
    for (const ExprPtr& item : e.items) {
        if (item) check_constant_slices(*item);
    }
    for (const Keyword& k : e.kwargs) check_constant_slices(*k.value);
}

void check_constant_slices(const Body& body) {
    for (const StmtPtr& s : body) {
        if (s->expr) check_constant_slices(*s->expr);
        if (s->filter) check_constant_slices(*s->filter);
        for (const IfBranch& b : s->branches) {
            if (b.test) check_constant_slices(*b.test);
            check_constant_slices(b.body);
        }
        for (const ExprPtr& d : s->defaults) check_constant_slices(*d);
        check_constant_slices(s->body);
        check_constant_slices(s->else_body);
    }
}

}  // namespace

ChatTemplate ChatTemplate::compile(std::string_view source) {
    ChatTemplate t;
    auto ast = std::make_shared<TemplateAst>(parse_template(source));
    check_constant_slices(ast->body);
    t.ast_ = std::move(ast);
    return t;
}

std::string ChatTemplate::render(const nlohmann::ordered_json& context) const {
    return render(context, Limits{});
}

std::string ChatTemplate::render(const nlohmann::ordered_json& context, const Limits& limits) const {
    return render(context, RenderOptions{limits, std::nullopt});
}

std::string ChatTemplate::render(const nlohmann::ordered_json& context, const RenderOptions& options) const {
    const Limits& limits = options.limits;
    PHI_CHECK(ast_, "chat template used before compile()");
    PHI_CHECK(context.is_object(), "chat template context must be a JSON object, got {}",
              context.type_name());
    const Value ctx = from_json(context, limits.max_data_depth);
    Evaluator ev(*ast_, ctx, limits, options.now);
    try {
        return ev.run();
    } catch (const TemplateRaised& e) {
        throw TemplateException(e.what());
    } catch (const RuntimeError& e) {
        throw phi::Error(
            fmt::format("chat template error at line {}, column {}: {}", ev.line(), ev.column(), e.what()));
    }
}

nlohmann::ordered_json ChatTemplate::hf_context(const nlohmann::ordered_json& messages,
                                                bool add_generation_prompt,
                                                const nlohmann::ordered_json& tools,
                                                const nlohmann::ordered_json& special_tokens,
                                                const nlohmann::ordered_json& extra) {
    PHI_CHECK(messages.is_array(), "chat messages must be a JSON array");
    PHI_CHECK(!messages.empty(), "cannot apply a chat template to an empty conversation");
    PHI_CHECK(tools.is_null() || tools.is_array(), "chat tools must be null or a JSON array");
    PHI_CHECK(special_tokens.is_object() && extra.is_object(),
              "chat template variables must be JSON objects");
    nlohmann::ordered_json chat = nlohmann::ordered_json::array();
    for (const auto& message : messages) {
        PHI_CHECK(message.is_object(), "chat messages must be JSON objects, got {}", message.type_name());
        // _normalize_chat_messages: keys whose value is None are dropped
        nlohmann::ordered_json m = nlohmann::ordered_json::object();
        for (const auto& [k, v] : message.items()) {
            if (!v.is_null()) m[k] = v;
        }
        // _alias_reasoning_fields: {"thinking": r, **message, "reasoning_content": r}
        const nlohmann::ordered_json* reasoning = nullptr;
        for (const char* key : {"reasoning_content", "thinking", "reasoning"}) {
            if (m.contains(key)) {
                reasoning = &m[key];
                break;
            }
        }
        if (reasoning) {
            const nlohmann::ordered_json r = *reasoning;
            nlohmann::ordered_json aliased = nlohmann::ordered_json::object();
            aliased["thinking"] = r;
            for (const auto& [k, v] : m.items()) aliased[k] = v;
            aliased["reasoning_content"] = r;
            m = std::move(aliased);
        }
        chat.push_back(std::move(m));
    }
    nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
    ctx["messages"] = std::move(chat);
    ctx["tools"] = tools;
    ctx["documents"] = nullptr;
    ctx["add_generation_prompt"] = add_generation_prompt;
    for (const auto& [k, v] : special_tokens.items()) ctx[k] = v;
    for (const auto& [k, v] : extra.items()) ctx[k] = v;
    return ctx;
}

}  // namespace phi::chat
