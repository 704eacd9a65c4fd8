// Safetensors reader and Checkpoint: valid files read back byte-exact; every malformed header or
// index gives a phi::Error naming the file, the tensor and the problem.
#include <gtest/gtest.h>

#include <cstring>

#include "sharding/safetensors.h"
#include "sharding_test_util.h"

namespace phi {
namespace {

using test::build_safetensors;
using test::bytes_of;
using test::expect_error;
using test::json;
using test::raw_safetensors;
using test::TempDir;
using test::TensorSpec;
using test::write_file;

std::vector<float> floats_of(const TensorInfo& t) {
    std::vector<float> out(t.nbytes / 4);
    std::memcpy(out.data(), t.data, t.nbytes);
    return out;
}

std::vector<uint16_t> halves_of(const TensorInfo& t) {
    std::vector<uint16_t> out(t.nbytes / 2);
    std::memcpy(out.data(), t.data, t.nbytes);
    return out;
}

/// A header with one tensor entry and `data_len` zero bytes of data.
std::string one_entry(const json& entry, size_t data_len, const std::string& name = "w") {
    json h = json::object();
    h[name] = entry;
    return raw_safetensors(h.dump(), std::string(data_len, '\0'));
}

class SafetensorsTest : public ::testing::Test {
  protected:
    /// Writes `bytes` to <tmp>/model.safetensors and opens it.
    void open(const std::string& bytes) {
        write_file(path(), bytes);
        SafetensorsFile f(path());
    }
    std::filesystem::path path() const { return dir_ / "model.safetensors"; }
    std::function<void()> opener(const std::string& bytes) {
        return [this, bytes] { open(bytes); };
    }
    TempDir dir_;
};

TEST_F(SafetensorsTest, ValidFileReadsBackAllDtypes) {
    const std::vector<float> f32 = {1.0f, -2.5f, 3.25f, 0.0f, 1e-8f, 65504.0f};
    const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x3800, 0x7C00};  // 1, -2, 0.5, inf
    const std::vector<uint16_t> bf16 = {0x3F80, 0xC040};                 // 1, -3
    write_file(path(), build_safetensors({{"a.f32", "F32", {2, 3}, bytes_of(f32)},
                                          {"b.f16", "F16", {4}, bytes_of(f16)},
                                          {"c.bf16", "BF16", {1, 2}, bytes_of(bf16)},
                                          {"d.empty", "F32", {0, 5}, ""}},
                                         json{{"format", "pt"}}));
    SafetensorsFile f(path());
    ASSERT_EQ(f.tensors().size(), 4u);
    EXPECT_EQ(f.metadata().at("format"), "pt");

    const TensorInfo& a = f.tensors().at("a.f32");
    EXPECT_EQ(a.name, "a.f32");
    EXPECT_EQ(a.dtype, DType::F32);
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(a.nbytes, 24u);
    EXPECT_EQ(a.file, path().string());
    EXPECT_EQ(floats_of(a), f32);

    const TensorInfo& b = f.tensors().at("b.f16");
    EXPECT_EQ(b.dtype, DType::F16);
    EXPECT_EQ(b.nbytes, 8u);
    EXPECT_EQ(halves_of(b), f16);
    EXPECT_EQ(f16_to_f32(halves_of(b)[1]), -2.0f);

