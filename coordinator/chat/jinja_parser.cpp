// Recursive-descent parser for chat templates, function for function the one in jinja2/parser.py
// (Jinja 3.1), so precedence and tuple/condexpr rules are Jinja's. Statements, filters, tests and
// calls outside the supported subset are refused here, naming the construct and its position.
#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>
#include <set>

#include "common/error.h"
#include "coordinator/chat/jinja_ast.h"
#include "coordinator/chat/jinja_builtins.h"
#include "coordinator/chat/jinja_lexer.h"

namespace phi::chat::jinja {
namespace {

constexpr int k_max_nesting = 200;

class Parser {
  public:
    explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

    TemplateAst parse() {
        TemplateAst ast;
        ast.body = subparse({});
        if (cur().type != TokenType::Eof) fail_here("unexpected token");
        // Calls of names are checked once all macros are known (a macro may be called before it
        // is defined, e.g. from inside another macro).
        for (const auto& [name, at] : pending_calls_) {
            if (!macro_names_.count(name) && name != "caller") unsupported(at, name + "()");
        }
        return ast;
    }

  private:
    // ---- token stream ----
    const Token& cur() const { return tokens_[pos_]; }
    const Token& look() const { return tokens_[std::min(pos_ + 1, tokens_.size() - 1)]; }
    const Token& advance() {
        const Token& t = tokens_[pos_];
        if (pos_ + 1 < tokens_.size()) ++pos_;
        return t;
    }
    bool is_name(const Token& t, std::string_view v) const {
        return t.type == TokenType::Name && t.value == v;
    }
    bool is_op(const Token& t, std::string_view v) const {
        return t.type == TokenType::Operator && t.value == v;
    }
    bool skip_name(std::string_view v) {
        if (!is_name(cur(), v)) return false;
        advance();
        return true;
    }
    bool skip_op(std::string_view v) {
        if (!is_op(cur(), v)) return false;
        advance();
        return true;
    }

    static std::string describe(const Token& t) {
        switch (t.type) {
            case TokenType::Data:
                return "template data";
            case TokenType::VariableBegin:
                return "begin of print statement";
            case TokenType::VariableEnd:
                return "end of print statement";
            case TokenType::BlockBegin:
                return "begin of statement block";
            case TokenType::BlockEnd:
                return "end of statement block";
            case TokenType::Eof:
                return "end of template";
            default:
                return t.value;
        }
    }

    [[noreturn]] void fail_at(const Token& t, const std::string& msg) const {
        throw phi::Error(
            fmt::format("chat template syntax error at line {}, column {}: {}", t.line, t.column, msg));
    }
    [[noreturn]] void fail_here(const std::string& msg) const {
        fail_at(cur(), msg + " (got '" + describe(cur()) + "')");
    }
    [[noreturn]] void unsupported(const Token& t, const std::string& what) const {
        throw phi::Error(
            fmt::format("chat template uses unsupported Jinja construct '{}' at line {}, column {}", what,
                        t.line, t.column));
    }

    void expect_op(std::string_view v) {
        if (!skip_op(v)) fail_here(fmt::format("expected '{}'", v));
    }
    void expect_type(TokenType type, const char* what) {
        if (cur().type != type) fail_here(fmt::format("expected {}", what));
        advance();
    }
    void expect_name(std::string_view v) {
        if (!skip_name(v)) fail_here(fmt::format("expected '{}'", v));
    }

    struct DepthGuard {
        explicit DepthGuard(Parser& p) : p(p) {
            if (++p.depth_ > k_max_nesting) {
                p.fail_here("template nests expressions or blocks more than " +
                            std::to_string(k_max_nesting) + " deep");
            }
        }
        ~DepthGuard() { --p.depth_; }
        Parser& p;
    };

    ExprPtr make(ExprKind kind, const Token& at) const {
        auto e = std::make_unique<Expr>();
        e->kind = kind;
        e->line = at.line;
        e->column = at.column;
        return e;
    }

    // ---- statements ----

    bool at_end_token(std::initializer_list<std::string_view> end_tokens) const {
        return cur().type == TokenType::Name &&
               std::find(end_tokens.begin(), end_tokens.end(), cur().value) != end_tokens.end();
    }

    Body subparse(std::initializer_list<std::string_view> end_tokens) {
        DepthGuard guard(*this);
        Body body;
        while (true) {
            const Token& t = cur();
            if (t.type == TokenType::Data) {
                auto s = std::make_unique<Stmt>();
                s->kind = StmtKind::Text;
                s->line = t.line;
                s->column = t.column;
                s->text = t.value;
                body.push_back(std::move(s));
                advance();
            } else if (t.type == TokenType::VariableBegin) {
                const Token& at = advance();
                auto s = std::make_unique<Stmt>();
                s->kind = StmtKind::Output;
                s->line = at.line;
                s->column = at.column;
                s->expr = parse_tuple(false, true, {}, false);
                expect_type(TokenType::VariableEnd, "end of print statement '}}'");
                body.push_back(std::move(s));
            } else if (t.type == TokenType::BlockBegin) {
                advance();
                if (end_tokens.size() && at_end_token(end_tokens)) return body;
                body.push_back(parse_statement());
                expect_type(TokenType::BlockEnd, "end of statement block '%}'");
            } else if (t.type == TokenType::Eof) {
                return body;
            } else {
                fail_here("unexpected token");
            }
        }
    }

