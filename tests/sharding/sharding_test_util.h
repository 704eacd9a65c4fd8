// Helpers shared by the sharding tests: a self-deleting temp folder, safetensors file building, and
// an assertion that a call throws phi::Error whose message contains given words.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"

namespace phi::test {

using json = nlohmann::json;

/// A fresh folder under the system temp dir, removed with everything in it on destruction.
class TempDir {
  public:
    TempDir() {
        static std::atomic<int> counter{0};
        path_ = std::filesystem::temp_directory_path() /
                ("phi_sharding_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        std::filesystem::remove_all(path_);
        std::filesystem::create_directories(path_);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

  private:
    std::filesystem::path path_;
};

inline void write_file(const std::filesystem::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    ASSERT_TRUE(out.good()) << "cannot write " << path;
}

inline std::string le64(uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xff);
    return s;
}

/// Raw safetensors bytes: length prefix, header text as given, data as given.
inline std::string raw_safetensors(const std::string& header, const std::string& data) {
    return le64(header.size()) + header + data;
}

struct TensorSpec {
    std::string name;
    std::string dtype;
    std::vector<int64_t> shape;
    std::string bytes;  // raw little-endian element bytes
};

/// A well-formed safetensors file: tensors laid out back to back in the given order.
inline std::string build_safetensors(const std::vector<TensorSpec>& tensors, const json& metadata = nullptr) {
    json header = json::object();
    if (!metadata.is_null()) header["__metadata__"] = metadata;
    std::string data;
    for (const auto& t : tensors) {
        header[t.name] = {{"dtype", t.dtype},
                          {"shape", t.shape},
                          {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
        data += t.bytes;
    }
    return raw_safetensors(header.dump(), data);
}

template <class T>
std::string bytes_of(const std::vector<T>& v) {
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

/// Runs `f`, expects a phi::Error whose message contains every word in `words`.
inline void expect_error(const std::function<void()>& f, std::initializer_list<std::string> words) {
    try {
        f();
    } catch (const phi::Error& e) {
        std::string msg = e.what();
        for (const auto& w : words) {
            EXPECT_NE(msg.find(w), std::string::npos) << "message lacks '" << w << "': " << msg;
        }
        return;
    } catch (const std::exception& e) {
        ADD_FAILURE() << "expected phi::Error, got another exception: " << e.what();
        return;
    }
    ADD_FAILURE() << "expected phi::Error, nothing was thrown";
}

}  // namespace phi::test
