// Malformed tokenizer.json / tokenizer_config.json (they come from users): a clear phi::Error, never a crash.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "common/error.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "tests/coordinator/tokenizer/tokenizer_fixtures.h"

namespace phi::tokenizer {
namespace {

using nlohmann::json;

// A small valid byte-level BPE tokenizer.json to mutate.
json tiny_tokenizer() {
    json vocab = json::object();
    // the 256 GPT-2 byte characters plus a few merges
    const std::string direct =
        "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
    int id = 0;
    for (const char c : direct) vocab[std::string(1, c)] = id++;
    vocab["\xc4\xa0"] = id++;  // Ġ (space)
    vocab["he"] = id++;
    vocab["ll"] = id++;
    vocab["hell"] = id++;
    return json{
        {"version", "1.0"},
        {"added_tokens", json::array({{{"id", id},
                                       {"content", "<|end|>"},
                                       {"special", true},
                                       {"normalized", false},
                                       {"lstrip", false},
                                       {"rstrip", false},
                                       {"single_word", false}}})},
        {"normalizer", nullptr},
        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
        {"post_processor", nullptr},
        {"decoder", {{"type", "ByteLevel"}}},
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"h e", "l l", "he ll"})}}}};
}

std::string error_of(const std::string& tj, const std::string& tc = {}, const std::string& mc = {}) {
    try {
        Tokenizer::from_json(tj, tc, mc);
    } catch (const phi::Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("WRONG EXCEPTION TYPE: ") + e.what();
    }
    return "NO ERROR";
}

#define EXPECT_ERROR_MENTIONS(msg, needle) \
    EXPECT_NE(std::string(msg).find(needle), std::string::npos) << "message: " << (msg)

TEST(TokenizerErrors, TinyTokenizerWorks) {
    const Tokenizer tok = Tokenizer::from_json(tiny_tokenizer().dump());
    EXPECT_EQ(tok.encode("hello<|end|>", false).size(), 3u);  // hell, o, <|end|>
    EXPECT_EQ(tok.decode(tok.encode("hello<|end|>"), true), "hello");
}

TEST(TokenizerErrors, TruncatedJson) {
    const std::string full = tiny_tokenizer().dump();
    for (const std::size_t cut :
         {std::size_t{0}, std::size_t{1}, full.size() / 3, full.size() / 2, full.size() - 1}) {
        const std::string msg = error_of(full.substr(0, cut));
        EXPECT_ERROR_MENTIONS(msg, "tokenizer.json is not valid JSON");
    }
    EXPECT_ERROR_MENTIONS(error_of(tiny_tokenizer().dump(), "{\"bos_token\": "),
                          "tokenizer_config.json is not valid JSON");
    EXPECT_ERROR_MENTIONS(error_of(tiny_tokenizer().dump(), "", "{"), "config.json is not valid JSON");
}

TEST(TokenizerErrors, WrongTypes) {
    EXPECT_ERROR_MENTIONS(error_of("[1,2,3]"), "tokenizer.json must be a JSON object");
    EXPECT_ERROR_MENTIONS(error_of("{}"), "has no \"model\"");
    json t = tiny_tokenizer();
    t["model"]["vocab"] = json::array({"a", "b"});
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "model.vocab must be an object");
    t = tiny_tokenizer();
    t["model"]["vocab"]["he"] = "seven";
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "must be an integer id");
    t = tiny_tokenizer();
    t["model"]["merges"] = json::array({42});
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "merges[0] must be");
    t = tiny_tokenizer();
    t["model"]["merges"] = json::array({"h e l"});
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "two tokens separated by one space");
    t = tiny_tokenizer();
    t["added_tokens"] = json::object();
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "added_tokens must be a list");
    t = tiny_tokenizer();
    t["added_tokens"][0]["content"] = 5;
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "added_tokens[0].content must be a string");
    t = tiny_tokenizer();
    t["added_tokens"][0]["special"] = "yes";
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "special must be true or false");
    t = tiny_tokenizer();
    t["pre_tokenizer"]["use_regex"] = 1;
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "use_regex must be true or false");
    t = tiny_tokenizer();
    t["decoder"] = "ByteLevel";
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "decoder must be a JSON object");
    EXPECT_ERROR_MENTIONS(error_of(tiny_tokenizer().dump(), "[]"),
                          "tokenizer_config.json must be a JSON object");
    EXPECT_ERROR_MENTIONS(error_of(tiny_tokenizer().dump(), R"({"added_tokens_decoder": {"x": {}}})"),
                          "the key must be a token id");
    EXPECT_ERROR_MENTIONS(error_of(tiny_tokenizer().dump(), R"({"bos_token": 3})"),
                          "bos_token must be a string");
    EXPECT_ERROR_MENTIONS(error_of(tiny_tokenizer().dump(), R"({"tokenizer_class": 3})"),
                          "tokenizer_class must be a string");
    EXPECT_ERROR_MENTIONS(error_of(tiny_tokenizer().dump(), R"({"chat_template": 3})"),
                          "chat_template must be a string");
}

