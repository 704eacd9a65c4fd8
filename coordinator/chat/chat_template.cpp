// Evaluator for compiled chat templates (see chat_template.h). Scoping follows the code Jinja 3.1
// generates: the template body is one scope; every iteration of a for loop gets a fresh scope that
// sees the enclosing ones (so `set` inside a loop never leaks out, and does not carry over to the
// next iteration); the loop's else block has its own scope; `if` has none. Names resolve through
// the scopes, then the render context, then the globals (range, raise_exception).
#include "coordinator/chat/chat_template.h"

#include <fmt/format.h>

#include <optional>
#include <utility>
#include <vector>

#include "coordinator/chat/jinja_ast.h"
#include "coordinator/chat/jinja_builtins.h"

namespace phi::chat {
namespace {

using namespace jinja;

class Evaluator {
  public:
    Evaluator(const TemplateAst& ast, const Value& context, const Limits& limits)
        : ast_(ast), rt_(limits), context_(context) {}

    std::string run() {
        frames_.emplace_back();
        bind_undefined(ast_.root_undefined);
        exec_body(ast_.body);
        return std::move(out_);
    }

    /// Evaluates an expression without variables (for compile-time checks).
    Value eval_constant(const Expr& e) {
        frames_.assign(1, Frame{});
        return eval(e);
    }

    int line() const { return line_; }
    int column() const { return column_; }

  private:
    using Frame = std::vector<std::pair<std::string, Value>>;
    enum class Flow { Normal, Break, Continue };

    // `for x in xs if cond`: filters lazily, evaluating `cond` in the scopes of the loop statement.
    class LoopFilter : public Iterator {
      public:
        LoopFilter(Evaluator& ev, const Stmt& stmt, const Value& iterable)
            : ev_(ev), stmt_(stmt), it_(iterate(iterable)), frames_(ev.frames_) {}
        std::optional<Value> next(Runtime& rt) override {
            while (std::optional<Value> item = it_.next(rt)) {
                std::swap(ev_.frames_, frames_);
                struct Restore {
                    ~Restore() {
                        self.ev_.frames_.pop_back();
                        std::swap(self.ev_.frames_, self.frames_);
                    }
                    LoopFilter& self;
                } restore{*this};
                ev_.frames_.emplace_back();
                ev_.assign(stmt_.target, *item);
                if (truthy(ev_.eval(*stmt_.filter))) return item;
            }
            return std::nullopt;
        }

      private:
        Evaluator& ev_;
        const Stmt& stmt_;
        Iteration it_;
        std::vector<Frame> frames_;
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
        for (auto frame = frames_.rbegin(); frame != frames_.rend(); ++frame) {
            for (auto it = frame->rbegin(); it != frame->rend(); ++it) {
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
        Frame& frame = frames_.back();
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
        }
        return Flow::Normal;
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
            frames_.emplace_back();
            struct Pop {
                ~Pop() { frames.pop_back(); }
                std::vector<Frame>& frames;
            } pop{frames_};
            assign(s.target, *item);
            store("loop", loop_value);
            bind_undefined(s.body_undefined);
            const Flow f = exec_body(s.body);
            if (f == Flow::Break) break;
            if (f == Flow::Normal) run_else = false;
        }
        if (run_else && !s.else_body.empty()) {
            frames_.emplace_back();
            struct Pop {
                ~Pop() { frames.pop_back(); }
                std::vector<Frame>& frames;
            } pop{frames_};
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
            case ExprKind::Call: {
                Value callee;
                if (e.node) {
                    const Value obj = eval(*e.node);
                    at(e.line, e.column);
                    callee = get_attr(rt_, obj, e.name);
                } else {
                    callee = lookup(e.name);
                }
                const std::vector<Value> args = eval_items(e.items);
                const KwArgs kwargs = eval_kwargs(e.kwargs);
                at(e.line, e.column);
                return call_callable(rt_, callee, args, kwargs);
            }
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
    std::vector<Frame> frames_;
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
            Evaluator ev(none, k_empty_context, limits);
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
    PHI_CHECK(ast_, "chat template used before compile()");
    PHI_CHECK(context.is_object(), "chat template context must be a JSON object, got {}",
              context.type_name());
    const Value ctx = from_json(context, limits.max_data_depth);
    Evaluator ev(*ast_, ctx, limits);
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