    Body parse_statements(std::initializer_list<std::string_view> end_tokens, bool drop_needle) {
        skip_op(":");
        expect_type(TokenType::BlockEnd, "end of statement block '%}'");
        Body body = subparse(end_tokens);
        if (cur().type == TokenType::Eof) {
            std::string names;
            for (std::string_view e : end_tokens)
                names += (names.empty() ? "'" : " or '") + std::string(e) + "'";
            fail_at(cur(), "unexpected end of template; Jinja was looking for " + names);
        }
        if (drop_needle) advance();
        return body;
    }

    StmtPtr parse_statement() {
        const Token& t = cur();
        if (t.type != TokenType::Name) fail_here("tag name expected");
        const std::string& tag = t.value;
        if (tag == "for") return parse_for();
        if (tag == "if") return parse_if();
        if (tag == "set") return parse_set();
        if (tag == "macro") return parse_macro();
        if (tag == "call") return parse_call_block();
        if (tag == "generation") return parse_generation();
        if (tag == "print") {
            const Token& at = advance();
            auto s = std::make_unique<Stmt>();
            s->kind = StmtKind::Output;
            s->line = at.line;
            s->column = at.column;
            s->expr = parse_tuple(false, true, {}, false);
            return s;
        }
        if (tag == "break" || tag == "continue") {
            if (loop_depth_ == 0) fail_at(t, "'" + tag + "' not properly in loop");
            auto s = std::make_unique<Stmt>();
            s->kind = tag == "break" ? StmtKind::Break : StmtKind::Continue;
            s->line = t.line;
            s->column = t.column;
            advance();
            return s;
        }
        static const char* const k_refused[] = {"filter",  "include", "import",     "from", "extends",
                                                "block",   "with",    "autoescape", "raw",  "trans"};
        for (const char* r : k_refused) {
            if (tag == r) {
                const std::string what = tag == "filter" ? tag + " block" : tag;
                unsupported(t, what);
            }
        }
        fail_at(t, "encountered unknown tag '" + tag + "'");
    }

    StmtPtr parse_for() {
        const Token& at = advance();  // 'for'
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::For;
        s->line = at.line;
        s->column = at.column;
        s->target = parse_assign_target({"in"}, false);
        check_loop_target(s->target, at);
        expect_name("in");
        s->expr = parse_tuple(false, false, {"recursive"}, false);
        if (skip_name("if")) {
            const Token& filter_at = cur();
            s->filter = parse_expression(true);
            if (mentions_name(*s->filter, "loop")) unsupported(filter_at, "'loop' inside a for-loop filter");
        }
        if (is_name(cur(), "recursive")) unsupported(cur(), "recursive for loop");
        ++loop_depth_;
        s->body = parse_statements({"endfor", "else"}, false);
        --loop_depth_;
        if (advance().value == "else") {
            const int saved = loop_depth_;
            loop_depth_ = 0;  // Jinja compiles the else block outside the loop
            s->else_body = parse_statements({"endfor"}, true);
            loop_depth_ = saved;
        }
        return s;
    }

    void check_loop_target(const Target& t, const Token& at) const {
        if (t.is_tuple) {
            for (const Target& x : t.items) check_loop_target(x, at);
        } else if (t.name == "loop") {
            fail_at(at, "can't assign to special loop variable in for-loop target");
        }
    }

    StmtPtr parse_if() {
        const Token& at = advance();  // 'if'
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::If;
        s->line = at.line;
        s->column = at.column;
        while (true) {
            IfBranch branch;
            branch.test = parse_tuple(false, false, {}, false);
            branch.body = parse_statements({"elif", "else", "endif"}, false);
            s->branches.push_back(std::move(branch));
            const Token& t = advance();
            if (t.value == "elif") continue;
            if (t.value == "else") {
                IfBranch else_branch;
                else_branch.body = parse_statements({"endif"}, true);
                s->branches.push_back(std::move(else_branch));
            }
            break;
        }
        return s;
    }

    StmtPtr parse_set() {
        const Token& at = advance();  // 'set'
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::Set;
        s->line = at.line;
        s->column = at.column;
        const Token& after_attr = tokens_[std::min(pos_ + 3, tokens_.size() - 1)];
        if (cur().type == TokenType::Name && is_op(look(), ".") &&
            (is_op(after_attr, "=") || is_op(after_attr, "|") || after_attr.type == TokenType::BlockEnd)) {
            // {% set ns.attr = value %}
            s->kind = StmtKind::NamespaceSet;
            s->target.name = advance().value;
            advance();  // '.'
            if (cur().type != TokenType::Name) fail_here("expected an attribute name");
            s->name = advance().value;
            if (!skip_op("=")) unsupported(at, "block set of a namespace attribute");
            s->expr = parse_tuple(false, true, {}, false);
            return s;
        }
        s->target = parse_assign_target({}, true);
        if (skip_op("=")) {
            s->expr = parse_tuple(false, true, {}, false);
            return s;
        }
        // {% set x | filters %}...{% endset %}: the filters apply to the captured text
        if (s->target.is_tuple) fail_here("expected '=' after a tuple target");
        s->kind = StmtKind::SetBlock;
        if (is_op(cur(), "|")) {
            ExprPtr captured = make(ExprKind::Name, cur());
            captured->name = k_block_capture;
            s->expr = parse_filter(std::move(captured));
        }
        const int saved = loop_depth_;
        loop_depth_ = 0;
        s->body = parse_statements({"endset"}, true);
        loop_depth_ = saved;
        return s;
    }