TEST(TokenizerErrors, UnknownComponentTypes) {
    json t = tiny_tokenizer();
    t["model"]["type"] = "Unigram";
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "\"Unigram\" is not supported");
    t = tiny_tokenizer();
    t["model"]["type"] = "WordPiece";
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "\"WordPiece\" is not supported");
    t = tiny_tokenizer();
    t["normalizer"] = {{"type", "NFC"}};
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "normalizer type \"NFC\" is not supported");
    t = tiny_tokenizer();
    t["pre_tokenizer"] = {{"type", "Whitespace"}};
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "pre-tokenizer type \"Whitespace\" is not supported");
    t = tiny_tokenizer();
    t["decoder"] = {{"type", "WordPiece"}};
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "decoder type \"WordPiece\" is not supported");
    t = tiny_tokenizer();
    t["post_processor"] = {{"type", "Fancy"}};
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "post-processor type \"Fancy\" is not supported");
    t = tiny_tokenizer();
    t["pre_tokenizer"] = {{"type", "Split"},
                          {"pattern", {{"Regex", "(unclosed"}}},
                          {"behavior", "Isolated"},
                          {"invert", false}};
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "cannot compile the tokenizer regex '(unclosed'");
    t["pre_tokenizer"]["pattern"] = {{"Regex", "a"}};
    t["pre_tokenizer"]["behavior"] = "Sideways";
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "behavior \"Sideways\"");
}

TEST(TokenizerErrors, MergesReferringToUnknownTokens) {
    json t = tiny_tokenizer();
    t["model"]["merges"].push_back("x q");  // 'q' has no... 'x' and 'q' exist, "xq" does not
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "produces 'xq', which is not in the vocabulary");
    t = tiny_tokenizer();
    t["model"]["merges"].push_back("\xe2\x82\xac a");
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "refers to '\xe2\x82\xac', which is not in the vocabulary");
    t = tiny_tokenizer();
    t["model"]["merges"] = json::array({json::array({"he", "zz"})});
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "refers to 'zz'");
    t = tiny_tokenizer();
    t["model"]["unk_token"] = "<unk>";
    EXPECT_ERROR_MENTIONS(error_of(t.dump()), "unk_token '<unk>' is not in the vocabulary");
}

TEST(TokenizerErrors, MissingFilesAndBadGzip) {
    const auto dir = std::filesystem::temp_directory_path() / "phi_tokenizer_errors";
    std::filesystem::remove_all(dir);
    try {
        Tokenizer::load(dir);
        ADD_FAILURE() << "no error";
    } catch (const phi::Error& e) {
        EXPECT_ERROR_MENTIONS(e.what(), "does not exist");
    }
    std::filesystem::create_directories(dir);
    try {
        Tokenizer::load(dir);
        ADD_FAILURE() << "no error";
    } catch (const phi::Error& e) {
        EXPECT_ERROR_MENTIONS(e.what(), "has no tokenizer.json");
    }
    { std::ofstream(dir / "tokenizer.json.gz", std::ios::binary) << "\x1f\x8b\x08\x00garbage"; }
    try {
        Tokenizer::load(dir);
        ADD_FAILURE() << "no error";
    } catch (const phi::Error& e) {
        EXPECT_ERROR_MENTIONS(e.what(), "gzip");
    }
    std::filesystem::remove_all(dir);
}

TEST(TokenizerErrors, RandomCorruptionNeverCrashes) {
    // Flip, drop and duplicate bytes of a valid file: loading either works or throws phi::Error.
    const std::string full = tiny_tokenizer().dump();
    std::mt19937 rng(7);
    for (int trial = 0; trial < 400; ++trial) {
        std::string s = full;
        const int edits = 1 + static_cast<int>(rng() % 4);
        for (int k = 0; k < edits && !s.empty(); ++k) {
            const std::size_t pos = rng() % s.size();
            switch (rng() % 3) {
                case 0:
                    s[pos] = static_cast<char>(rng() % 256);
                    break;
                case 1:
                    s.erase(pos, 1 + rng() % 8);
                    break;
                default:
                    s.insert(pos, s.substr(pos, 1 + rng() % 8));
                    break;
            }
        }
        try {
            const Tokenizer tok = Tokenizer::from_json(s);
            (void)tok.encode("hello world <|end|> \xff");
            (void)tok.decode(std::vector<int32_t>{0, 1, 2, 99999, -5}, false);
        } catch (const phi::Error&) {
        }
    }
}

}  // namespace
}  // namespace phi::tokenizer
