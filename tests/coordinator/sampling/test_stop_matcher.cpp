// StopMatcher: stop strings split across tokens, released false starts, several stop strings, UTF-8 kept
// whole, flush at finish; plus is_stop_token.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/error.h"
#include "coordinator/sampling/sampling_params.h"
#include "coordinator/sampling/stop_matcher.h"

namespace {

using phi::sampling::SamplingParams;
using phi::sampling::StopMatcher;

// Feeds `pieces`; returns everything emitted (plus the flush when no stop matched) and the matched index.
std::pair<std::string, int32_t> stream(StopMatcher& m, const std::vector<std::string>& pieces,
                                       std::vector<std::string>* emitted = nullptr) {
    std::string out;
    for (const std::string& p : pieces) {
        const StopMatcher::Step s = m.feed(p);
        out += s.text;
        if (emitted) emitted->push_back(s.text);
        if (s.stopped) return {out, s.stop_index};
    }
    out += m.flush();
    return {out, -1};
}

TEST(StopMatcher, StopSplitOverThreePiecesIsNeverEmitted) {
    StopMatcher m({"<|end|>"});
    std::vector<std::string> emitted;
    const auto [text, index] = stream(m, {"Hello", " world<|", "en", "d|>", "ignored"}, &emitted);
    EXPECT_EQ(text, "Hello world");
    EXPECT_EQ(index, 0);
    EXPECT_EQ(emitted, (std::vector<std::string>{"Hello", " world", "", ""}));
    EXPECT_TRUE(m.stopped());
    EXPECT_THROW(m.feed("more"), phi::Error);
    EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, FalseStartIsReleased) {
    StopMatcher m({"###"});
    std::vector<std::string> emitted;
    const auto [text, index] = stream(m, {"a #", "#", " b", "#"}, &emitted);
    EXPECT_EQ(index, -1);
    EXPECT_EQ(text, "a ## b#");  // the final "#" is held until the flush
    EXPECT_EQ(emitted, (std::vector<std::string>{"a ", "", "## b", ""}));
}

TEST(StopMatcher, PrefixInsideALongerHeldTail) {
    StopMatcher m({"abac"});  // "abab" releases "ab" and keeps the second "ab", which completes
    std::vector<std::string> emitted;
    const auto [text, index] = stream(m, {"ab", "a", "b", "a", "c"}, &emitted);
    EXPECT_EQ(index, 0);
    EXPECT_EQ(text, "ab");
    EXPECT_EQ(emitted, (std::vector<std::string>{"", "", "ab", "", ""}));
    StopMatcher m2({"aab"});
    const auto [text2, index2] = stream(m2, {"a", "a", "a", "b"});
    EXPECT_EQ(text2, "a");
    EXPECT_EQ(index2, 0);
}

TEST(StopMatcher, SeveralStopStringsEarliestStartWins) {
    {
        StopMatcher m({"STOP", "\n\n", "cd"});
        const auto [text, index] = stream(m, {"ab", "c", "d\n\nST", "OP"});
        EXPECT_EQ(text, "ab");
        EXPECT_EQ(index, 2);
    }
    {
        StopMatcher m({"c", "bcd"});  // both complete on the same token: cut where "bcd" starts
        const auto [text, index] = stream(m, {"ab", "cd"});
        EXPECT_EQ(text, "a");
        EXPECT_EQ(index, 1);
    }
    {
        StopMatcher m({"abcd", "bc"});  // the shorter one completes first: stop there
        const auto [text, index] = stream(m, {"ab", "c", "d"});
        EXPECT_EQ(text, "a");
        EXPECT_EQ(index, 1);
    }
    {
        StopMatcher m({"User:", "Assistant:"});
        const auto [text, index] = stream(m, {"Use", "ful. Ass", "ist", "ant", ":"});
        EXPECT_EQ(text, "Useful. ");
        EXPECT_EQ(index, 1);
    }
}

TEST(StopMatcher, Utf8IsNotBroken) {
    StopMatcher m({"é!", "\xE2\x82\xAC\xE2\x82\xAC"});  // "é!" and "€€"
    std::vector<std::string> emitted;
    const auto [text, index] = stream(m, {"caf", "é", " €", "5 é", "!"}, &emitted);
    EXPECT_EQ(text, "café €5 ");
    EXPECT_EQ(index, 0);
    EXPECT_EQ(emitted, (std::vector<std::string>{"caf", "", "é ", "€5 ", ""}));

    StopMatcher m2({"€€"});
    const auto [text2, index2] = stream(m2, {"1€", "€", "x"});
    EXPECT_EQ(text2, "1");
    EXPECT_EQ(index2, 0);
}

TEST(StopMatcher, NoStopsPassesEverythingThrough) {
    StopMatcher m({});
    EXPECT_EQ(m.feed("abc").text, "abc");
    EXPECT_EQ(m.held_bytes(), 0u);
    EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, StopAtTheVeryStartAndFlush) {
    StopMatcher m({"\n"});
    const StopMatcher::Step s = m.feed("\nrest");
    EXPECT_TRUE(s.stopped);
    EXPECT_EQ(s.text, "");
    StopMatcher m2({"END"});
    EXPECT_EQ(m2.feed("the EN").text, "the ");
    EXPECT_EQ(m2.held_bytes(), 2u);
    EXPECT_EQ(m2.flush(), "EN");  // finished for another reason: the held text is emitted
    EXPECT_THROW(StopMatcher({""}), phi::Error);
}

TEST(StopTokens, StopIdsAndEos) {
    SamplingParams p;
    p.stop_token_ids = {7, 9};
    const std::vector<int32_t> eos = {2};
    EXPECT_TRUE(phi::sampling::is_stop_token(p, eos, 7));
    EXPECT_TRUE(phi::sampling::is_stop_token(p, eos, 2));
    EXPECT_FALSE(phi::sampling::is_stop_token(p, eos, 3));
    p.ignore_eos = true;
    EXPECT_FALSE(phi::sampling::is_stop_token(p, eos, 2));
    EXPECT_TRUE(phi::sampling::is_stop_token(p, eos, 9));
}

}  // namespace