    // Jinja's parse_signature: `(a, b=default, ...)`, no trailing comma.
    void parse_signature(Stmt& s) {
        expect_op("(");
        while (!is_op(cur(), ")")) {
            if (!s.params.empty()) expect_op(",");
            const Token& p = cur();
            if (p.type != TokenType::Name) fail_here("expected a parameter name");
            if (p.value == "caller" || p.value == "varargs" || p.value == "kwargs") {
                unsupported(p, "macro parameter named " + p.value);
            }
            for (const std::string& q : s.params) {
                if (q == p.value) fail_at(p, "duplicate argument '" + p.value + "' in macro definition");
            }
            s.params.push_back(advance().value);
            if (skip_op("=")) {
                s.defaults.push_back(parse_expression(true));
            } else if (!s.defaults.empty()) {
                fail_at(p, "non-default argument follows default argument");
            }
        }
        expect_op(")");
    }

    Body parse_macro_body(std::initializer_list<std::string_view> end_tokens) {
        const int saved = loop_depth_;
        loop_depth_ = 0;  // a macro body is a function of its own: break/continue do not reach out
        Body body = parse_statements(end_tokens, true);
        loop_depth_ = saved;
        return body;
    }

    StmtPtr parse_macro() {
        const Token& at = advance();  // 'macro'
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::Macro;
        s->line = at.line;
        s->column = at.column;
        if (cur().type != TokenType::Name) fail_here("expected a macro name");
        s->name = advance().value;
        macro_names_.insert(s->name);
        parse_signature(*s);
        s->body = parse_macro_body({"endmacro"});
        return s;
    }

    StmtPtr parse_call_block() {
        const Token& at = advance();  // 'call'
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::CallBlock;
        s->line = at.line;
        s->column = at.column;
        if (is_op(cur(), "(")) parse_signature(*s);
        s->expr = parse_expression(true);
        if (s->expr->kind != ExprKind::Call) fail_at(at, "expected call");
        s->body = parse_macro_body({"endcall"});
        return s;
    }

    // HF's AssistantTracker: a call block whose function renders the body (and, when HF tracks
    // assistant masks, records where it went; that does not change the text).
    StmtPtr parse_generation() {
        const Token& at = advance();  // 'generation'
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::CallBlock;
        s->line = at.line;
        s->column = at.column;
        s->body = parse_macro_body({"endgeneration"});
        return s;
    }

    Target parse_assign_target(std::initializer_list<std::string_view> extra_end_rules, bool with_namespace) {
        const Token& at = cur();
        ExprPtr e = parse_tuple(true, true, extra_end_rules, false, with_namespace);
        return to_target(*e, at);
    }

    Target to_target(const Expr& e, const Token& at) const {
        Target t;
        if (e.kind == ExprKind::Name) {
            t.name = e.name;
            return t;
        }
        if (e.kind == ExprKind::Tuple) {
            t.is_tuple = true;
            for (const auto& item : e.items) t.items.push_back(to_target(*item, at));
            return t;
        }
        fail_at(at, "can't assign to this expression");
    }

    // ---- expressions ----

    bool is_tuple_end(std::initializer_list<std::string_view> extra_end_rules) const {
        const Token& t = cur();
        if (t.type == TokenType::VariableEnd || t.type == TokenType::BlockEnd || is_op(t, ")")) return true;
        return at_end_token(extra_end_rules);
    }

    ExprPtr parse_tuple(bool simplified, bool with_condexpr,
                        std::initializer_list<std::string_view> extra_end_rules, bool explicit_parentheses,
                        bool with_namespace = false) {
        const Token& at = cur();
        std::vector<ExprPtr> args;
        bool is_tuple = false;
        while (true) {
            if (!args.empty()) expect_op(",");
            if (is_tuple_end(extra_end_rules)) break;
            args.push_back(simplified ? parse_primary(with_namespace) : parse_expression(with_condexpr));
            if (is_op(cur(), ",")) {
                is_tuple = true;
            } else {
                break;
            }
        }
        if (!is_tuple) {
            if (!args.empty()) return std::move(args[0]);
            if (!explicit_parentheses) fail_here("expected an expression");
        }
        ExprPtr e = make(ExprKind::Tuple, at);
        e->items = std::move(args);
        return e;
    }

    ExprPtr parse_expression(bool with_condexpr) {
        DepthGuard guard(*this);
        return with_condexpr ? parse_condexpr() : parse_or();
    }

    ExprPtr parse_condexpr() {
        ExprPtr expr1 = parse_or();
        while (is_name(cur(), "if")) {
            const Token& at = advance();
            ExprPtr e = make(ExprKind::CondExpr, at);
            e->arg = parse_or();  // test
            if (skip_name("else")) e->arg2 = parse_condexpr();
            e->node = std::move(expr1);
            expr1 = std::move(e);
        }
        return expr1;
    }

    ExprPtr parse_or() {
        ExprPtr left = parse_and();
        while (is_name(cur(), "or")) {
            const Token& at = advance();
            ExprPtr e = make(ExprKind::Or, at);
            e->node = std::move(left);
            e->arg = parse_and();
            left = std::move(e);
        }
        return left;
    }

    ExprPtr parse_and() {
        ExprPtr left = parse_not();
        while (is_name(cur(), "and")) {
            const Token& at = advance();
            ExprPtr e = make(ExprKind::And, at);
            e->node = std::move(left);
            e->arg = parse_not();
            left = std::move(e);
        }
        return left;
    }

