// Chat templates against HF transformers: every expectation in tests/fixtures/chat/expectations.json
// (written by scripts/make_chat_expectations.py with the pinned transformers/jinja2) must render
// byte-identically, fail where HF fails (with the same message for raise_exception), or be refused
// at compile time naming the construct. Plus the resource limits a hostile template runs into.
#include <gtest/gtest.h>

#include <cstdlib>
#include <ctime>
#include <set>
#include <fstream>
#include <sstream>
#include <string>

#include "coordinator/chat/chat_template.h"

namespace {

using phi::chat::ChatTemplate;
using phi::chat::TemplateException;
using Json = nlohmann::ordered_json;

const Json& expectations() {
    static const Json data = [] {
        // PHI_CHAT_EXPECTATIONS: a larger, uncommitted sweep from make_chat_expectations.py --seed/--count
        const char* override_path = std::getenv("PHI_CHAT_EXPECTATIONS");
        const char* root = std::getenv("PHI_SOURCE_DIR");
        const std::string path =
            override_path ? std::string(override_path)
                          : std::string(root ? root : ".") + "/tests/fixtures/chat/expectations.json";
        std::ifstream in(path);
        if (!in) throw std::runtime_error("cannot open " + path + " (is PHI_SOURCE_DIR set?)");
        std::stringstream ss;
        ss << in.rdbuf();
        return Json::parse(ss.str());
    }();
    return data;
}

std::string excerpt(const std::string& s) {
    return s.size() > 400 ? s.substr(0, 400) + "..." : s;
}

TEST(ChatTemplate, PhiTemplatesMatchHfApplyChatTemplate) {
    const Json& cases = expectations().at("phi_templates");
    ASSERT_GE(cases.size(), 100u);
    int passed = 0;
    for (const Json& c : cases) {
        const std::string name = c.at("name").get<std::string>();
        try {
            const ChatTemplate t = ChatTemplate::compile(c.at("template").get<std::string>());
            const Json ctx =
                ChatTemplate::hf_context(c.at("messages"), c.at("add_generation_prompt").get<bool>(),
                                         c.at("tools"), c.at("special_tokens"));
            const std::string got = t.render(ctx);
            EXPECT_EQ(got, c.at("expected").get<std::string>()) << name;
            passed += got == c.at("expected").get<std::string>();
        } catch (const std::exception& e) {
            ADD_FAILURE() << name << ": " << e.what();
        }
    }
    EXPECT_EQ(passed, static_cast<int>(cases.size()));
}

TEST(ChatTemplate, TemplatesRenderLikeHfSandboxedJinja) {
    const Json& data = expectations();
    const Json& contexts = data.at("contexts");
    const Json& cases = data.at("rendered");
    size_t random_templates = 0;
    size_t compared = 0;
    size_t errors = 0;
    size_t raises = 0;
    for (const Json& c : cases) {
        const std::string id = c.at("id").get<std::string>();
        const std::string source = c.at("template").get<std::string>();
        random_templates += id.rfind("random-", 0) == 0;
        std::optional<ChatTemplate> t;
        try {
            t = ChatTemplate::compile(source);
        } catch (const std::exception& e) {
            ADD_FAILURE() << id << " was refused but is inside the supported subset: " << e.what() << "\n"
                          << excerpt(source);
            continue;
        }
        for (const Json& r : c.at("results")) {
            const Json& ctx = contexts.at(r.at("context").get<size_t>());
            const std::string where = id + " on context " + std::to_string(r.at("context").get<int>());
            ++compared;
            if (r.contains("expected")) {
                try {
                    const std::string got = t->render(ctx);
                    EXPECT_EQ(got, r.at("expected").get<std::string>()) << where << "\n" << excerpt(source);
                } catch (const std::exception& e) {
                    ADD_FAILURE() << where << ": HF renders it but we threw: " << e.what() << "\n"
                                  << excerpt(source);
                }
            } else if (r.contains("raises")) {
                ++raises;
                try {
                    const std::string got = t->render(ctx);
                    ADD_FAILURE() << where << ": expected raise_exception(" << r.at("raises")
                                  << "), rendered " << excerpt(got);
                } catch (const TemplateException& e) {
                    EXPECT_EQ(e.message(), r.at("raises").get<std::string>()) << where;
                } catch (const std::exception& e) {
                    ADD_FAILURE() << where << ": expected raise_exception(" << r.at("raises") << "), got "
                                  << e.what();
                }
            } else {
                ++errors;
                try {
                    const std::string got = t->render(ctx);
                    ADD_FAILURE() << where << ": HF raises " << r.at("error") << " (" << r.at("message")
                                  << ") but we rendered " << excerpt(got) << "\n"
                                  << excerpt(source);
                } catch (const TemplateException& e) {
                    ADD_FAILURE() << where << ": HF raises " << r.at("error")
                                  << ", we raised the template's own " << e.what();
                } catch (const phi::Error&) {
                }
            }
        }
    }
    EXPECT_GE(random_templates, 200u);
    RecordProperty("templates", static_cast<int>(cases.size()));
    RecordProperty("compared", static_cast<int>(compared));
    std::printf(
        "compared %zu renders of %zu templates (%zu random); %zu expected errors, %zu raise_exception\n",
        compared, cases.size(), random_templates, errors, raises);
}

// macro/caller, namespace(), block set, strftime_now() (clock frozen on both sides), |safe,
// str.format() and {% generation %}: every template on every context, against HF.
TEST(ChatTemplate, FineTuneConstructsRenderLikeHfSandboxedJinja) {
    const Json& data = expectations();
    const Json& contexts = data.at("contexts");
    const Json& now = data.at("frozen_now");
    phi::chat::RenderOptions options;
    std::tm tm{};
    tm.tm_year = now.at(0).get<int>() - 1900;
    tm.tm_mon = now.at(1).get<int>() - 1;
    tm.tm_mday = now.at(2).get<int>();
    tm.tm_hour = now.at(3).get<int>();
    tm.tm_min = now.at(4).get<int>();
    tm.tm_sec = now.at(5).get<int>();
    options.now = tm;
    size_t compared = 0, rendered = 0, errors = 0, raises = 0;
    std::set<std::string> constructs_seen;
    for (const Json& c : data.at("constructs")) {
        const std::string id = c.at("id").get<std::string>();
        const std::string source = c.at("template").get<std::string>();
        for (const char* construct : {"macro", "call", "namespace(", "endset", "strftime_now", "|safe",
                                      ".format(", "generation"}) {
            if (source.find(construct) != std::string::npos) constructs_seen.insert(construct);
        }
        std::optional<ChatTemplate> t;
        try {
            t = ChatTemplate::compile(source);
        } catch (const std::exception& e) {
            ADD_FAILURE() << id << " was refused: " << e.what() << "\n" << excerpt(source);
            continue;
        }
        for (const Json& r : c.at("results")) {
            const Json& ctx = contexts.at(r.at("context").get<size_t>());
            const std::string where = id + " on context " + std::to_string(r.at("context").get<int>());
            ++compared;
            try {
                const std::string got = t->render(ctx, options);
                if (r.contains("expected")) {
                    ++rendered;
                    EXPECT_EQ(got, r.at("expected").get<std::string>()) << where << "\n" << excerpt(source);
                } else {
                    ADD_FAILURE() << where << ": HF fails (" << r.dump() << ") but we rendered " << excerpt(got)
                                  << "\n" << excerpt(source);
                }
            } catch (const TemplateException& e) {
                ++raises;
                if (r.contains("raises")) {
                    EXPECT_EQ(e.message(), r.at("raises").get<std::string>()) << where;
                } else {
                    ADD_FAILURE() << where << ": we raised the template's own " << e.what() << "; HF: " << r.dump();
                }
            } catch (const phi::Error& e) {
                ++errors;
                if (r.contains("expected") || r.contains("raises")) {
                    ADD_FAILURE() << where << ": HF gives " << r.dump() << " but we threw: " << e.what() << "\n"
                                  << excerpt(source);
                }
            }
        }
    }
    EXPECT_EQ(constructs_seen.size(), 8u) << "every construct of the fine-tune templates is exercised";
    EXPECT_GE(rendered, 500u);
    std::printf("constructs: compared %zu renders (%zu rendered, %zu errors, %zu raise_exception)\n", compared,
                rendered, errors, raises);
}

TEST(ChatTemplate, UnsupportedConstructsAreRefusedByName) {
    const Json& cases = expectations().at("refused");
    ASSERT_GE(cases.size(), 20u);
    for (const Json& c : cases) {
        const std::string source = c.at("template").get<std::string>();
        const std::string construct = c.at("construct").get<std::string>();
        const std::string line = "at line " + std::to_string(c.at("line").get<int>()) + ",";
        try {
            ChatTemplate::compile(source);
            ADD_FAILURE() << "compiled, but must be refused: " << source;
        } catch (const phi::Error& e) {
            const std::string what = e.what();
            EXPECT_NE(what.find("unsupported Jinja construct '" + construct), std::string::npos)
                << source << " -> " << what;
            EXPECT_NE(what.find(line), std::string::npos) << source << " -> " << what;
        }
    }
}

TEST(ChatTemplate, RaiseExceptionCarriesTheTemplateMessage) {
    const ChatTemplate t = ChatTemplate::compile(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with a user, not "
        "' ~ "
        "messages[0]['role']) }}{% endif %}ok");
    const Json bad = {{"messages", Json::array({{{"role", "assistant"}, {"content", "x"}}})}};
    try {
        t.render(bad);
        FAIL() << "expected TemplateException";
    } catch (const TemplateException& e) {
        EXPECT_EQ(e.message(), "Conversation must start with a user, not assistant");
    }
    const Json good = {{"messages", Json::array({{{"role", "user"}, {"content", "x"}}})}};
    EXPECT_EQ(t.render(good), "ok");
}

TEST(ChatTemplate, RuntimeErrorsNameTheLine) {
    const ChatTemplate t = ChatTemplate::compile("line 1\n{{ 'a' + 1 }}");
    try {
        t.render(Json::object());
        FAIL() << "expected an error";
    } catch (const phi::Error& e) {
        EXPECT_NE(std::string(e.what()).find("at line 2"), std::string::npos) << e.what();
    }
}

TEST(ChatTemplate, HfContextNormalisesMessagesLikeApplyChatTemplate) {
    const Json messages = Json::parse(R"([{"role": "assistant", "content": "a", "tool_calls": null,
                                           "reasoning": "r"}])");
    const Json ctx = ChatTemplate::hf_context(messages, true, nullptr, {{"eos_token", "</s>"}}, {{"x", 1}});
    EXPECT_EQ(
        ctx.at("messages").dump(),
        R"([{"thinking":"r","role":"assistant","content":"a","reasoning":"r","reasoning_content":"r"}])");
    EXPECT_TRUE(ctx.at("tools").is_null());
    EXPECT_TRUE(ctx.at("documents").is_null());
    EXPECT_EQ(ctx.at("eos_token"), "</s>");
    EXPECT_EQ(ctx.at("x"), 1);
    EXPECT_THROW(ChatTemplate::hf_context(Json::array(), false), phi::Error);
}

