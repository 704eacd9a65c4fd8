// Encode throughput of the Phi tokenizers (MB/s of UTF-8 input, one thread), plus load time and streaming
// decode speed. scripts/bench_tokenizer_hf.py runs this binary and HF tokenizers on the same text and prints
// the ratio; run alone it uses a text built from the test expectations.
//
// usage: bench_tokenizer [--text FILE] [--repeat N] [--chunk BYTES] [--json]
//   --chunk: encode the text as consecutive prompts of about BYTES each (cut after the first '\n' at or past
//   every BYTES mark), as a server sees them; default: the whole text as one prompt.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "coordinator/tokenizer/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;
using phi::tokenizer::Tokenizer;

double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

// CPU time of this thread: the build machines are shared, so wall time would include waiting for a core.
double thread_cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

std::string read_text(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

fs::path source_dir() {
    if (const char* env = std::getenv("PHI_SOURCE_DIR")) return env;
    return PHI_SOURCE_DIR_FALLBACK;
}

// ~2 MiB from the valid texts of the test expectations (prose in many scripts, code, whitespace, emoji...).
std::string default_text() {
    std::string base;
    const fs::path exp =
        source_dir() / "tests" / "fixtures" / "tokenizers" / "expectations" / "phi4mini.json";
    const auto j = nlohmann::json::parse(read_text(exp));
    for (const auto& c : j["cases"])
        if (c.contains("text")) base += c["text"].get<std::string>() + "\n";
    std::string text;
    while (text.size() < (2u << 20)) text += base;
    return text;
}

// Cut points: after the first '\n' at or past each `chunk`-byte mark (the Python side cuts the same way).
std::vector<std::string_view> split_chunks(const std::string& text, std::size_t chunk) {
    std::vector<std::string_view> out;
    if (chunk == 0) {
        out.emplace_back(text);
        return out;
    }
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t cut = text.find('\n', std::min(text.size(), start + chunk));
        cut = cut == std::string::npos ? text.size() : cut + 1;
        out.emplace_back(text.data() + start, cut - start);
        start = cut;
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    std::string text_path;
    int repeat = 5;
    std::size_t chunk = 0;
    bool as_json = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--text" && i + 1 < argc) {
            text_path = argv[++i];
        } else if (a == "--repeat" && i + 1 < argc) {
            repeat = std::max(1, std::atoi(argv[++i]));
        } else if (a == "--chunk" && i + 1 < argc) {
            chunk = static_cast<std::size_t>(std::atoll(argv[++i]));
        } else if (a == "--json") {
            as_json = true;
        } else {
            std::fprintf(stderr, "usage: %s [--text FILE] [--repeat N] [--chunk BYTES] [--json]\n", argv[0]);
            return 2;
        }
    }
    const std::string text = text_path.empty() ? default_text() : read_text(text_path);
    const double mb = static_cast<double>(text.size()) / 1e6;
    const std::vector<std::string_view> chunks = split_chunks(text, chunk);
    if (!as_json)
        std::printf("text: %s, %.2f MB in %zu prompt(s); best of %d runs, one thread, thread CPU time\n",
                    text_path.empty() ? "test-expectation texts" : text_path.c_str(), mb, chunks.size(),
                    repeat);

    const fs::path fixtures = source_dir() / "tests" / "fixtures" / "tokenizers";
    for (const char* family : {"phi2", "phi3", "phi4mini"}) {
        auto t0 = Clock::now();
        const Tokenizer tok = Tokenizer::load(fixtures / family);
        const double load_s = seconds_since(t0);

        double best = 1e30;
        std::size_t n_tokens = 0;
        for (int r = 0; r < repeat; ++r) {
            const double c0 = thread_cpu_seconds();
            std::size_t n = 0;
            for (const std::string_view c : chunks) n += tok.encode(c, false).size();
            best = std::min(best, thread_cpu_seconds() - c0);
            n_tokens = n;
        }
        // Streaming decode of the same ids, one id at a time.
        const auto ids = tok.encode(text, false);
        auto dec = tok.incremental_decoder(false);
        const double c0 = thread_cpu_seconds();
        std::size_t out_bytes = 0;
        for (const int32_t id : ids) out_bytes += dec.step(id).size();
        out_bytes += dec.flush().size();
        const double stream_s = thread_cpu_seconds() - c0;

        if (as_json) {
            std::printf(
                "{\"family\": \"%s\", \"bytes\": %zu, \"tokens\": %zu, \"encode_s\": %.6f, \"mb_per_s\": "
                "%.3f, "
                "\"load_s\": %.3f, \"stream_tokens_per_s\": %.0f}\n",
                family, text.size(), n_tokens, best, mb / best, load_s,
                static_cast<double>(ids.size()) / stream_s);
        } else {
            std::printf(
                "%-9s encode %7.2f MB/s (%zu tokens, %.3f s)   load %.2f s   streaming decode %.2f M "
                "tokens/s "
                "(%zu bytes)\n",
                family, mb / best, n_tokens, best, load_s, static_cast<double>(ids.size()) / stream_s / 1e6,
                out_bytes);
        }
    }
    return 0;
}