    ExprPtr parse_not() {
        if (is_name(cur(), "not")) {
            DepthGuard guard(*this);
            const Token& at = advance();
            ExprPtr e = make(ExprKind::Not, at);
            e->node = parse_not();
            return e;
        }
        return parse_compare();
    }

    ExprPtr parse_compare() {
        const Token& at = cur();
        ExprPtr expr = parse_math1();
        ExprPtr e;
        while (true) {
            CompareOp op;
            const Token& t = cur();
            if (is_op(t, "==")) {
                op = CompareOp::Eq;
            } else if (is_op(t, "!=")) {
                op = CompareOp::Ne;
            } else if (is_op(t, "<")) {
                op = CompareOp::Lt;
            } else if (is_op(t, "<=")) {
                op = CompareOp::Le;
            } else if (is_op(t, ">")) {
                op = CompareOp::Gt;
            } else if (is_op(t, ">=")) {
                op = CompareOp::Ge;
            } else if (is_name(t, "in")) {
                op = CompareOp::In;
            } else if (is_name(t, "not") && is_name(look(), "in")) {
                advance();
                op = CompareOp::NotIn;
            } else {
                break;
            }
            advance();
            if (!e) {
                e = make(ExprKind::Compare, at);
                e->node = std::move(expr);
            }
            e->compare_ops.push_back(op);
            e->items.push_back(parse_math1());
        }
        return e ? std::move(e) : std::move(expr);
    }

    ExprPtr binary(ExprPtr left, BinaryOp op, ExprPtr right, const Token& at) const {
        ExprPtr e = make(ExprKind::Binary, at);
        e->op = op;
        e->node = std::move(left);
        e->arg = std::move(right);
        return e;
    }

    ExprPtr parse_math1() {
        ExprPtr left = parse_concat();
        while (is_op(cur(), "+") || is_op(cur(), "-")) {
            const Token& at = advance();
            const BinaryOp op = at.value == "+" ? BinaryOp::Add : BinaryOp::Sub;
            left = binary(std::move(left), op, parse_concat(), at);
        }
        return left;
    }

    ExprPtr parse_concat() {
        const Token& at = cur();
        ExprPtr first = parse_math2();
        if (!is_op(cur(), "~")) return first;
        ExprPtr e = make(ExprKind::Concat, at);
        e->items.push_back(std::move(first));
        while (skip_op("~")) e->items.push_back(parse_math2());
        return e;
    }

    ExprPtr parse_math2() {
        ExprPtr left = parse_pow();
        while (is_op(cur(), "*") || is_op(cur(), "/") || is_op(cur(), "//") || is_op(cur(), "%")) {
            const Token& at = advance();
            const BinaryOp op = at.value == "*"    ? BinaryOp::Mul
                                : at.value == "/"  ? BinaryOp::Div
                                : at.value == "//" ? BinaryOp::FloorDiv
                                                   : BinaryOp::Mod;
            left = binary(std::move(left), op, parse_pow(), at);
        }
        return left;
    }

    ExprPtr parse_pow() {
        ExprPtr left = parse_unary(true);
        while (is_op(cur(), "**")) {
            const Token& at = advance();
            left = binary(std::move(left), BinaryOp::Pow, parse_unary(true), at);
        }
        return left;
    }

    ExprPtr parse_unary(bool with_filter) {
        DepthGuard guard(*this);
        ExprPtr node;
        if (is_op(cur(), "-") || is_op(cur(), "+")) {
            const Token& at = advance();
            node = make(at.value == "-" ? ExprKind::Neg : ExprKind::Pos, at);
            node->node = parse_unary(false);
        } else {
            node = parse_primary(false);
        }
        node = parse_postfix(std::move(node));
        if (with_filter) node = parse_filter_expr(std::move(node));
        return node;
    }

    ExprPtr parse_primary(bool with_namespace) {
        DepthGuard guard(*this);
        const Token& t = cur();
        if (t.type == TokenType::Name) {
            advance();
            if (t.value == "true" || t.value == "false" || t.value == "True" || t.value == "False") {
                ExprPtr e = make(ExprKind::Const, t);
                e->constant = Value::boolean(t.value == "true" || t.value == "True");
                return e;
            }
            if (t.value == "none" || t.value == "None") {
                ExprPtr e = make(ExprKind::Const, t);
                e->constant = Value::none();
                return e;
            }
            if (with_namespace && is_op(cur(), ".")) unsupported(t, "namespace attribute assignment");
            // Jinja/HF globals the interpreter does not provide (only range and raise_exception are)
            static const char* const k_refused_globals[] = {"dict", "lipsum", "cycler", "joiner"};
            for (const char* g : k_refused_globals) {
                if (t.value == g) unsupported(t, t.value + "()");
            }
            ExprPtr e = make(ExprKind::Name, t);
            e->name = t.value;
            return e;
        }
        if (t.type == TokenType::String) {
            ExprPtr e = make(ExprKind::Const, t);
            std::string s;
            while (cur().type == TokenType::String) s += advance().value;
            e->constant = Value::string(std::move(s));
            return e;
        }
        if (t.type == TokenType::Integer || t.type == TokenType::Float) {
            advance();
            ExprPtr e = make(ExprKind::Const, t);
            e->constant =
                t.type == TokenType::Integer ? Value::integer(t.int_value) : Value::real(t.float_value);
            return e;
        }
        if (is_op(t, "(")) {
            advance();
            ExprPtr e = parse_tuple(false, true, {}, true);
            expect_op(")");
            return e;
        }
        if (is_op(t, "[")) {
            advance();
            ExprPtr e = make(ExprKind::List, t);
            while (!is_op(cur(), "]")) {
                if (!e->items.empty()) expect_op(",");
                if (is_op(cur(), "]")) break;
                e->items.push_back(parse_expression(true));
            }
            expect_op("]");
            return e;
        }
        if (is_op(t, "{")) {
            advance();
            ExprPtr e = make(ExprKind::Dict, t);
            while (!is_op(cur(), "}")) {
                if (!e->items.empty()) expect_op(",");
                if (is_op(cur(), "}")) break;
                e->items.push_back(parse_expression(true));
                expect_op(":");
                e->items.push_back(parse_expression(true));
            }
            expect_op("}");
            return e;
        }
        fail_here("unexpected token in expression");
    }