// ---- hostile templates: every limit ends in phi::Error, never a crash or a hang ----

TEST(ChatTemplate, OutputSizeIsLimited) {
    phi::chat::jinja::Limits limits;
    limits.max_output_bytes = 1000;
    const ChatTemplate t = ChatTemplate::compile("{% for i in range(100) %}{{ 'x' * 100 }}{% endfor %}");
    EXPECT_THROW(t.render(Json::object(), limits), phi::Error);
    const ChatTemplate big = ChatTemplate::compile("{{ 'x' * 100000000 }}");
    EXPECT_THROW(big.render(Json::object()), phi::Error);
}

TEST(ChatTemplate, LoopWorkIsLimited) {
    const ChatTemplate t = ChatTemplate::compile(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}");
    phi::chat::jinja::Limits limits;
    limits.max_work = 1'000'000;
    EXPECT_THROW(t.render(Json::object(), limits), phi::Error);
    const ChatTemplate big_range = ChatTemplate::compile("{% for a in range(100001) %}{% endfor %}");
    EXPECT_THROW(big_range.render(Json::object()), phi::Error);
    // work hidden in comparisons and string scans is charged too
    const ChatTemplate compare = ChatTemplate::compile(
        "{% set big = range(100000)|list %}{% for i in range(100000) %}{% if big == big %}{% endif %}{% "
        "endfor %}");
    EXPECT_THROW(compare.render(Json::object()), phi::Error);
    const ChatTemplate scan = ChatTemplate::compile(
        "{% set s = 'x' * 10000000 %}{% for i in range(100000) %}{% if s|length > 1 and 'y' in s %}{% endif "
        "%}"
        "{% endfor %}");
    EXPECT_THROW(scan.render(Json::object()), phi::Error);
}

