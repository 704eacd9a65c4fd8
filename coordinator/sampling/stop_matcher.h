// Incremental stop-string matching over streamed text: a stop string may be split across any number of
// tokens, and neither it nor anything after it is ever emitted.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace phi::sampling {

/// Feed it the decoded text of each new token. It emits at once all text that cannot be the start of a
/// stop string, and holds back the longest tail that is a proper prefix of one, until later text decides.
/// Generation stops at the first token whose text completes a stop string; the text is cut where that
/// stop string starts (the earliest-starting one when several complete on the same token). Stop strings
/// must be non-empty valid UTF-8 (SamplingParams::validate checks this); then, for UTF-8 input, every cut
/// falls on a character boundary.
class StopMatcher {
public:
    struct Step {
        /// Text safe to send to the client now (possibly empty).
        std::string text;
        /// True when a stop string completed: `text` is everything before it, and the sequence is done.
        bool stopped = false;
        /// Index in the stop list of the stop string that matched, or -1.
        int32_t stop_index = -1;
    };

    explicit StopMatcher(std::vector<std::string> stops);

    /// Text of the next token. Throws phi::Error once a stop string has matched.
    Step feed(std::string_view piece);

    /// At the end of generation without a stop string (EOS, stop token id, max_tokens): the held-back
    /// text, which is then emitted. Empty after a stop string matched.
    std::string flush();

    bool stopped() const { return stopped_; }
    /// Bytes currently held back.
    size_t held_bytes() const { return held_.size(); }

private:
    std::vector<std::string> stops_;
    std::string held_;  // tail of the text so far that is a proper prefix of some stop string
    bool stopped_ = false;
};

}  // namespace phi::sampling