    ExprPtr parse_postfix(ExprPtr node) {
        while (true) {
            if (is_op(cur(), ".") || is_op(cur(), "[")) {
                node = parse_subscript(std::move(node));
            } else if (is_op(cur(), "(")) {
                node = parse_call(std::move(node));
            } else {
                return node;
            }
        }
    }

    ExprPtr parse_filter_expr(ExprPtr node) {
        while (true) {
            if (is_op(cur(), "|")) {
                node = parse_filter(std::move(node));
            } else if (is_name(cur(), "is")) {
                node = parse_test(std::move(node));
            } else if (is_op(cur(), "(")) {
                node = parse_call(std::move(node));
            } else {
                return node;
            }
        }
    }

    ExprPtr parse_subscript(ExprPtr node) {
        const Token& at = advance();  // '.' or '['
        if (at.value == ".") {
            const Token& attr = cur();
            if (attr.type == TokenType::Name) {
                advance();
                if (!attr.value.empty() && attr.value[0] == '_') {
                    unsupported(attr, "attribute " + attr.value);
                }
                ExprPtr e = make(ExprKind::Getattr, at);
                e->node = std::move(node);
                e->name = attr.value;
                return e;
            }
            if (attr.type != TokenType::Integer) fail_here("expected name or number");
            advance();
            ExprPtr e = make(ExprKind::Getitem, at);
            e->node = std::move(node);
            e->arg = make(ExprKind::Const, attr);
            e->arg->constant = Value::integer(attr.int_value);
            return e;
        }
        std::vector<ExprPtr> args;
        while (!is_op(cur(), "]")) {
            if (!args.empty()) expect_op(",");
            args.push_back(parse_subscribed());
        }
        expect_op("]");
        ExprPtr arg;
        if (args.size() == 1) {
            arg = std::move(args[0]);
        } else {
            arg = make(ExprKind::Tuple, at);
            arg->items = std::move(args);
        }
        if (arg->kind == ExprKind::Tuple) {
            for (const auto& item : arg->items) {
                if (item->kind == ExprKind::Slice) unsupported(at, "multi-dimensional slice");
            }
        }
        if (arg->kind == ExprKind::Slice) {
            // Slices bypass Jinja's sandboxed getitem, except when Jinja constant-folds them at compile
            // time; ChatTemplate::compile evaluates these and refuses the ones where that differs.
            bool constant = is_constant(*node);
            for (const auto& b : arg->items) constant = constant && (!b || is_constant(*b));
            arg->constant_operands = constant;
            arg->node = std::move(node);
            return arg;
        }
        ExprPtr e = make(ExprKind::Getitem, at);
        e->node = std::move(node);
        e->arg = std::move(arg);
        return e;
    }

    ExprPtr parse_subscribed() {
        const Token& at = cur();
        std::vector<ExprPtr> args;
        if (is_op(cur(), ":")) {
            advance();
            args.push_back(nullptr);
        } else {
            ExprPtr node = parse_expression(true);
            if (!is_op(cur(), ":")) return node;
            advance();
            args.push_back(std::move(node));
        }
        if (is_op(cur(), ":")) {
            args.push_back(nullptr);
        } else if (!is_op(cur(), "]") && !is_op(cur(), ",")) {
            args.push_back(parse_expression(true));
        } else {
            args.push_back(nullptr);
        }
        if (is_op(cur(), ":")) {
            advance();
            if (!is_op(cur(), "]") && !is_op(cur(), ",")) {
                args.push_back(parse_expression(true));
            } else {
                args.push_back(nullptr);
            }
        } else {
            args.push_back(nullptr);
        }
        ExprPtr e = make(ExprKind::Slice, at);
        e->items = std::move(args);
        return e;
    }

    void parse_call_args(std::vector<ExprPtr>* args, std::vector<Keyword>* kwargs) {
        const Token& at = cur();
        expect_op("(");
        bool require_comma = false;
        while (!is_op(cur(), ")")) {
            if (require_comma) {
                expect_op(",");
                if (is_op(cur(), ")")) break;  // trailing comma
            }
            if (is_op(cur(), "*") || is_op(cur(), "**"))
                unsupported(cur(), "argument unpacking (*args/**kwargs)");
            if (cur().type == TokenType::Name && is_op(look(), "=")) {
                std::string key = advance().value;
                advance();
                for (const Keyword& k : *kwargs) {
                    if (k.name == key) fail_at(at, "duplicate keyword argument '" + key + "'");
                }
                kwargs->push_back(Keyword{std::move(key), parse_expression(true)});
            } else {
                if (!kwargs->empty()) fail_at(at, "invalid syntax for function call expression");
                args->push_back(parse_expression(true));
            }
            require_comma = true;
        }
        expect_op(")");
    }

