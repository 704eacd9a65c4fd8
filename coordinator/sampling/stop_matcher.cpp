// StopMatcher: earliest-match search over the held tail plus the new piece, then hold back the longest
// tail that could still grow into a stop string.
#include "coordinator/sampling/stop_matcher.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"

namespace phi::sampling {

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
    for (const std::string& s : stops_) PHI_CHECK(!s.empty(), "stop strings must not be empty");
}

StopMatcher::Step StopMatcher::feed(std::string_view piece) {
    PHI_CHECK(!stopped_, "text fed to a stop matcher after its stop string matched");
    Step step;
    std::string buf = std::move(held_);
    held_.clear();
    buf.append(piece);

    // A match must end in `piece`: the held tail holds no complete stop string.
    size_t match_at = std::string::npos;
    for (size_t k = 0; k < stops_.size(); ++k) {
        const size_t p = buf.find(stops_[k]);
        if (p < match_at) {
            match_at = p;
            step.stop_index = static_cast<int32_t>(k);
        }
    }
    if (match_at != std::string::npos) {
        buf.resize(match_at);
        step.text = std::move(buf);
        step.stopped = true;
        stopped_ = true;
        return step;
    }

    size_t hold = 0;
    for (const std::string& s : stops_) {
        for (size_t len = std::min(s.size() - 1, buf.size()); len > hold; --len) {
            if (std::memcmp(buf.data() + buf.size() - len, s.data(), len) == 0) {
                hold = len;
                break;
            }
        }
    }
    held_.assign(buf, buf.size() - hold, hold);
    buf.resize(buf.size() - hold);
    step.text = std::move(buf);
    return step;
}

std::string StopMatcher::flush() {
    std::string out = std::move(held_);
    held_.clear();
    return out;
}

}  // namespace phi::sampling