    const TensorInfo& c = f.tensors().at("c.bf16");
    EXPECT_EQ(c.dtype, DType::BF16);
    EXPECT_EQ(c.shape, (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(bf16_to_f32(halves_of(c)[0]), 1.0f);
    EXPECT_EQ(bf16_to_f32(halves_of(c)[1]), -3.0f);

    const TensorInfo& d = f.tensors().at("d.empty");
    EXPECT_EQ(d.nbytes, 0u);
    EXPECT_EQ(d.shape, (std::vector<int64_t>{0, 5}));
}

TEST_F(SafetensorsTest, HeaderPaddedWithSpacesIsAccepted) {
    // The Python writer pads the header with spaces to 8-byte alignment.
    const std::vector<float> v = {7.0f};
    std::string header = json{{"x", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}}}.dump();
    header.append(8 - header.size() % 8, ' ');
    write_file(path(), raw_safetensors(header, bytes_of(v)));
    SafetensorsFile f(path());
    EXPECT_EQ(floats_of(f.tensors().at("x")), v);
}

TEST_F(SafetensorsTest, ScalarAndEmptyHeader) {
    const std::vector<float> v = {4.0f};
    write_file(path(), build_safetensors({{"s", "F32", {}, bytes_of(v)}}));
    SafetensorsFile f(path());
    EXPECT_TRUE(f.tensors().at("s").shape.empty());
    EXPECT_EQ(f.tensors().at("s").nbytes, 4u);

    write_file(path(), raw_safetensors("{}", ""));
    SafetensorsFile empty(path());
    EXPECT_TRUE(empty.tensors().empty());
}

TEST_F(SafetensorsTest, MissingFileNamesPathAndErrno) {
    expect_error([this] { SafetensorsFile f(dir_ / "nope.safetensors"); },
                 {"nope.safetensors", "No such file"});
    expect_error([this] { SafetensorsFile f(dir_.path()); }, {"not a regular file"});
}

TEST_F(SafetensorsTest, FileShorterThanEightBytes) {
    expect_error(opener(""), {"model.safetensors", "0 bytes", "too small"});
    expect_error(opener("abc"), {"model.safetensors", "3 bytes", "too small"});
}

TEST_F(SafetensorsTest, HeaderLengthPastEndOfFile) {
    expect_error(opener(test::le64(1000) + "{}"), {"model.safetensors", "1000", "past the end"});
    expect_error(opener(test::le64(~uint64_t(0)) + "{}"), {"exceeds"});
}

TEST_F(SafetensorsTest, OversizedHeaderClaim) {
    expect_error(opener(test::le64(200'000'000) + std::string(64, ' ')),
                 {"model.safetensors", "200000000", "exceeds", "100000000"});
}

TEST_F(SafetensorsTest, InvalidJsonHeader) {
    expect_error(opener(raw_safetensors("{\"a\": ", "")), {"model.safetensors", "not valid JSON"});
    expect_error(opener(raw_safetensors("[1, 2]", "")), {"must be a JSON object"});
    expect_error(opener(raw_safetensors("\xff\xfe", "")), {"not valid JSON"});
}

TEST_F(SafetensorsTest, DataShorterThanHeaderSays) {
    const std::vector<float> v = {1, 2, 3, 4};
    std::string bytes = build_safetensors({{"layer.w", "F32", {4}, bytes_of(v)}});
    bytes.resize(bytes.size() - 4);
    expect_error(opener(bytes), {"model.safetensors", "layer.w", "outside the data section", "truncated"});
}

TEST_F(SafetensorsTest, EntryWithWrongTypes) {
    expect_error(opener(one_entry(5, 0)), {"'w'", "entry must be an object"});
    expect_error(opener(one_entry({{"dtype", 5}, {"shape", {1}}, {"data_offsets", {0, 4}}}, 4)),
                 {"'w'", "'dtype' must be a string"});
    expect_error(opener(one_entry({{"shape", {1}}, {"data_offsets", {0, 4}}}, 4)), {"'w'", "dtype"});
    expect_error(opener(one_entry({{"dtype", "F32"}, {"shape", "1"}, {"data_offsets", {0, 4}}}, 4)),
                 {"'w'", "'shape' must be an array"});
    expect_error(opener(one_entry({{"dtype", "F32"}, {"shape", {-1}}, {"data_offsets", {0, 4}}}, 4)),
                 {"'w'", "non-negative", "-1"});
    expect_error(opener(one_entry({{"dtype", "F32"}, {"shape", {1.5}}, {"data_offsets", {0, 4}}}, 4)),
                 {"'w'", "non-negative", "1.5"});
    expect_error(opener(one_entry({{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0}}}, 4)),
                 {"'w'", "'data_offsets' must be an array of 2"});
    expect_error(opener(one_entry({{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, "4"}}}, 4)),
                 {"'w'", "data_offsets"});
    expect_error(opener(one_entry({{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {-4, 0}}}, 4)),
                 {"'w'", "non-negative"});
    expect_error(opener(one_entry({{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {4, 0}}}, 4)),
                 {"'w'", "begin is after end"});
    expect_error(opener(raw_safetensors(json{{"__metadata__", {{"format", 1}}}}.dump(), "")),
                 {"__metadata__", "format", "must be a string"});
    expect_error(opener(raw_safetensors(json{{"__metadata__", {1, 2}}}.dump(), "")),
                 {"__metadata__", "must be an object"});
}