    ExprPtr parse_call(ExprPtr node) {
        const Token& at = cur();
        ExprPtr e = make(ExprKind::Call, at);
        parse_call_args(&e->items, &e->kwargs);
        if (node->kind == ExprKind::Name) {
            if (!is_supported_function(node->name)) pending_calls_.emplace_back(node->name, at);
            e->name = node->name;
            return e;
        }
        if (node->kind == ExprKind::Getattr) {
            if (node->node->kind == ExprKind::Name && node->node->name == "loop") {
                unsupported(at, "loop." + node->name + "()");
            }
            if (!is_supported_method(node->name)) unsupported(at, "." + node->name + "()");
            e->name = node->name;
            e->node = std::move(node->node);
            return e;
        }
        unsupported(at, "call of an expression that is not a supported function or method");
    }

    // Arguments of map/select/reject/selectattr/rejectattr that name a filter or a test must be
    // string literals naming supported ones.
    void check_named_callable_arg(const Expr& filter, const Token& at) {
        const std::string& f = filter.name;
        size_t index = 0;
        bool is_test = true;
        if (f == "map") {
            bool has_attribute = false;
            for (const Keyword& k : filter.kwargs) has_attribute |= k.name == "attribute";
            if (filter.items.empty() && has_attribute) return;
            is_test = false;
        } else if (f == "selectattr" || f == "rejectattr") {
            index = 1;
        } else if (f != "select" && f != "reject") {
            return;
        }
        if (filter.items.size() <= index) {
            if (f == "map") unsupported(at, "|map without a filter name or attribute=");
            if (index == 0 || !filter.items.empty()) return;  // select()/selectattr('a'): truthiness
            unsupported(at, "|" + f + " without an attribute name");
        }
        const Expr& name_arg = *filter.items[index];
        if (name_arg.kind != ExprKind::Const || !name_arg.constant.is_string()) {
            unsupported(at,
                        std::string(is_test ? "test" : "filter") + " name given by an expression in |" + f);
        }
        const std::string& name = name_arg.constant.str();
        if (is_test ? !is_supported_test(name) : !is_supported_filter(name)) {
            unsupported(at, (is_test ? "is " : "|") + name);
        }
        if (!is_test && (name == "map" || name == "select" || name == "reject" || name == "selectattr" ||
                         name == "rejectattr")) {
            unsupported(at, "|" + name + " applied through map");
        }
    }

    ExprPtr parse_filter(ExprPtr node) {
        while (is_op(cur(), "|")) {
            advance();
            const Token& name = cur();
            if (name.type != TokenType::Name) fail_here("expected a filter name");
            advance();
            if (is_op(cur(), ".")) unsupported(name, "dotted filter name |" + name.value + ".");
            if (!is_supported_filter(name.value)) unsupported(name, "|" + name.value);
            ExprPtr e = make(ExprKind::Filter, name);
            e->name = name.value;
            e->node = std::move(node);
            if (is_op(cur(), "(")) parse_call_args(&e->items, &e->kwargs);
            check_named_callable_arg(*e, name);
            node = std::move(e);
        }
        return node;
    }

    ExprPtr parse_test(ExprPtr node) {
        const Token& at = advance();  // 'is'
        const bool negated = skip_name("not");
        const Token& name = cur();
        if (name.type != TokenType::Name) fail_here("expected a test name");
        advance();
        if (is_op(cur(), ".")) unsupported(name, "dotted test name is " + name.value + ".");
        if (!is_supported_test(name.value)) unsupported(name, "is " + name.value);
        ExprPtr e = make(ExprKind::Test, at);
        e->name = name.value;
        e->node = std::move(node);
        const Token& t = cur();
        if (is_op(t, "(")) {
            parse_call_args(&e->items, &e->kwargs);
        } else if ((t.type == TokenType::Name || t.type == TokenType::String ||
                    t.type == TokenType::Integer || t.type == TokenType::Float || is_op(t, "[") ||
                    is_op(t, "{")) &&
                   !is_name(t, "else") && !is_name(t, "or") && !is_name(t, "and")) {
            if (is_name(t, "is")) fail_here("you cannot chain multiple tests with is");
            ExprPtr arg = parse_primary(false);
            e->items.push_back(parse_postfix(std::move(arg)));
        }
        if (!negated) return e;
        ExprPtr n = make(ExprKind::Not, at);
        n->node = std::move(e);
        return n;
    }

    // ---- static checks ----

    // True when Jinja's optimizer could fold the expression to a constant (no names, no calls).
    static bool is_constant(const Expr& e) {
        switch (e.kind) {
            case ExprKind::Name:
            case ExprKind::Call:
                return false;
            case ExprKind::Filter:
                if (e.name == "map" || e.name == "select" || e.name == "reject" || e.name == "selectattr" ||
                    e.name == "rejectattr") {
                    return false;  // pass_context filters are never folded
                }
                break;
            default:
                break;
        }
        for (const Expr* child : {e.node.get(), e.arg.get(), e.arg2.get()}) {
            if (child && !is_constant(*child)) return false;
        }
        for (const auto& item : e.items) {
            if (item && !is_constant(*item)) return false;
        }
        for (const auto& k : e.kwargs) {
            if (!is_constant(*k.value)) return false;
        }
        return true;
    }

