// Memory-mapped safetensors checkpoints (single file or sharded with model.safetensors.index.json).
// Every header field is validated before any tensor byte is touched; a malformed file gives a
// phi::Error naming the file, the tensor and the problem, never a crash or an out-of-bounds read.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace phi {

/// One tensor inside a mapped file. `data` points into the mapping and lives as long as the
/// SafetensorsFile (or Checkpoint) that produced it.
struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    const uint8_t* data = nullptr;  // [prod(shape)] elements of dtype
    size_t nbytes = 0;
    std::string file;  // for error messages
};

/// A read-only memory mapping of a file (RAII).
class MappedFile {
public:
    explicit MappedFile(const std::filesystem::path& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

/// One validated .safetensors file.
class SafetensorsFile {
public:
    explicit SafetensorsFile(const std::filesystem::path& path);
    const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

private:
    std::unique_ptr<MappedFile> map_;
    std::map<std::string, TensorInfo> tensors_;
    std::map<std::string, std::string> metadata_;
};

/// All tensors of a model folder: `model.safetensors`, or the files listed by
/// `model.safetensors.index.json` (each file's tensors must match the index).
class Checkpoint {
public:
    explicit Checkpoint(const std::filesystem::path& model_dir);
    /// nullptr when absent.
    const TensorInfo* find(const std::string& name) const;
    /// Throws naming the tensor and the folder when absent.
    const TensorInfo& get(const std::string& name) const;
    std::vector<std::string> names() const;

private:
    std::filesystem::path dir_;
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
    std::map<std::string, const TensorInfo*> index_;
};

}  // namespace phi