TEST_F(SafetensorsTest, UnsupportedDtype) {
    expect_error(opener(one_entry({{"dtype", "I32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}, 8, "ids")),
                 {"model.safetensors", "'ids'", "I32", "valid safetensors dtype", "not support"});
    expect_error(opener(one_entry({{"dtype", "BOOL"}, {"shape", {2}}, {"data_offsets", {0, 2}}}, 2, "mask")),
                 {"'mask'", "BOOL", "not support"});
    expect_error(opener(one_entry({{"dtype", "Q4_K"}, {"shape", {2}}, {"data_offsets", {0, 2}}}, 2, "q")),
                 {"'q'", "unknown dtype", "Q4_K"});
}

TEST_F(SafetensorsTest, SpanDoesNotMatchShape) {
    expect_error(opener(one_entry({{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 4}}}, 4, "bias")),
                 {"'bias'", "span 4 bytes", "needs 8 bytes"});
    expect_error(opener(one_entry({{"dtype", "BF16"}, {"shape", {2, 2}}, {"data_offsets", {0, 16}}}, 16)),
                 {"'w'", "BF16", "needs 8 bytes"});
}

TEST_F(SafetensorsTest, ShapeProductOverflow) {
    const uint64_t big = uint64_t(1) << 40;
    expect_error(opener(one_entry({{"dtype", "F32"}, {"shape", {big, big}}, {"data_offsets", {0, 0}}}, 0)),
                 {"'w'", "overflow"});
    // The element count fits, the byte count does not.
    expect_error(
        opener(one_entry({{"dtype", "F32"}, {"shape", {uint64_t(1) << 62}}, {"data_offsets", {0, 0}}}, 0)),
        {"'w'", "overflow"});
    // A dimension beyond int64 is rejected rather than wrapped.
    expect_error(
        opener(one_entry({{"dtype", "F32"}, {"shape", {~uint64_t(0)}}, {"data_offsets", {0, 0}}}, 0)),
        {"'w'", "non-negative"});
}

TEST_F(SafetensorsTest, OffsetsOutsideData) {
    expect_error(opener(one_entry({{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {8, 12}}}, 4, "far")),
                 {"'far'", "[8, 12]", "outside the data section"});
    const uint64_t huge = ~uint64_t(0) >> 1;
    expect_error(opener(one_entry({{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {huge, huge}}}, 0)),
                 {"'w'", "outside the data section"});
}

TEST_F(SafetensorsTest, OverlappingTensors) {
    json h = {{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
              {"b", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {4, 12}}}}};
    expect_error(opener(raw_safetensors(h.dump(), std::string(12, '\0'))),
                 {"model.safetensors", "'a'", "'b'", "overlap"});
    // Two tensors on exactly the same bytes (aliasing).
    json same = {{"x", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}},
                 {"y", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}}};
    expect_error(opener(raw_safetensors(same.dump(), std::string(4, '\0'))), {"'x'", "'y'", "overlap"});
}

TEST_F(SafetensorsTest, GapBetweenTensors) {
    json h = {{"a", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}},
              {"b", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {8, 12}}}}};
    expect_error(opener(raw_safetensors(h.dump(), std::string(12, '\0'))),
                 {"model.safetensors", "[4, 8)", "belong to no tensor", "'b'"});
    json late = {{"a", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {4, 8}}}}};
    expect_error(opener(raw_safetensors(late.dump(), std::string(8, '\0'))), {"[0, 4)", "gap", "'a'"});
}

