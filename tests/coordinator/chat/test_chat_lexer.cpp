// Lexer unit tests: whitespace control (`-`, `+`), trim_blocks and lstrip_blocks as HF configures
// Jinja, newline normalisation, literals and positions. Expected texts were checked against
// jinja2 3.1.6 with trim_blocks=True, lstrip_blocks=True.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/error.h"
#include "coordinator/chat/jinja_lexer.h"

namespace {

using phi::chat::jinja::Token;
using phi::chat::jinja::tokenize;
using phi::chat::jinja::TokenType;

// The template text that survives lexing, with tags shown as | (so positions stay visible).
std::string texts(const std::string& src) {
    std::string out;
    for (const Token& t : tokenize(src)) {
        if (t.type == TokenType::Data) out += t.value;
        if (t.type == TokenType::BlockBegin || t.type == TokenType::VariableBegin) out += "|";
    }
    return out;
}

TEST(ChatLexer, TrimBlocksDropsOneNewlineAfterBlockTags) {
    EXPECT_EQ(texts("{% if x %}\nA\n{% endif %}\nB"), "|A\n|B");
    EXPECT_EQ(texts("{% if x %}\n\nA"), "|\nA");
    // not after variable tags
    EXPECT_EQ(texts("{{ x }}\nA"), "|\nA");
    // comments are trimmed too
    EXPECT_EQ(texts("{# c #}\nA"), "A");
    // `+%}` keeps the newline
    EXPECT_EQ(texts("{% if x +%}\nA"), "|\nA");
}

TEST(ChatLexer, LstripBlocksStripsIndentationBeforeBlockTags) {
    EXPECT_EQ(texts("A\n    {% if x %}B"), "A\n|B");
    EXPECT_EQ(texts("  \t{% if x %}B"), "|B");         // at the start of the template
    EXPECT_EQ(texts("A  {% if x %}B"), "A  |B");       // not at a line start
    EXPECT_EQ(texts("A\n  {{ x }}"), "A\n  |");        // not before variable tags
    EXPECT_EQ(texts("A\n  {# c #}B"), "A\nB");         // comments are stripped too
    EXPECT_EQ(texts("A\n  {%+ if x %}B"), "A\n  |B");  // `{%+` disables it
    // after a trimmed newline, the next line's indentation is still at a line start
    EXPECT_EQ(texts("{% if x %}\n  {% if y %}C"), "||C");
    // any Unicode whitespace counts (Python's \s), U+2028 is not a line break for Jinja
    EXPECT_EQ(texts("A\n\xc2\xa0\xe3\x80\x80{% if x %}B"), "A\n|B");
    EXPECT_EQ(texts("A\xe2\x80\xa8 {% if x %}B"), "A\xe2\x80\xa8 |B");
}

TEST(ChatLexer, MinusStripsAllWhitespaceOnItsSide) {
    EXPECT_EQ(texts("A \n\t {%- if x -%} \n\n B"), "A|B");
    EXPECT_EQ(texts("A \n {{- x -}} \n B"), "A|B");
    EXPECT_EQ(texts("A \n {#- c -#} \n B"), "AB");
    EXPECT_EQ(texts("A {{ x -}}\n  {% if y %}B"), "A ||B");
    // only the side with the minus
    EXPECT_EQ(texts("A \n{%- if x %} \nB"), "A| \nB");
}

TEST(ChatLexer, NewlinesAreNormalisedAndOneTrailingNewlineDropped) {
    EXPECT_EQ(texts("A\r\nB\rC\n"), "A\nB\nC");
    EXPECT_EQ(texts("A\n\n"), "A\n");
    EXPECT_EQ(texts("{% if x %}\r\nA"), "|A");
}

TEST(ChatLexer, LiteralsAndOperators) {
    const std::vector<Token> t = tokenize("{{ 0x1F + 1_000 // 2.5e1 ~ 'a\\n\\x41\\u00e9' \"q\" == none }}");
    ASSERT_GE(t.size(), 10u);
    EXPECT_EQ(t[1].type, TokenType::Integer);
    EXPECT_EQ(t[1].int_value, 31);
    EXPECT_EQ(t[3].int_value, 1000);
    EXPECT_EQ(t[4].value, "//");
    EXPECT_EQ(t[5].type, TokenType::Float);
    EXPECT_DOUBLE_EQ(t[5].float_value, 25.0);
    EXPECT_EQ(t[7].type, TokenType::String);
    EXPECT_EQ(t[7].value, "a\nA\xc3\xa9");
    EXPECT_EQ(t[8].value, "q");
    EXPECT_EQ(t[9].value, "==");
    EXPECT_EQ(t[10].type, TokenType::Name);
}

TEST(ChatLexer, BracesInsideTagsDoNotEndThem) {
    const std::vector<Token> t = tokenize("{{ {'a': {'b': 1}}}}X");
    ASSERT_EQ(t.back().type, TokenType::Eof);
    EXPECT_EQ(t[t.size() - 2].value, "X");
}

TEST(ChatLexer, PositionsAreLineAndColumn) {
    const std::vector<Token> t = tokenize("ab\n  é{{ x }}");
    ASSERT_GE(t.size(), 3u);
    EXPECT_EQ(t[1].type, TokenType::VariableBegin);
    EXPECT_EQ(t[1].line, 2);
    EXPECT_EQ(t[1].column, 4);
}

TEST(ChatLexer, RefusesRawAndReportsErrors) {
    EXPECT_THROW(tokenize("{% raw %}x{% endraw %}"), phi::Error);
    EXPECT_THROW(tokenize("{# never closed"), phi::Error);
    EXPECT_THROW(tokenize("{{ 'never closed }}"), phi::Error);
    EXPECT_THROW(tokenize("{{ x )}}"), phi::Error);
    EXPECT_THROW(tokenize("{{ x"), phi::Error);
    EXPECT_THROW(tokenize("bad utf-8 \xff"), phi::Error);
}

}  // namespace