    static bool mentions_name(const Expr& e, std::string_view name) {
        if (e.kind == ExprKind::Name && e.name == name) return true;
        for (const Expr* child : {e.node.get(), e.arg.get(), e.arg2.get()}) {
            if (child && mentions_name(*child, name)) return true;
        }
        for (const auto& item : e.items) {
            if (item && mentions_name(*item, name)) return true;
        }
        for (const auto& k : e.kwargs) {
            if (mentions_name(*k.value, name)) return true;
        }
        return false;
    }

    std::vector<Token> tokens_;
    size_t pos_ = 0;
    int depth_ = 0;
    int loop_depth_ = 0;
    std::set<std::string> macro_names_;
    std::vector<std::pair<std::string, Token>> pending_calls_;  // calls of names that are not builtins
};

// Jinja's idtracking (jinja2/idtracking.py), reduced to what decides a variable's value at the
// start of a scope. A name assigned in a scope is local to it; Jinja initialises such a local when
// the scope starts, from the enclosing scope or the context ("alias"/"resolve"), except when the
// scope's first mention of it is the assignment itself and no enclosing scope knows it: then it
// starts *undefined*, which nested loops running before the assignment observe. Loads and stores
// in the scope's own statements count in order; nested loop bodies are separate scopes analysed
// after their parent; names first assigned inside an if branch are aliased/resolved.
class ScopeAnalysis {
  public:
    enum class Rule { Param, Resolve, Alias, Undefined };

    struct Symbols {
        const Symbols* parent = nullptr;
        std::vector<std::pair<std::string, Rule>> refs;  // ordered map name -> rule
        std::vector<std::string> stores;

        Rule* find_own(const std::string& name) {
            for (auto& [n, r] : refs) {
                if (n == name) return &r;
            }
            return nullptr;
        }
        bool has_own(const std::string& name) const {
            for (const auto& [n, r] : refs) {
                if (n == name) return true;
            }
            return false;
        }
        bool find_ref(const std::string& name) const {
            return has_own(name) || (parent && parent->find_ref(name));
        }
        void define(const std::string& name, Rule rule) {
            if (Rule* r = find_own(name)) {
                *r = rule;
            } else {
                refs.emplace_back(name, rule);
            }
        }
        void add_store(const std::string& name) {
            if (std::find(stores.begin(), stores.end(), name) == stores.end()) stores.push_back(name);
        }
        void store(const std::string& name) {
            add_store(name);
            if (!has_own(name))
                define(name, parent && parent->find_ref(name) ? Rule::Alias : Rule::Undefined);
        }
        void declare_parameter(const std::string& name) {
            add_store(name);
            define(name, Rule::Param);
        }
        void load(const std::string& name) {
            if (!find_ref(name)) define(name, Rule::Resolve);
        }
        void branch_update(const std::vector<Symbols>& branches) {
            std::vector<std::string> new_stores;
            for (const Symbols& b : branches) {
                for (const std::string& n : b.stores) {
                    if (std::find(stores.begin(), stores.end(), n) == stores.end() &&
                        std::find(new_stores.begin(), new_stores.end(), n) == new_stores.end()) {
                        new_stores.push_back(n);
                    }
                }
            }
            for (const Symbols& b : branches) {
                for (const auto& [n, r] : b.refs) define(n, r);
                for (const std::string& n : b.stores) add_store(n);
            }
            for (const std::string& n : new_stores)
                define(n, parent && parent->find_ref(n) ? Rule::Alias : Rule::Resolve);
        }
    };

    static void analyze(TemplateAst& ast) {
        Symbols root;
        for (const StmtPtr& s : ast.body) visit_stmt(*s, root);
        ast.root_undefined = undefined_names(root);
        analyze_children(ast.body, root);
    }

  private:
    static std::vector<std::string> undefined_names(const Symbols& sym) {
        std::vector<std::string> out;
        for (const auto& [n, r] : sym.refs) {
            if (r == Rule::Undefined) out.push_back(n);
        }
        return out;
    }

    static void declare_target(const Target& t, Symbols& sym) {
        if (t.is_tuple) {
            for (const Target& x : t.items) declare_target(x, sym);
        } else {
            sym.declare_parameter(t.name);
        }
    }
    static void store_target(const Target& t, Symbols& sym) {
        if (t.is_tuple) {
            for (const Target& x : t.items) store_target(x, sym);
        } else {
            sym.store(t.name);
        }
    }

    static void visit_expr(const Expr& e, Symbols& sym) {
        // a call of a name (a macro, caller, a global) loads the name
        if (e.kind == ExprKind::Name || (e.kind == ExprKind::Call && !e.node)) sym.load(e.name);
        for (const Expr* child : {e.node.get(), e.arg.get(), e.arg2.get()}) {
            if (child) visit_expr(*child, sym);
        }
        for (const ExprPtr& item : e.items) {
            if (item) visit_expr(*item, sym);
        }
        for (const Keyword& k : e.kwargs) visit_expr(*k.value, sym);
    }

    // Jinja's If node: test, body, elif_ (a list of If nodes), else_.
    static void visit_if(const std::vector<IfBranch>& branches, size_t first, Symbols& sym) {
        visit_expr(*branches[first].test, sym);
        std::vector<Symbols> copies(3, sym);
        for (const StmtPtr& s : branches[first].body) visit_stmt(*s, copies[0]);
        for (size_t k = first + 1; k < branches.size() && branches[k].test; ++k) {
            // each elif is an If node with empty elif_ and else_, visited in the elif_ copy
            Symbols& elif = copies[1];
            visit_expr(*branches[k].test, elif);
            std::vector<Symbols> inner(3, elif);
            for (const StmtPtr& s : branches[k].body) visit_stmt(*s, inner[0]);
            elif.branch_update(inner);
        }
        if (!branches.back().test) {
            for (const StmtPtr& s : branches.back().body) visit_stmt(*s, copies[2]);
        }
        sym.branch_update(copies);
    }

