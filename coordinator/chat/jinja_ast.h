// Syntax tree of a chat template: the subset of Jinja nodes the interpreter supports. The parser
// (jinja_parser.cpp) builds it and refuses everything else, so the evaluator never meets a node it
// cannot evaluate exactly.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/chat/jinja_value.h"

namespace phi::chat::jinja {

enum class ExprKind {
    Const,     ///< constant
    Name,      ///< name
    Tuple,     ///< items
    List,      ///< items
    Dict,      ///< items: key0, value0, key1, value1, ...
    Getattr,   ///< node.name
    Getitem,   ///< node[arg]
    Slice,     ///< node[items[0]:items[1]:items[2]] (null items are omitted bounds)
    Call,      ///< name(items, kwargs) when node is null; node.name(items, kwargs) for methods
    Filter,    ///< node | name(items, kwargs)
    Test,      ///< node is name(items, kwargs)
    Not,       ///< not node
    Neg,       ///< -node
    Pos,       ///< +node
    Binary,    ///< node op arg
    Concat,    ///< items joined with ~
    Compare,   ///< node compare_ops[k] items[k] ...
    And,       ///< node and arg
    Or,        ///< node or arg
    CondExpr,  ///< node if arg else arg2 (arg2 may be null)
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Keyword {
    std::string name;
    ExprPtr value;
};

struct Expr {
    ExprKind kind = ExprKind::Const;
    int line = 0;
    int column = 0;
    Value constant;
    std::string name;
    ExprPtr node;
    ExprPtr arg;
    ExprPtr arg2;
    std::vector<ExprPtr> items;
    std::vector<Keyword> kwargs;
    BinaryOp op = BinaryOp::Add;
    std::vector<CompareOp> compare_ops;
    bool constant_operands = false;  ///< Slice: object and bounds are constants Jinja may fold
};

/// Assignment target of `set` and `for`: a name or a (nested) tuple of names.
struct Target {
    std::string name;
    std::vector<Target> items;
    bool is_tuple = false;
};

enum class StmtKind {
    Text,
    Output,
    If,
    For,
    Set,
    Break,
    Continue,
    Macro,         ///< {% macro name(params) %}body{% endmacro %}
    CallBlock,     ///< {% call(params) expr(...) %}body{% endcall %}; expr null: {% generation %}
    SetBlock,      ///< {% set target | filters %}body{% endset %}
    NamespaceSet,  ///< {% set target.name = expr %}
};

/// Name under which a block set's captured text is visible to its filter chain (not an identifier,
/// so no template can mention it).
inline constexpr const char* k_block_capture = " captured";

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct IfBranch {
    ExprPtr test;  ///< null for the else branch
    Body body;
};

struct Stmt {
    StmtKind kind = StmtKind::Text;
    int line = 0;
    int column = 0;
    std::string text;                ///< Text
    ExprPtr expr;  ///< Output/Set/NamespaceSet value, For iterable, CallBlock call, SetBlock filters
    std::vector<IfBranch> branches;  ///< If
    Target target;                   ///< Set, For
    ExprPtr filter;                  ///< For: `for x in xs if filter`
    Body body;                       ///< For, Macro, CallBlock, SetBlock
    Body else_body;                  ///< For
    /// For, Macro, CallBlock, SetBlock: names the body / else scope starts with as undefined (see
    /// ScopeAnalysis).
    std::vector<std::string> body_undefined, else_undefined;
    std::string name;                 ///< Macro: its name; NamespaceSet: the attribute
    std::vector<std::string> params;  ///< Macro, CallBlock
    std::vector<ExprPtr> defaults;    ///< Macro, CallBlock: defaults of the last params
    /// Macro, CallBlock: the body mentions caller / varargs / kwargs, so the macro accepts them.
    bool catch_caller = false, catch_varargs = false, catch_kwargs = false;
};

struct TemplateAst {
    Body body;
    std::vector<std::string> root_undefined;  ///< names the template scope starts with as undefined
};

/// Parses a template. Throws phi::Error naming the line and column of syntax errors and of
/// constructs outside the supported subset ("chat template uses unsupported Jinja construct ...").
TemplateAst parse_template(std::string_view source);

}  // namespace phi::chat::jinja