TEST_F(SafetensorsTest, TrailingBytesAfterLastTensor) {
    const std::vector<float> v = {1, 2};
    expect_error(opener(build_safetensors({{"w", "F32", {2}, bytes_of(v)}}) + "xyz"),
                 {"model.safetensors", "3 trailing bytes", "end of file"});
    expect_error(opener(raw_safetensors("{}", "z")), {"1 trailing bytes"});
}

TEST_F(SafetensorsTest, DuplicateTensorName) {
    std::string header = R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                         R"( "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})";
    expect_error(opener(raw_safetensors(header, std::string(8, '\0'))), {"'w'", "twice"});
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

TEST(Checkpoint, SingleFile) {
    TempDir dir;
    const std::vector<float> v = {1, 2, 3};
    write_file(dir / "model.safetensors", build_safetensors({{"model.norm.weight", "F32", {3}, bytes_of(v)},
                                                             {"lm_head.weight", "F32", {0, 3}, ""}}));
    Checkpoint ck(dir.path());
    EXPECT_EQ(ck.names(), (std::vector<std::string>{"lm_head.weight", "model.norm.weight"}));
    EXPECT_EQ(floats_of(ck.get("model.norm.weight")), v);
    EXPECT_EQ(ck.find("missing"), nullptr);
    expect_error([&] { ck.get("model.layers.0.mlp.fc1.weight"); },
                 {"'model.layers.0.mlp.fc1.weight'", "not found", dir.path().string()});
}

/// Two shards and an index; `mutate` may edit the index before it is written.
void write_sharded(const TempDir& dir, const std::function<void(json&)>& mutate = {}) {
    const std::vector<float> a = {1, 2}, b = {3}, c = {4, 5, 6};
    write_file(dir / "model-00001-of-00002.safetensors",
               build_safetensors({{"embed", "F32", {1, 2}, bytes_of(a)}, {"norm", "F32", {1}, bytes_of(b)}}));
    write_file(dir / "model-00002-of-00002.safetensors",
               build_safetensors({{"head", "F32", {3}, bytes_of(c)}}));
    json index = {{"metadata", {{"total_size", 24}}},
                  {"weight_map",
                   {{"embed", "model-00001-of-00002.safetensors"},
                    {"norm", "model-00001-of-00002.safetensors"},
                    {"head", "model-00002-of-00002.safetensors"}}}};
    if (mutate) mutate(index);
    write_file(dir / "model.safetensors.index.json", index.dump(2));
}

TEST(Checkpoint, ShardedIndex) {
    TempDir dir;
    write_sharded(dir);
    Checkpoint ck(dir.path());
    EXPECT_EQ(ck.names(), (std::vector<std::string>{"embed", "head", "norm"}));
    EXPECT_EQ(floats_of(ck.get("embed")), (std::vector<float>{1, 2}));
    EXPECT_EQ(floats_of(ck.get("norm")), (std::vector<float>{3}));
    EXPECT_EQ(floats_of(ck.get("head")), (std::vector<float>{4, 5, 6}));
    EXPECT_NE(ck.get("head").file.find("model-00002-of-00002.safetensors"), std::string::npos);
    expect_error([&] { ck.get("lm_head.bias"); }, {"'lm_head.bias'", dir.path().string()});
}

TEST(Checkpoint, IndexTakesPrecedenceOverSingleFile) {
    TempDir dir;
    write_sharded(dir);
    write_file(dir / "model.safetensors", "garbage");
    Checkpoint ck(dir.path());
    EXPECT_EQ(ck.names().size(), 3u);
}

TEST(Checkpoint, IndexNamesMissingFile) {
    TempDir dir;
    write_sharded(dir, [](json& j) { j["weight_map"]["head"] = "model-00003-of-00003.safetensors"; });
    expect_error([&] { Checkpoint ck(dir.path()); },
                 {"model.safetensors.index.json", "'head'", "model-00003-of-00003.safetensors", "missing"});
}

