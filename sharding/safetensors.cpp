// Safetensors reading: mmap the file, validate the header the way huggingface/safetensors does
// (size limits, types, dtype sizes with overflow checks, contiguous non-overlapping coverage of the
// data section up to end of file), then hand out pointers into the mapping. Also the Checkpoint
// that joins the shards listed by model.safetensors.index.json.
#include "sharding/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>

#include "common/error.h"

namespace phi {

namespace {

using json = nlohmann::json;

// Same limit as huggingface/safetensors (MAX_HEADER_SIZE): a larger claim is a corrupt or
// hostile file, and parsing it would cost more memory than any real checkpoint header needs.
constexpr uint64_t k_max_header_bytes = 100'000'000;

std::string errno_text(int err) {
    return std::strerror(err);
}

/// Maps a safetensors dtype string to ours. Dtypes that are valid safetensors but that the
/// kernels cannot consume get their own message, so the user knows the file is fine but the
/// model needs converting.
DType parse_dtype(const std::string& s, const std::string& tensor, const std::string& file) {
    if (s == "F32") return DType::F32;
    if (s == "F16") return DType::F16;
    if (s == "BF16") return DType::BF16;
    static const char* const k_valid_unsupported[] = {
        "BOOL",    "U8",  "I8",  "I16",         "U16",        "I32",     "U32",
        "I64",     "U64", "F64", "F8_E5M2",     "F8_E4M3",    "F8_E8M0", "F6_E2M3",
        "F6_E3M2", "F4",  "C64", "F8_E4M3FNUZ", "F8_E5M2FNUZ"};
    for (const char* v : k_valid_unsupported) {
        if (s == v) {
            PHI_FAIL(
                "{}: tensor '{}' has dtype {}, a valid safetensors dtype that phi-cluster does not "
                "support (supported: F32, F16, BF16); convert the checkpoint",
                file, tensor, s);
        }
    }
    PHI_FAIL("{}: tensor '{}' has unknown dtype '{}' (supported: F32, F16, BF16)", file, tensor, s);
}

/// A JSON value as a non-negative integer that fits in int64, or nullopt.
std::optional<uint64_t> as_non_negative(const json& v) {
    if (v.is_number_unsigned()) {
        uint64_t u = v.get<uint64_t>();
        if (u > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
        return u;
    }
    if (v.is_number_integer()) {
        int64_t i = v.get<int64_t>();
        if (i < 0) return std::nullopt;
        return uint64_t(i);
    }
    return std::nullopt;
}

struct Span {
    uint64_t begin;
    uint64_t end;
    const std::string* name;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// MappedFile

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    PHI_CHECK(fd >= 0, "cannot open {}: {}", path.string(), errno_text(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        int err = errno;
        ::close(fd);
        PHI_FAIL("cannot stat {}: {}", path.string(), errno_text(err));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        PHI_FAIL("{} is not a regular file", path.string());
    }
    size_ = size_t(st.st_size);
    if (size_ == 0) {  // mmap of length 0 fails; an empty mapping is fine for callers
        ::close(fd);
        return;
    }
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    ::close(fd);  // the mapping keeps the file alive
    PHI_CHECK(p != MAP_FAILED, "cannot mmap {} ({} bytes): {}", path.string(), size_, errno_text(err));
    data_ = static_cast<const uint8_t*>(p);
}

MappedFile::~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path)
    : map_(std::make_unique<MappedFile>(path)) {
    const std::string file = path.string();
    const uint8_t* base = map_->data();
    const uint64_t file_size = map_->size();

    PHI_CHECK(file_size >= 8,
              "{}: file is {} bytes, too small for a safetensors file (needs an 8-byte header "
              "length); the file is truncated or not safetensors",
              file, file_size);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];  // little-endian u64
    PHI_CHECK(header_len <= k_max_header_bytes,
              "{}: header length {} exceeds the {} byte limit; the file is corrupt or not "
              "safetensors",
              file, header_len, k_max_header_bytes);
    PHI_CHECK(header_len <= file_size - 8,
              "{}: header length {} runs past the end of the file ({} bytes); the file is truncated "
              "or not safetensors",
              file, header_len, file_size);

    const char* header_begin = reinterpret_cast<const char*>(base + 8);
    json header;
    // nlohmann keeps the last of duplicate keys silently; a duplicated tensor name would then
    // surface as a confusing gap, so name it here.
    std::set<std::string> seen_keys;
    auto reject_duplicates = [&](int depth, json::parse_event_t event, json& parsed) {
        if (depth == 1 && event == json::parse_event_t::key && parsed.is_string()) {
            PHI_CHECK(seen_keys.insert(parsed.get<std::string>()).second,
                      "{}: header lists tensor '{}' twice", file, parsed.get<std::string>());
        }
        return true;
    };
    try {
        header = json::parse(header_begin, header_begin + header_len, reject_duplicates);
    } catch (const json::exception& e) {
        PHI_FAIL("{}: header is not valid JSON: {}", file, e.what());
    }
    PHI_CHECK(header.is_object(), "{}: header must be a JSON object, got {}", file, header.type_name());

    const uint8_t* data_section = base + 8 + header_len;
    const uint64_t data_len = file_size - 8 - header_len;

    std::vector<Span> spans;
    spans.reserve(header.size());
    for (auto it = header.begin(); it != header.end(); ++it) {
        const std::string& name = it.key();
        const json& entry = it.value();
        if (name == "__metadata__") {
            PHI_CHECK(entry.is_object(), "{}: __metadata__ must be an object of strings, got {}", file,
                      entry.type_name());
            for (auto m = entry.begin(); m != entry.end(); ++m) {
                PHI_CHECK(m.value().is_string(), "{}: __metadata__ value for '{}' must be a string, got {}",
                          file, m.key(), m.value().type_name());
                metadata_[m.key()] = m.value().get<std::string>();
            }
            continue;
        }
        PHI_CHECK(entry.is_object(), "{}: tensor '{}': entry must be an object, got {}", file, name,
                  entry.type_name());

        auto dt = entry.find("dtype");
        PHI_CHECK(dt != entry.end() && dt->is_string(), "{}: tensor '{}': 'dtype' must be a string", file,
                  name);
        TensorInfo info;
        info.name = name;
        info.file = file;
        info.dtype = parse_dtype(dt->get<std::string>(), name, file);

        auto sh = entry.find("shape");
        PHI_CHECK(sh != entry.end() && sh->is_array(),
                  "{}: tensor '{}': 'shape' must be an array of non-negative integers", file, name);
        uint64_t numel = 1;
        bool overflow = false;
        info.shape.reserve(sh->size());
        for (const json& d : *sh) {
            auto dim = as_non_negative(d);
            PHI_CHECK(dim.has_value(),
                      "{}: tensor '{}': 'shape' must be an array of non-negative integers, found {}", file,
                      name, d.dump());
            info.shape.push_back(int64_t(*dim));
            overflow = overflow || __builtin_mul_overflow(numel, *dim, &numel);
        }
        uint64_t nbytes = 0;
        overflow = overflow || __builtin_mul_overflow(numel, uint64_t(dtype_size(info.dtype)), &nbytes);
        PHI_CHECK(!overflow,
                  "{}: tensor '{}': shape {} overflows the element count (byte size does not fit "
                  "in 64 bits)",
                  file, name, sh->dump());

        auto off = entry.find("data_offsets");
        PHI_CHECK(off != entry.end() && off->is_array() && off->size() == 2,
                  "{}: tensor '{}': 'data_offsets' must be an array of 2 non-negative integers", file, name);
        auto begin = as_non_negative((*off)[0]);
        auto end = as_non_negative((*off)[1]);
        PHI_CHECK(begin && end,
                  "{}: tensor '{}': 'data_offsets' must be an array of 2 non-negative integers, "
                  "got {}",
                  file, name, off->dump());
        PHI_CHECK(*begin <= *end, "{}: tensor '{}': data_offsets [{}, {}] begin is after end", file, name,
                  *begin, *end);
        PHI_CHECK(*end - *begin == nbytes,
                  "{}: tensor '{}': data_offsets span {} bytes but shape {} of {} needs {} bytes", file, name,
                  *end - *begin, sh->dump(), dtype_name(info.dtype), nbytes);
        PHI_CHECK(*end <= data_len,
                  "{}: tensor '{}': data_offsets [{}, {}] lie outside the data section ({} bytes); the file "
                  "is truncated or the header is wrong",
                  file, name, *begin, *end, data_len);

        info.data = data_section + *begin;
        info.nbytes = size_t(nbytes);
        auto [pos, inserted] = tensors_.emplace(name, std::move(info));
        spans.push_back({*begin, *end, &pos->first});
    }

    // The reference requires the tensors to tile [0, data_len) exactly: no overlap (two tensors
    // aliasing bytes), no gap (unaccounted bytes) and data ending exactly at end of file.
    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t covered = 0;
    const std::string* prev = nullptr;
    for (const Span& s : spans) {
        if (s.begin < covered) {
            PHI_FAIL("{}: tensor '{}' (bytes [{}, {})) and tensor '{}' overlap (it ends at {})", file,
                     *s.name, s.begin, s.end, prev ? *prev : std::string(), covered);
        }
        if (s.begin > covered) {
            PHI_FAIL("{}: bytes [{}, {}) of the data section belong to no tensor (gap before tensor '{}')",
                     file, covered, s.begin, *s.name);
        }
        covered = s.end;
        prev = s.name;
    }
    PHI_CHECK(covered == data_len,
              "{}: data section is {} bytes but the tensors cover only {}; {} trailing bytes after the "
              "last tensor (data must end exactly at end of file)",
              file, data_len, covered, data_len - covered);
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

namespace {

json read_json_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    PHI_CHECK(in.good(), "cannot open {}: {}", path.string(), errno_text(errno));
    std::stringstream ss;
    ss << in.rdbuf();
    try {
        return json::parse(ss.str());
    } catch (const json::exception& e) {
        PHI_FAIL("{}: not valid JSON: {}", path.string(), e.what());
    }
}

/// A shard file name from the index must name a file in the model folder itself.
void check_shard_name(const std::string& f, const std::string& tensor, const std::string& index) {
    bool bad = f.empty() || f.find('/') != std::string::npos || f.find('\\') != std::string::npos ||
               f.find("..") != std::string::npos || f.find('\0') != std::string::npos;
    PHI_CHECK(!bad,
              "{}: weight_map entry for tensor '{}' names file '{}'; shard names must be plain file names "
              "in the model folder (no '/', no '..')",
              index, tensor, f);
}

}  // namespace

Checkpoint::Checkpoint(const std::filesystem::path& model_dir) : dir_(model_dir) {
    std::error_code ec;
    PHI_CHECK(std::filesystem::is_directory(model_dir, ec),
              "model folder {} does not exist or is not a folder", model_dir.string());
    const auto index_path = model_dir / "model.safetensors.index.json";
    const auto single_path = model_dir / "model.safetensors";

    if (std::filesystem::exists(index_path, ec)) {
        const std::string index = index_path.string();
        json j = read_json_file(index_path);
        PHI_CHECK(j.is_object(), "{}: must be a JSON object", index);
        auto wm = j.find("weight_map");
        PHI_CHECK(wm != j.end() && wm->is_object(), "{}: 'weight_map' must be an object of tensor -> file",
                  index);
        PHI_CHECK(!wm->empty(), "{}: 'weight_map' is empty", index);

        std::map<std::string, std::string> weight_map;
        std::map<std::string, SafetensorsFile*> by_file;
        for (auto it = wm->begin(); it != wm->end(); ++it) {
            PHI_CHECK(it.value().is_string(),
                      "{}: weight_map entry for tensor '{}' must be a file name string", index, it.key());
            std::string f = it.value().get<std::string>();
            check_shard_name(f, it.key(), index);
            weight_map[it.key()] = f;
            if (by_file.count(f) == 0) {
                const auto shard = model_dir / f;
                PHI_CHECK(std::filesystem::exists(shard, ec),
                          "{}: tensor '{}' is in file '{}', which is missing "
                          "from {}",
                          index, it.key(), f, model_dir.string());
                files_.push_back(std::make_unique<SafetensorsFile>(shard));
                by_file[f] = files_.back().get();
            }
        }
        // Every tensor of every shard is indexed once; the index and the files must agree.
        for (const auto& [f, sf] : by_file) {
            for (const auto& [name, info] : sf->tensors()) {
                auto [prior, inserted] = index_.emplace(name, &info);
                PHI_CHECK(inserted, "{}: tensor '{}' appears in two files: {} and {}", index, name,
                          prior->second->file, info.file);
            }
        }
        for (const auto& [f, sf] : by_file) {
            for (const auto& [name, info] : sf->tensors()) {
                auto w = weight_map.find(name);
                PHI_CHECK(w != weight_map.end(), "{}: tensor '{}' is in file '{}' but not in weight_map",
                          index, name, f);
                PHI_CHECK(w->second == f, "{}: weight_map puts tensor '{}' in '{}' but it is stored in '{}'",
                          index, name, w->second, f);
            }
        }
        for (const auto& [name, f] : weight_map) {
            PHI_CHECK(index_.count(name) != 0,
                      "{}: tensor '{}' is listed in weight_map for file '{}' but that "
                      "file does not contain it",
                      index, name, f);
        }
    } else if (std::filesystem::exists(single_path, ec)) {
        files_.push_back(std::make_unique<SafetensorsFile>(single_path));
        for (const auto& [name, info] : files_.back()->tensors()) index_[name] = &info;
    } else {
        // Old checkpoints (Phi-1.5/Phi-2's first releases among them) ship only PyTorch pickles.
        std::string bins;
        for (const auto& entry : std::filesystem::directory_iterator(model_dir, ec)) {
            const std::string f = entry.path().filename().string();
            if (f.size() > 4 && (f.compare(f.size() - 4, 4, ".bin") == 0 || f == "pytorch_model.bin.index.json"))
                bins += (bins.empty() ? "" : ", ") + f;
        }
        PHI_CHECK(bins.empty(),
                  "{} has only PyTorch .bin weights ({}); phi-cluster reads safetensors only (a .bin is a pickle "
                  "that can run code when loaded). Convert it once in Python: for each .bin file, "
                  "safetensors.torch.save_file(torch.load(f, weights_only=True), f[:-4] + '.safetensors'), "
                  "naming the single file model.safetensors (or write model.safetensors.index.json for shards); "
                  "or load it with transformers and save_pretrained(dir, safe_serialization=True)",
                  model_dir.string(), bins);
        PHI_FAIL("no model.safetensors or model.safetensors.index.json in {}", model_dir.string());
    }
}

const TensorInfo* Checkpoint::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : it->second;
}

const TensorInfo& Checkpoint::get(const std::string& name) const {
    const TensorInfo* t = find(name);
    PHI_CHECK(t != nullptr, "tensor '{}' not found in checkpoint {} ({} tensors)", name, dir_.string(),
              index_.size());
    return *t;
}

std::vector<std::string> Checkpoint::names() const {
    std::vector<std::string> out;
    out.reserve(index_.size());
    for (const auto& [name, info] : index_) out.push_back(name);
    return out;
}

}  // namespace phi
