// Little-endian frame: magic "PHSP", version, step, kind, counts, then each sequence. Every count
// is checked against the bytes that remain before anything is read.
#include "cluster/step_plan.h"

#include <cstring>

#include "common/error.h"

namespace phi {
namespace {

constexpr uint32_t k_magic = 0x50534850;  // "PHSP"
constexpr uint16_t k_version = 5;  // 3: per-sequence adapter id; 4: the model a step runs; 5: adapter loading

class Writer {
public:
    template <class T>
    void put(T v) {
        const size_t o = buf.size();
        buf.resize(o + sizeof(T));
        std::memcpy(buf.data() + o, &v, sizeof(T));
    }
    void put_i32s(const std::vector<int32_t>& v) {
        put<uint32_t>(uint32_t(v.size()));
        const size_t o = buf.size();
        buf.resize(o + v.size() * 4);
        if (!v.empty()) std::memcpy(buf.data() + o, v.data(), v.size() * 4);
    }
    std::vector<uint8_t> buf;
};

class Reader {
public:
    explicit Reader(std::span<const uint8_t> b) : b_(b) {}
    template <class T>
    T get(const char* what) {
        PHI_CHECK(pos_ + sizeof(T) <= b_.size(), "step plan frame truncated while reading {}", what);
        T v;
        std::memcpy(&v, b_.data() + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    std::vector<int32_t> get_i32s(const char* what) {
        const uint32_t n = get<uint32_t>(what);
        PHI_CHECK(size_t(n) * 4 <= b_.size() - pos_, "step plan frame: {} claims {} entries, only {} bytes remain",
                  what, n, b_.size() - pos_);
        std::vector<int32_t> v(n);
        if (n) std::memcpy(v.data(), b_.data() + pos_, size_t(n) * 4);
        pos_ += size_t(n) * 4;
        return v;
    }
    std::string get_string(const char* what) {
        const uint32_t n = get<uint32_t>(what);
        PHI_CHECK(size_t(n) <= b_.size() - pos_, "step plan frame: {} claims {} bytes, only {} remain", what, n,
                  b_.size() - pos_);
        std::string v(reinterpret_cast<const char*>(b_.data() + pos_), n);
        pos_ += n;
        return v;
    }
    bool done() const { return pos_ == b_.size(); }

private:
    std::span<const uint8_t> b_;
    size_t pos_ = 0;
};

}  // namespace

std::vector<uint8_t> encode_step_plan(const StepPlan& p) {
    Writer w;
    w.put<uint32_t>(k_magic);
    w.put<uint16_t>(k_version);
    w.put<uint64_t>(p.step);
    w.put<uint8_t>(uint8_t(p.kind));
    w.put<uint8_t>(uint8_t(p.model));
    w.put<uint32_t>(uint32_t(p.seqs.size()));
    for (const SeqPlan& s : p.seqs) {
        w.put<int64_t>(s.seq_id);
        w.put<int64_t>(s.start_pos);
        w.put<uint8_t>(uint8_t((s.long_rope ? 1 : 0) | (s.all_logits ? 2 : 0)));
        w.put<int32_t>(s.argmax_limit);
        w.put<int32_t>(s.adapter);
        w.put_i32s(s.tokens);
        w.put_i32s(s.block_table);
    }
    w.put<uint32_t>(uint32_t(p.released.size()));
    for (int64_t id : p.released) w.put<int64_t>(id);
    w.put<int32_t>(p.adapter_id);
    w.put<uint32_t>(uint32_t(p.adapter_path.size()));
    w.buf.insert(w.buf.end(), p.adapter_path.begin(), p.adapter_path.end());
    return std::move(w.buf);
}

StepPlan decode_step_plan(std::span<const uint8_t> bytes) {
    Reader r(bytes);
    PHI_CHECK(r.get<uint32_t>("magic") == k_magic, "step plan frame has a bad magic number");
    const uint16_t version = r.get<uint16_t>("version");
    PHI_CHECK(version == k_version, "step plan version {} is not {}: ranks run different phi-worker builds",
              version, k_version);
    StepPlan p;
    p.step = r.get<uint64_t>("step");
    const uint8_t kind = r.get<uint8_t>("kind");
    PHI_CHECK(kind >= 1 && kind <= 5, "step plan has unknown kind {}", kind);
    p.kind = StepKind(kind);
    const uint8_t model = r.get<uint8_t>("model");
    PHI_CHECK(model <= 1, "step plan names unknown model {}", model);
    p.model = StepModel(model);
    const uint32_t n = r.get<uint32_t>("sequence count");
    PHI_CHECK(n <= bytes.size(), "step plan claims {} sequences in {} bytes", n, bytes.size());
    for (uint32_t i = 0; i < n; ++i) {
        SeqPlan s;
        s.seq_id = r.get<int64_t>("seq id");
        s.start_pos = r.get<int64_t>("start position");
        const uint8_t flags = r.get<uint8_t>("flags");
        s.long_rope = flags & 1;
        s.all_logits = flags & 2;
        s.argmax_limit = r.get<int32_t>("argmax limit");
        PHI_CHECK(s.argmax_limit >= 0, "step plan: sequence {} has a negative argmax limit", s.seq_id);
        s.adapter = r.get<int32_t>("adapter");
        PHI_CHECK(s.adapter >= 0, "step plan: sequence {} has a negative adapter id", s.seq_id);
        s.tokens = r.get_i32s("tokens");
        s.block_table = r.get_i32s("block table");
        PHI_CHECK(s.start_pos >= 0, "step plan: sequence {} has negative start position", s.seq_id);
        p.seqs.push_back(std::move(s));
    }
    const uint32_t nr = r.get<uint32_t>("released count");
    PHI_CHECK(size_t(nr) * 8 <= bytes.size(), "step plan claims {} released ids in {} bytes", nr, bytes.size());
    for (uint32_t i = 0; i < nr; ++i) p.released.push_back(r.get<int64_t>("released id"));
    p.adapter_id = r.get<int32_t>("adapter id");
    PHI_CHECK(p.adapter_id >= 0, "step plan has a negative adapter id");
    p.adapter_path = r.get_string("adapter path");
    PHI_CHECK(r.done(), "step plan frame has trailing bytes");
    return p;
}

uint64_t step_state_hash(const StepPlan& p) {
    uint64_t h = fnv1a(&p.step, sizeof(p.step));
    h = fnv1a(&p.model, sizeof(p.model), h);
    for (const SeqPlan& s : p.seqs) {
        const int64_t len = s.start_pos + int64_t(s.tokens.size());
        h = fnv1a(&s.seq_id, 8, h);
        h = fnv1a(&len, 8, h);
        const uint8_t mode = s.long_rope;
        h = fnv1a(&mode, 1, h);
        h = fnv1a(&s.adapter, 4, h);  // an adapter changes the K/V a sequence writes
        h = fnv1a(s.block_table.data(), s.block_table.size() * 4, h);
    }
    return h;
}

}  // namespace phi