TEST(Checkpoint, IndexRejectsPathTraversal) {
    TempDir dir;
    write_sharded(dir, [](json& j) { j["weight_map"]["head"] = "../model-00002-of-00002.safetensors"; });
    expect_error([&] { Checkpoint ck(dir.path()); }, {"'head'", "../model-00002", "no '/', no '..'"});
    write_sharded(dir, [](json& j) { j["weight_map"]["head"] = "/etc/passwd"; });
    expect_error([&] { Checkpoint ck(dir.path()); }, {"'head'", "/etc/passwd"});
    write_sharded(dir, [](json& j) { j["weight_map"]["head"] = ".."; });
    expect_error([&] { Checkpoint ck(dir.path()); }, {"'head'", "'..'"});
}

TEST(Checkpoint, IndexAndFilesDisagree) {
    TempDir dir;
    // Listed in the index but absent from its file.
    write_sharded(dir, [](json& j) { j["weight_map"]["extra"] = "model-00002-of-00002.safetensors"; });
    expect_error([&] { Checkpoint ck(dir.path()); }, {"'extra'", "does not contain"});
    // Stored in a file but the index puts it elsewhere.
    write_sharded(dir, [](json& j) { j["weight_map"]["norm"] = "model-00002-of-00002.safetensors"; });
    expect_error([&] { Checkpoint ck(dir.path()); },
                 {"'norm'", "stored in 'model-00001-of-00002.safetensors'"});
    // Stored in a file but not listed.
    write_sharded(dir, [](json& j) { j["weight_map"].erase("norm"); });
    expect_error([&] { Checkpoint ck(dir.path()); }, {"'norm'", "not in weight_map"});
}

TEST(Checkpoint, TensorInTwoFiles) {
    TempDir dir;
    write_sharded(dir);
    const std::vector<float> b = {9};
    write_file(dir / "model-00002-of-00002.safetensors",
               build_safetensors({{"head", "F32", {1}, bytes_of(b)}, {"norm", "F32", {1}, bytes_of(b)}}));
    expect_error([&] { Checkpoint ck(dir.path()); }, {"'norm'", "two files"});
}

TEST(Checkpoint, MalformedIndex) {
    TempDir dir;
    write_file(dir / "model.safetensors.index.json", "{\"weight_map\": [");
    expect_error([&] { Checkpoint ck(dir.path()); }, {"model.safetensors.index.json", "not valid JSON"});
    write_file(dir / "model.safetensors.index.json", R"({"metadata": {}})");
    expect_error([&] { Checkpoint ck(dir.path()); }, {"model.safetensors.index.json", "weight_map"});
    write_file(dir / "model.safetensors.index.json", R"({"weight_map": {"a": 3}})");
    expect_error([&] { Checkpoint ck(dir.path()); }, {"'a'", "file name string"});
}

TEST(Checkpoint, ShardErrorsNameTheShard) {
    TempDir dir;
    write_sharded(dir);
    write_file(dir / "model-00002-of-00002.safetensors", "tiny");
    expect_error([&] { Checkpoint ck(dir.path()); }, {"model-00002-of-00002.safetensors", "too small"});
}

TEST(Checkpoint, NoModelFiles) {
    TempDir dir;
    expect_error([&] { Checkpoint ck(dir.path()); },
                 {"no model.safetensors or model.safetensors.index.json in", dir.path().string()});
    expect_error([&] { Checkpoint ck(dir / "absent"); }, {"absent", "does not exist"});
}

// Phi-1.5/Phi-2's first releases ship only pickles: say that, and how to convert them.
TEST(Checkpoint, BinOnlyFolderIsRefusedNamingTheConversion) {
    TempDir dir;
    write_file(dir / "config.json", "{}");
    write_file(dir / "pytorch_model.bin", "not read");
    expect_error([&] { Checkpoint ck(dir.path()); },
                 {dir.path().string(), "pytorch_model.bin", "safetensors only", "safetensors.torch.save_file",
                  "save_pretrained"});
    write_file(dir / "pytorch_model-00001-of-00002.bin", "x");
    expect_error([&] { Checkpoint ck(dir.path()); }, {"pytorch_model-00001-of-00002.bin", "pytorch_model.bin"});
}

}  // namespace
}  // namespace phi