    static void visit_stmt(const Stmt& s, Symbols& sym) {
        switch (s.kind) {
            case StmtKind::Output:
                visit_expr(*s.expr, sym);
                break;
            case StmtKind::Set:
                visit_expr(*s.expr, sym);
                store_target(s.target, sym);
                break;
            case StmtKind::If:
                visit_if(s.branches, 0, sym);
                break;
            case StmtKind::For:
                visit_expr(*s.expr, sym);  // the body, else and filter are scopes of their own
                break;
            case StmtKind::Macro:
                sym.store(s.name);  // parameters, defaults and body are the macro's scope
                break;
            case StmtKind::CallBlock:
                if (s.expr) visit_expr(*s.expr, sym);
                break;
            case StmtKind::SetBlock:
                store_target(s.target, sym);  // the body (and its filters) are a scope of their own
                break;
            case StmtKind::NamespaceSet:
                visit_expr(*s.expr, sym);
                sym.load(s.target.name);
                break;
            case StmtKind::Text:
            case StmtKind::Break:
            case StmtKind::Continue:
                break;
        }
    }

    // Jinja's find_undeclared(body, {name}): does any statement below load `name`?
    static bool body_loads(const Body& body, const std::string& name) {
        auto expr_loads = [&](const Expr* e, auto&& self) -> bool {
            if (!e) return false;
            if ((e->kind == ExprKind::Name || (e->kind == ExprKind::Call && !e->node)) && e->name == name) return true;
            for (const Expr* child : {e->node.get(), e->arg.get(), e->arg2.get()}) {
                if (self(child, self)) return true;
            }
            for (const ExprPtr& item : e->items) {
                if (self(item.get(), self)) return true;
            }
            for (const Keyword& k : e->kwargs) {
                if (self(k.value.get(), self)) return true;
            }
            return false;
        };
        for (const StmtPtr& s : body) {
            if (expr_loads(s->expr.get(), expr_loads) || expr_loads(s->filter.get(), expr_loads)) return true;
            if (s->kind == StmtKind::NamespaceSet && s->target.name == name) return true;
            for (const ExprPtr& d : s->defaults) {
                if (expr_loads(d.get(), expr_loads)) return true;
            }
            for (const IfBranch& b : s->branches) {
                if (expr_loads(b.test.get(), expr_loads) || body_loads(b.body, name)) return true;
            }
            if (body_loads(s->body, name) || body_loads(s->else_body, name)) return true;
        }
        return false;
    }

    // A macro or call-block body: Jinja's macro_body() frame.
    static void analyze_macro(Stmt& m, const Symbols& parent) {
        Symbols sym;
        sym.parent = &parent;
        for (const std::string& p : m.params) sym.declare_parameter(p);
        for (const ExprPtr& d : m.defaults) visit_expr(*d, sym);
        m.catch_caller = body_loads(m.body, "caller");
        m.catch_varargs = body_loads(m.body, "varargs");
        m.catch_kwargs = body_loads(m.body, "kwargs");
        if (m.catch_caller) sym.declare_parameter("caller");
        if (m.catch_varargs) sym.declare_parameter("varargs");
        if (m.catch_kwargs) sym.declare_parameter("kwargs");
        for (const StmtPtr& c : m.body) visit_stmt(*c, sym);
        m.body_undefined = undefined_names(sym);
        analyze_children(m.body, sym);
    }

    // Scopes of the loops, macros and block sets in `body` (also inside if branches), once the
    // enclosing scope is complete.
    static void analyze_children(const Body& body, const Symbols& parent) {
        for (const StmtPtr& s : body) {
            if (s->kind == StmtKind::Macro || s->kind == StmtKind::CallBlock) {
                analyze_macro(const_cast<Stmt&>(*s), parent);
            } else if (s->kind == StmtKind::SetBlock) {
                Stmt& block = const_cast<Stmt&>(*s);
                Symbols sym;
                sym.parent = &parent;
                for (const StmtPtr& c : block.body) visit_stmt(*c, sym);
                block.body_undefined = undefined_names(sym);
                analyze_children(block.body, sym);
            } else if (s->kind == StmtKind::If) {
                for (const IfBranch& b : s->branches) analyze_children(b.body, parent);
            } else if (s->kind == StmtKind::For) {
                Stmt& loop = const_cast<Stmt&>(*s);
                Symbols body_sym;
                body_sym.parent = &parent;
                body_sym.declare_parameter("loop");
                declare_target(loop.target, body_sym);
                for (const StmtPtr& c : loop.body) visit_stmt(*c, body_sym);
                loop.body_undefined = undefined_names(body_sym);
                analyze_children(loop.body, body_sym);
                Symbols else_sym;
                else_sym.parent = &parent;
                for (const StmtPtr& c : loop.else_body) visit_stmt(*c, else_sym);
                loop.else_undefined = undefined_names(else_sym);
                analyze_children(loop.else_body, else_sym);
            }
        }
    }
};

}  // namespace

TemplateAst parse_template(std::string_view source) {
    TemplateAst ast = Parser(tokenize(source)).parse();
    ScopeAnalysis::analyze(ast);
    return ast;
}

}  // namespace phi::chat::jinja