TEST(ChatTemplate, DeepNestingIsRefused) {
    std::string deep;
    for (int i = 0; i < 5000; ++i) deep += "(";
    deep = "{{ " + deep + "1";
    for (int i = 0; i < 5000; ++i) deep += ")";
    deep += " }}";
    EXPECT_THROW(ChatTemplate::compile(deep), phi::Error);
    std::string ifs;
    for (int i = 0; i < 5000; ++i) ifs += "{% if true %}";
    EXPECT_THROW(ChatTemplate::compile(ifs), phi::Error);
    std::string nots = "{{ ";
    for (int i = 0; i < 100000; ++i) nots += "not ";
    EXPECT_THROW(ChatTemplate::compile(nots + "1 }}"), phi::Error);
}

// Python stops runaway recursion with RecursionError; the interpreter stops it before the C++ stack.
TEST(ChatTemplate, MacroRecursionIsLimited) {
    const ChatTemplate t = ChatTemplate::compile("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    try {
        t.render(Json::object());
        FAIL() << "expected an error";
    } catch (const phi::Error& e) {
        EXPECT_NE(std::string(e.what()).find("more than 100 deep"), std::string::npos) << e.what();
    }
    const ChatTemplate ok = ChatTemplate::compile(
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{{ n }}{% endmacro %}{{ f(90) }}");
    EXPECT_EQ(ok.render(Json::object()).substr(0, 4), "0123");
}

// Without RenderOptions::now, strftime_now() reads the clock (the differential tests freeze it).
TEST(ChatTemplate, StrftimeNowReadsTheClockWhenNotFrozen) {
    const ChatTemplate t = ChatTemplate::compile("{{ strftime_now('%Y') }}");
    const std::string year = t.render(Json::object());
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    EXPECT_EQ(year, std::to_string(tm.tm_year + 1900));
}

TEST(ChatTemplate, DeepContextIsRefused) {
    Json deep = Json::array();
    for (int i = 0; i < 1000; ++i) deep = Json::array({deep});
    const ChatTemplate t = ChatTemplate::compile("{{ messages }}");
    EXPECT_THROW(t.render(Json{{"messages", deep}}), phi::Error);
}

TEST(ChatTemplate, GarbageDoesNotCrash) {
    const char* bad[] = {"{{",           "{%",
                         "{#",           "{{ }}",
                         "{% if %}",     "{% for %}",
                         "{% endfor %}", "{{ ) }}",
                         "{{ [ }}",      "{{ 'unterminated }}",
                         "{% if x %}",   "{% for x in y %}",
                         "{{ x | }}",    "{{ x is }}",
                         "\xff\xfe",     "{{ 99999999999999999999 }}",
                         "{% set %}",    "{% else %}",
                         "{{ a.1.b }}x"};
    for (const char* src : bad) {
        try {
            const ChatTemplate t = ChatTemplate::compile(src);
            (void)t.render(Json::object());
        } catch (const phi::Error&) {
        }
    }
    SUCCEED();
}

TEST(ChatTemplate, IteratorsAreOneShotLikePythonGenerators) {
    const ChatTemplate t = ChatTemplate::compile(
        "{% set g = items|select('odd') %}{{ g|first }}|{{ g|list }}|{{ g|list }}|{% set r = items|reverse %}"
        "{{ 3 in r }}{{ r|list }}");
    EXPECT_EQ(t.render(Json{{"items", {1, 2, 3, 4, 5}}}), "1|[3, 5]|[]|True[2, 1]");
}

}  // namespace
