// Loading a tokenizer from tokenizer.json / tokenizer_config.json / config.json, reproducing what
// transformers.AutoTokenizer (pinned version) builds from the same folder:
//  - which class it instantiates (tokenizer_class, config.json model_type, the classes it overrides),
//  - what that class keeps from tokenizer.json: TokenizersBackend keeps everything; GPT2Tokenizer,
//    CodeGenTokenizer and LlamaTokenizer keep only the vocabulary, merges and post-processor and build their
//    own normalizer / pre-tokenizer / decoder / model options (and drop tokenizer.json's added tokens),
//  - add_bos_token / add_eos_token are dropped when tokenizer.json exists (the post-processor decides),
//  - added tokens: tokenizer.json's list, then tokenizer_config.json's added_tokens_decoder entries that
//    differ (they win), then named special tokens (bos/eos/unk/...) that are not added tokens yet,
//    with HF tokenizers' id assignment (known content keeps its id, new content takes the next free id).
#include <zlib.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/error.h"
#include "common/log.h"
#include "coordinator/tokenizer/tokenizer_impl.h"
#include "coordinator/tokenizer/unicode.h"

namespace phi::tokenizer {

using nlohmann::json;

namespace {

// ------------------------------------------------------------------------------------------------
// Files
// ------------------------------------------------------------------------------------------------

std::string read_file(const std::filesystem::path& path) {
    std::ifstream f(path, std::ios::binary);
    PHI_CHECK(f.good(), "cannot open {}", path.string());
    std::ostringstream ss;
    ss << f.rdbuf();
    PHI_CHECK(!f.bad(), "error reading {}", path.string());
    return ss.str();
}

std::string read_gzip(const std::filesystem::path& path) {
    gzFile g = gzopen(path.string().c_str(), "rb");
    PHI_CHECK(g != nullptr, "cannot open {}", path.string());
    std::string out;
    char buf[1 << 16];
    while (true) {
        const int n = gzread(g, buf, sizeof(buf));
        if (n < 0) {
            int errnum = 0;
            const std::string msg = gzerror(g, &errnum);
            gzclose(g);
            PHI_FAIL("{} is not a valid gzip file (truncated or corrupted?): {}", path.string(), msg);
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    const int rc = gzclose(g);
    PHI_CHECK(rc == Z_OK, "{} is not a valid gzip file (truncated or corrupted?)", path.string());
    return out;
}

// ------------------------------------------------------------------------------------------------
// JSON access with messages that name the file and the field
// ------------------------------------------------------------------------------------------------

json parse_json(std::string_view text, const char* file) {
    try {
        return json::parse(text.begin(), text.end());
    } catch (const json::parse_error& e) {
        PHI_FAIL("{} is not valid JSON (truncated or corrupted?): {}", file, e.what());
    }
}

std::string type_name(const json& j) {
    return j.type_name();
}

const json& member(const json& obj, const char* key, const std::string& where) {
    PHI_CHECK(obj.is_object(), "{} must be a JSON object, got {}", where, type_name(obj));
    auto it = obj.find(key);
    PHI_CHECK(it != obj.end(), "{} has no \"{}\"", where, key);
    return *it;
}

std::string get_string(const json& obj, const char* key, const std::string& where) {
    const json& v = member(obj, key, where);
    PHI_CHECK(v.is_string(), "{}.{} must be a string, got {}", where, key, type_name(v));
    return v.get<std::string>();
}

bool get_bool(const json& obj, const char* key, const std::string& where, bool fallback) {
    if (!obj.is_object()) return fallback;
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    PHI_CHECK(it->is_boolean(), "{}.{} must be true or false, got {}", where, key, type_name(*it));
    return it->get<bool>();
}

std::optional<std::string> get_opt_string(const json& obj, const char* key, const std::string& where) {
    if (!obj.is_object()) return std::nullopt;
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return std::nullopt;
    PHI_CHECK(it->is_string(), "{}.{} must be a string or null, got {}", where, key, type_name(*it));
    return it->get<std::string>();
}

std::size_t get_size(const json& obj, const char* key, const std::string& where) {
    const json& v = member(obj, key, where);
    PHI_CHECK(v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0),
              "{}.{} must be a non-negative integer, got {}", where, key, v.dump());
    return v.get<std::size_t>();
}

std::string type_of(const json& obj, const std::string& where) {
    PHI_CHECK(obj.is_object(), "{} must be a JSON object or null, got {}", where, type_name(obj));
    return get_string(obj, "type", where);
}

Pattern parse_pattern(const json& obj, const std::string& where) {
    const json& p = member(obj, "pattern", where);
    PHI_CHECK(p.is_object() && p.size() == 1 && (p.contains("String") || p.contains("Regex")),
              "{}.pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}, got {}", where, p.dump());
    if (p.contains("String")) {
        PHI_CHECK(p["String"].is_string(), "{}.pattern.String must be a string", where);
        return Pattern::literal(p["String"].get<std::string>());
    }
    PHI_CHECK(p["Regex"].is_string(), "{}.pattern.Regex must be a string", where);
    return Pattern::regex(p["Regex"].get<std::string>());
}

std::string single_char(const json& obj, const char* key, const std::string& where) {
    const std::string s = get_string(obj, key, where);
    PHI_CHECK(unicode::is_valid(s) && unicode::count_code_points(s) == 1,
              "{}.{} must be one character, got '{}'", where, key, s);
    return s;
}

PrependScheme parse_prepend_scheme(const json& obj, const std::string& where) {
    if (obj.contains("prepend_scheme")) {
        const std::string s = get_string(obj, "prepend_scheme", where);
        if (s == "always") return PrependScheme::Always;
        if (s == "first") return PrependScheme::First;
        if (s == "never") return PrependScheme::Never;
        PHI_FAIL("{}.prepend_scheme must be \"always\", \"first\" or \"never\", got \"{}\"", where, s);
    }
    // Files written before prepend_scheme existed carry add_prefix_space.
    return get_bool(obj, "add_prefix_space", where, true) ? PrependScheme::Always : PrependScheme::Never;
}

// ------------------------------------------------------------------------------------------------
// Pipeline components
// ------------------------------------------------------------------------------------------------

void parse_normalizer(const json& j, const std::string& where, std::vector<NormalizerOp>& out) {
    if (j.is_null()) return;
    const std::string type = type_of(j, where);
    if (type == "Sequence") {
        const json& list = member(j, "normalizers", where);
        PHI_CHECK(list.is_array(), "{}.normalizers must be a list", where);
        for (std::size_t i = 0; i < list.size(); ++i)
            parse_normalizer(list[i], fmt::format("{}.normalizers[{}]", where, i), out);
    } else if (type == "Prepend") {
        out.push_back({NormalizerOp::Kind::Prepend, get_string(j, "prepend", where), std::nullopt});
    } else if (type == "Replace") {
        out.push_back(
            {NormalizerOp::Kind::Replace, get_string(j, "content", where), parse_pattern(j, where)});
    } else {
        PHI_FAIL("{}: normalizer type \"{}\" is not supported (supported: Sequence, Prepend, Replace)", where,
                 type);
    }
}

void parse_pre_tokenizer(const json& j, const std::string& where, std::vector<PreTokenizerOp>& out) {
    if (j.is_null()) return;
    const std::string type = type_of(j, where);
    if (type == "Sequence") {
        const json& list = member(j, "pretokenizers", where);
        PHI_CHECK(list.is_array(), "{}.pretokenizers must be a list", where);
        for (std::size_t i = 0; i < list.size(); ++i)
            parse_pre_tokenizer(list[i], fmt::format("{}.pretokenizers[{}]", where, i), out);
        return;
    }
    PreTokenizerOp op{};
    if (type == "ByteLevel") {
        op.kind = PreTokenizerOp::Kind::ByteLevel;
        op.add_prefix_space = get_bool(j, "add_prefix_space", where, true);
        op.use_regex = get_bool(j, "use_regex", where, true);
    } else if (type == "Split") {
        op.kind = PreTokenizerOp::Kind::Split;
        op.pattern = parse_pattern(j, where);
        const std::string b = get_string(j, "behavior", where);
        if (b == "Removed") {
            op.behavior = SplitBehavior::Removed;
        } else if (b == "Isolated") {
            op.behavior = SplitBehavior::Isolated;
        } else if (b == "MergedWithPrevious") {
            op.behavior = SplitBehavior::MergedWithPrevious;
        } else if (b == "MergedWithNext") {
            op.behavior = SplitBehavior::MergedWithNext;
        } else if (b == "Contiguous") {
            op.behavior = SplitBehavior::Contiguous;
        } else {
            PHI_FAIL(
                "{}.behavior \"{}\" is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, "
                "Contiguous",
                where, b);
        }
        const json& inv = member(j, "invert", where);
        PHI_CHECK(inv.is_boolean(), "{}.invert must be true or false", where);
        op.invert = inv.get<bool>();
    } else if (type == "Metaspace") {
        op.kind = PreTokenizerOp::Kind::Metaspace;
        op.replacement = single_char(j, "replacement", where);
        op.prepend_scheme = parse_prepend_scheme(j, where);
        op.split = get_bool(j, "split", where, true);
    } else {
        PHI_FAIL(
            "{}: pre-tokenizer type \"{}\" is not supported (supported: Sequence, ByteLevel, Split, "
            "Metaspace)",
            where, type);
    }
    out.push_back(std::move(op));
}

void parse_decoder(const json& j, const std::string& where, std::vector<DecoderOp>& out) {
    const std::string type = type_of(j, where);
    if (type == "Sequence") {
        const json& list = member(j, "decoders", where);
        PHI_CHECK(list.is_array(), "{}.decoders must be a list", where);
        for (std::size_t i = 0; i < list.size(); ++i)
            parse_decoder(list[i], fmt::format("{}.decoders[{}]", where, i), out);
        return;
    }
    DecoderOp op{};
    if (type == "ByteLevel") {
        op.kind = DecoderOp::Kind::ByteLevel;
    } else if (type == "Replace") {
        op.kind = DecoderOp::Kind::Replace;
        op.pattern = parse_pattern(j, where);
        op.content = get_string(j, "content", where);
    } else if (type == "ByteFallback") {
        op.kind = DecoderOp::Kind::ByteFallback;
    } else if (type == "Fuse") {
        op.kind = DecoderOp::Kind::Fuse;
    } else if (type == "Strip") {
        op.kind = DecoderOp::Kind::Strip;
        op.content = single_char(j, "content", where);
        op.start = get_size(j, "start", where);
        op.stop = get_size(j, "stop", where);
    } else if (type == "Metaspace") {
        op.kind = DecoderOp::Kind::Metaspace;
        op.content = single_char(j, "replacement", where);
        op.prepend_scheme = parse_prepend_scheme(j, where);
    } else {
        PHI_FAIL(
            "{}: decoder type \"{}\" is not supported (supported: Sequence, ByteLevel, Replace, "
            "ByteFallback, "
            "Fuse, Strip, Metaspace)",
            where, type);
    }
    out.push_back(std::move(op));
}

std::vector<int32_t> special_ids(const json& specials, const std::string& name, const std::string& where) {
    PHI_CHECK(specials.is_object() && specials.contains(name),
              "{}: special token \"{}\" used by the template is not in special_tokens", where, name);
    const json& ids = member(specials[name], "ids", fmt::format("{}.special_tokens.{}", where, name));
    PHI_CHECK(ids.is_array(), "{}.special_tokens.{}.ids must be a list of integers", where, name);
    std::vector<int32_t> out;
    for (const json& id : ids) {
        PHI_CHECK(id.is_number_integer(), "{}.special_tokens.{}.ids must be a list of integers", where, name);
        out.push_back(id.get<int32_t>());
    }
    return out;
}

void parse_post_processor(const json& j, const std::string& where, std::vector<PostProcessorOp>& out) {
    if (j.is_null()) return;
    const std::string type = type_of(j, where);
    if (type == "Sequence") {
        const json& list = member(j, "processors", where);
        PHI_CHECK(list.is_array(), "{}.processors must be a list", where);
        for (std::size_t i = 0; i < list.size(); ++i)
            parse_post_processor(list[i], fmt::format("{}.processors[{}]", where, i), out);
        return;
    }
    PostProcessorOp op{};
    if (type == "ByteLevel") {
        op.kind = PostProcessorOp::Kind::ByteLevel;
    } else if (type == "TemplateProcessing") {
        op.kind = PostProcessorOp::Kind::Template;
        const json& single = member(j, "single", where);
        PHI_CHECK(single.is_array(), "{}.single must be a list", where);
        const json& specials = j.contains("special_tokens") ? j["special_tokens"] : json::object();
        for (std::size_t i = 0; i < single.size(); ++i) {
            const json& piece = single[i];
            const std::string pw = fmt::format("{}.single[{}]", where, i);
            if (piece.is_object() && piece.contains("Sequence")) {
                const std::string id = get_string(piece["Sequence"], "id", pw + ".Sequence");
                PHI_CHECK(id == "A", "{}: a single-sequence template can only use sequence A, got {}", pw,
                          id);
                op.single.emplace_back();
                op.single_is_sequence.push_back(true);
            } else if (piece.is_object() && piece.contains("SpecialToken")) {
                const std::string id = get_string(piece["SpecialToken"], "id", pw + ".SpecialToken");
                op.single.push_back(special_ids(specials, id, where));
                op.single_is_sequence.push_back(false);
            } else {
                PHI_FAIL("{} must be {{\"Sequence\": ...}} or {{\"SpecialToken\": ...}}, got {}", pw,
                         piece.dump());
            }
        }
    } else if (type == "BertProcessing" || type == "RobertaProcessing") {
        op.kind = PostProcessorOp::Kind::Wrap;
        for (const char* key : {"cls", "sep"}) {
            const json& pair = member(j, key, where);
            PHI_CHECK(pair.is_array() && pair.size() == 2 && pair[1].is_number_integer(),
                      "{}.{} must be [token, id]", where, key);
            (std::string(key) == "cls" ? op.prefix : op.suffix).push_back(pair[1].get<int32_t>());
        }
    } else {
        PHI_FAIL(
            "{}: post-processor type \"{}\" is not supported (supported: TemplateProcessing, ByteLevel, "
            "BertProcessing, RobertaProcessing, Sequence)",
            where, type);
    }
    out.push_back(std::move(op));
}

struct ModelData {
    std::vector<std::pair<std::string, int32_t>> vocab;
    std::vector<std::pair<std::string, std::string>> merges;
    BpeOptions options;
};

ModelData parse_model(const json& tj) {
    const std::string where = "tokenizer.json: model";
    const json& m = member(tj, "model", "tokenizer.json");
    PHI_CHECK(m.is_object(), "{} must be a JSON object, got {}", where, type_name(m));
    // Old files omit "type"; a BPE model is recognised by its merges.
    const std::string type =
        m.contains("type") ? get_string(m, "type", where) : (m.contains("merges") ? "BPE" : "?");
    PHI_CHECK(type == "BPE", "{}.type \"{}\" is not supported: only BPE models (all Phi tokenizers) are",
              where, type);
    ModelData d;
    const json& vocab = member(m, "vocab", where);
    PHI_CHECK(vocab.is_object(), "{}.vocab must be an object {{token: id}}, got {}", where, type_name(vocab));
    d.vocab.reserve(vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        PHI_CHECK(it.value().is_number_integer(), "{}.vocab[\"{}\"] must be an integer id, got {}", where,
                  it.key(), it.value().dump());
        const int64_t id = it.value().get<int64_t>();
        PHI_CHECK(id >= 0 && id < (int64_t{1} << 30), "{}.vocab[\"{}\"] = {} is not a valid id", where,
                  it.key(), id);
        d.vocab.emplace_back(it.key(), static_cast<int32_t>(id));
    }
    const json& merges = m.contains("merges") ? m["merges"] : json::array();
    PHI_CHECK(merges.is_array(), "{}.merges must be a list, got {}", where, type_name(merges));
    d.merges.reserve(merges.size());
    for (std::size_t i = 0; i < merges.size(); ++i) {
        const json& e = merges[i];
        if (e.is_string()) {
            const std::string s = e.get<std::string>();
            const std::size_t sp = s.find(' ');
            PHI_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
                      "{}.merges[{}] = \"{}\" must be two tokens separated by one space", where, i, s);
            d.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
            d.merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
        } else {
            PHI_FAIL("{}.merges[{}] must be \"a b\" or [\"a\", \"b\"], got {}", where, i, e.dump());
        }
    }
    if (m.contains("dropout") && !m["dropout"].is_null()) {
        PHI_CHECK(m["dropout"].is_number(), "{}.dropout must be a number or null", where);
        PHI_CHECK(m["dropout"].get<double>() == 0.0,
                  "{}.dropout {} is not supported (encoding would be random)", where,
                  m["dropout"].get<double>());
    }
    d.options.unk_token = get_opt_string(m, "unk_token", where);
    d.options.continuing_subword_prefix = get_opt_string(m, "continuing_subword_prefix", where);
    d.options.end_of_word_suffix = get_opt_string(m, "end_of_word_suffix", where);
    d.options.fuse_unk = get_bool(m, "fuse_unk", where, false);
    d.options.byte_fallback = get_bool(m, "byte_fallback", where, false);
    d.options.ignore_merges = get_bool(m, "ignore_merges", where, false);
    return d;
}

AddedToken parse_added_token(const json& t, const std::string& where, bool with_id) {
    AddedToken a;
    if (with_id) {
        const json& id = member(t, "id", where);
        PHI_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < (int64_t{1} << 30),
                  "{}.id must be a non-negative integer, got {}", where, id.dump());
        a.id = id.get<int32_t>();
    }
    a.content = get_string(t, "content", where);
    a.single_word = get_bool(t, "single_word", where, false);
    a.lstrip = get_bool(t, "lstrip", where, false);
    a.rstrip = get_bool(t, "rstrip", where, false);
    a.special = get_bool(t, "special", where, false);
    a.normalized = get_bool(t, "normalized", where, !a.special);
    return a;
}

bool same_token(const AddedToken& a, const AddedToken& b) {
    return a.content == b.content && a.single_word == b.single_word && a.lstrip == b.lstrip &&
           a.rstrip == b.rstrip && a.normalized == b.normalized && a.special == b.special;
}

/// A named special token of tokenizer_config.json: a string, an AddedToken dict, or null.
std::optional<std::string> special_token_content(const json& v, const std::string& where) {
    if (v.is_null()) return std::nullopt;
    if (v.is_string()) return v.get<std::string>();
    PHI_CHECK(v.is_object() && v.contains("content") && v["content"].is_string(),
              "{} must be a string, null or an object with a \"content\" string, got {}", where, v.dump());
    return v["content"].get<std::string>();
}

// ------------------------------------------------------------------------------------------------
// Which class AutoTokenizer instantiates
// ------------------------------------------------------------------------------------------------

// transformers.models.auto.tokenization_auto (pinned version): model types whose Hub tokenizer_class is
// known to be wrong (they get TokenizersBackend), and the classes registered for the model types we serve.
const std::set<std::string, std::less<>> k_incorrect_hub_class = {"arctic",
                                                                  "chatlm",
                                                                  "ernie4_5",
                                                                  "ernie4_5_moe",
                                                                  "fuyu",
                                                                  "h2ovl_chat",
                                                                  "hyperclovax",
                                                                  "hyperclovax_vlm",
                                                                  "hyperclovax_vision_v2",
                                                                  "internlm2",
                                                                  "internlm3",
                                                                  "iquestcoder",
                                                                  "jamba",
                                                                  "llava",
                                                                  "llava_next",
                                                                  "minicpm3",
                                                                  "minicpmv",
                                                                  "minimax_m2",
                                                                  "modernbert",
                                                                  "modernbert-decoder",
                                                                  "molmo",
                                                                  "molmo2",
                                                                  "nemotron",
                                                                  "nvfp4",
                                                                  "opencua",
                                                                  "openvla",
                                                                  "paddleocr_vl",
                                                                  "phi3",
                                                                  "phi3_v",
                                                                  "phimoe",
                                                                  "qwen2",
                                                                  "qwen3_5",
                                                                  "qwen3_5_moe",
                                                                  "qwen3_5_moe_text",
                                                                  "qwen4_exp",
                                                                  "step3_vl",
                                                                  "vipllava",
                                                                  "cohere_asr",
                                                                  "camembertv2-base",
                                                                  "siglip2",
                                                                  "smolvlm"};

std::optional<std::string> registered_class(const std::string& model_type) {
    if (model_type == "phi" || model_type == "gpt2" || model_type == "codegen") return "GPT2Tokenizer";
    if (k_incorrect_hub_class.count(model_type)) return "TokenizersBackend";
    return std::nullopt;
}

std::string strip_fast(std::string s) {
    if (s.size() > 4 && s.compare(s.size() - 4, 4, "Fast") == 0 && s != "PreTrainedTokenizerFast")
        s.resize(s.size() - 4);
    return s;
}

bool is_backend_class(const std::string& c) {
    return c == "TokenizersBackend" || c == "PreTrainedTokenizerFast" || c == "PythonBackend" ||
           c == "PreTrainedTokenizer";
}

std::string select_class(const json& tc, const json& cfg, std::string_view tokenizer_json_text) {
    const std::optional<std::string> tc_class =
        get_opt_string(tc, "tokenizer_class", "tokenizer_config.json");
    const std::optional<std::string> cfg_class = get_opt_string(cfg, "tokenizer_class", "config.json");
    const std::string model_type = get_opt_string(cfg, "model_type", "config.json").value_or("");
    const std::optional<std::string> hub = tc_class ? tc_class : cfg_class;

    if (hub && strip_fast(*hub) == "LlamaTokenizer" && !k_incorrect_hub_class.count(model_type) &&
        tokenizer_json_text.find("\"ByteLevel\"") != std::string_view::npos)
        return "TokenizersBackend";
    const std::optional<std::string> reg = registered_class(model_type);
    if (hub && !model_type.empty() && reg && strip_fast(*reg) != strip_fast(*hub)) {
        if (!is_backend_class(*reg)) {
            const std::string c = k_incorrect_hub_class.count(model_type) ? *reg : strip_fast(*hub);
            if (!is_backend_class(c)) return c;
        }
        return "TokenizersBackend";
    }
    if (tc_class) return strip_fast(*tc_class);
    if (cfg_class) return strip_fast(*cfg_class);
    return reg.value_or("TokenizersBackend");
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Added vocabulary (HF tokenizers AddedVocabulary::add_tokens)
// ------------------------------------------------------------------------------------------------

void TokenizerImpl::add_tokens(const std::vector<AddedToken>& tokens, std::vector<std::string>* warnings) {
    int32_t next_id = static_cast<int32_t>(model->size());
    if (!added.by_id.empty()) {
        const int32_t max = added.by_id.rbegin()->first;
        if (max >= static_cast<int32_t>(model->size()) || model->size() == 0) next_id = max + 1;
    }
    for (AddedToken tok : tokens) {
        if (tok.content.empty()) continue;
        if (auto it = added.content_to_id.find(tok.content); it != added.content_to_id.end()) {
            auto cur = added.by_id.find(it->second);
            if (cur != added.by_id.end() && same_token(cur->second, tok)) continue;
        }
        int32_t id;
        if (auto known = token_to_id(tok.content)) {
            id = *known;
        } else {
            id = next_id++;
        }
        if (warnings && tok.id >= 0 && tok.id != id)
            warnings->push_back(
                fmt::format("added token '{}' is declared with id {} but gets id {} (as in HF "
                            "tokenizers)",
                            tok.content, tok.id, id));
        tok.id = id;
        if (tok.normalized && !normalizer.empty()) {
            std::string norm = tok.content;
            apply_normalizer(norm);
            if (norm != tok.content) {
                added.normalized_form[id] = norm;
            } else {
                added.normalized_form.erase(id);
            }
        }
        added.content_to_id[tok.content] = id;
        if (tok.special) added.special_contents.insert(tok.content);
        added.by_id[id] = tok;
    }
    rebuild_added_matchers();
}

void TokenizerImpl::rebuild_added_matchers() {
    added.raw_trie = {};
    added.normalized_trie = {};
    added.raw_trie.nodes.emplace_back();
    added.normalized_trie.nodes.emplace_back();
    added_list.clear();
    for (const auto& [id, tok] : added.by_id) {
        if (tok.normalized) {
            auto nf = added.normalized_form.find(id);
            added.normalized_trie.insert(nf != added.normalized_form.end() ? nf->second : tok.content, id);
        } else {
            added.raw_trie.insert(tok.content, id);
        }
        added_list.push_back(tok);
    }
}

// ------------------------------------------------------------------------------------------------
// Tokenizer::from_json / load
// ------------------------------------------------------------------------------------------------

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                               std::string_view model_config_json) {
    auto impl = std::make_unique<TokenizerImpl>();
    TokenizerImpl& t = *impl;
    try {
        const json tj = parse_json(tokenizer_json, "tokenizer.json");
        PHI_CHECK(tj.is_object(), "tokenizer.json must be a JSON object, got {}", type_name(tj));
        const json tc = tokenizer_config_json.empty()
                            ? json::object()
                            : parse_json(tokenizer_config_json, "tokenizer_config.json");
        PHI_CHECK(tc.is_object(), "tokenizer_config.json must be a JSON object, got {}", type_name(tc));
        const json cfg =
            model_config_json.empty() ? json::object() : parse_json(model_config_json, "config.json");
        PHI_CHECK(cfg.is_object(), "config.json must be a JSON object, got {}", type_name(cfg));

        t.tokenizer_class = select_class(tc, cfg, tokenizer_json);
        const bool gpt2_like =
            t.tokenizer_class == "GPT2Tokenizer" || t.tokenizer_class == "CodeGenTokenizer";
        const bool llama = t.tokenizer_class == "LlamaTokenizer";
        const bool backend = !gpt2_like && !llama;
        if (backend && !is_backend_class(t.tokenizer_class))
            phi::log().warn(
                "tokenizer class {} is not modelled here; using tokenizer.json as is (transformers may apply "
                "that class's own pipeline)",
                t.tokenizer_class);

        // Model
        ModelData md = parse_model(tj);
        if (gpt2_like) {
            md.options = BpeOptions{std::nullopt, std::string(), std::string(), false, false, false};
        } else if (llama) {
            md.options = BpeOptions{std::nullopt, std::nullopt, std::nullopt, true, true, false};
        }
        t.model = std::make_unique<Bpe>(std::move(md.vocab), md.merges, md.options);

        // Normalizer, pre-tokenizer, decoder: from the file, or the class's own.
        const std::string w = "tokenizer.json";
        if (backend) {
            if (tj.contains("normalizer"))
                parse_normalizer(tj["normalizer"], w + ": normalizer", t.normalizer);
            if (tj.contains("pre_tokenizer"))
                parse_pre_tokenizer(tj["pre_tokenizer"], w + ": pre_tokenizer", t.pre_tokenizer);
            if (tj.contains("decoder") && !tj["decoder"].is_null()) {
                t.has_decoder = true;
                parse_decoder(tj["decoder"], w + ": decoder", t.decoder);
            }
        } else if (gpt2_like) {
            PreTokenizerOp bl{};
            bl.kind = PreTokenizerOp::Kind::ByteLevel;
            bl.add_prefix_space = get_bool(tc, "add_prefix_space", "tokenizer_config.json", false);
            bl.use_regex = true;
            t.pre_tokenizer.push_back(std::move(bl));
            t.has_decoder = true;
            t.decoder.push_back(
                DecoderOp{DecoderOp::Kind::ByteLevel, std::nullopt, "", 0, 0, PrependScheme::Always});
        } else {  // LlamaTokenizer
            const bool add_prefix_space = get_bool(tc, "add_prefix_space", "tokenizer_config.json", true);
            const bool legacy = get_bool(tc, "legacy", "tokenizer_config.json", false);
            PreTokenizerOp ms{};
            ms.kind = PreTokenizerOp::Kind::Metaspace;
            ms.replacement = "\xE2\x96\x81";  // ▁
            ms.prepend_scheme = !add_prefix_space ? PrependScheme::Never
                                                  : (legacy ? PrependScheme::Always : PrependScheme::First);
            ms.split = false;
            t.pre_tokenizer.push_back(std::move(ms));
            t.has_decoder = true;
            t.decoder.push_back(DecoderOp{DecoderOp::Kind::Replace, Pattern::literal("\xE2\x96\x81"), " ", 0,
                                          0, PrependScheme::Always});
            t.decoder.push_back(
                DecoderOp{DecoderOp::Kind::ByteFallback, std::nullopt, "", 0, 0, PrependScheme::Always});
            t.decoder.push_back(
                DecoderOp{DecoderOp::Kind::Fuse, std::nullopt, "", 0, 0, PrependScheme::Always});
            if (add_prefix_space)
                t.decoder.push_back(
                    DecoderOp{DecoderOp::Kind::Strip, std::nullopt, " ", 1, 0, PrependScheme::Always});
        }
        for (std::size_t i = 0; i < t.pre_tokenizer.size(); ++i) {
            if (t.pre_tokenizer[i].kind != PreTokenizerOp::Kind::ByteLevel) continue;
            PHI_CHECK(i + 1 == t.pre_tokenizer.size(),
                      "tokenizer.json: pre_tokenizer: a ByteLevel step must be the "
                      "last one (found at position {} of {})",
                      i, t.pre_tokenizer.size());
            t.byte_level_pre_tokenizer = true;
        }
        for (const DecoderOp& op : t.decoder) {
            t.decoder_has_byte_level |= op.kind == DecoderOp::Kind::ByteLevel;
            t.decoder_has_byte_fallback |= op.kind == DecoderOp::Kind::ByteFallback;
            t.decoder_strips_end |= op.kind == DecoderOp::Kind::Strip && op.stop > 0;
        }

        // Post-processor: tokenizer.json's (transformers drops add_bos_token/add_eos_token when
        // tokenizer.json exists; with no post-processor in the file it installs one that adds nothing).
        if (tj.contains("post_processor"))
            parse_post_processor(tj["post_processor"], w + ": post_processor", t.post_processor);

        // Added tokens.
        std::vector<std::string> warnings;
        if (backend && tj.contains("added_tokens") && !tj["added_tokens"].is_null()) {
            const json& list = tj["added_tokens"];
            PHI_CHECK(list.is_array(), "tokenizer.json: added_tokens must be a list, got {}",
                      type_name(list));
            std::vector<AddedToken> toks;
            for (std::size_t i = 0; i < list.size(); ++i)
                toks.push_back(
                    parse_added_token(list[i], fmt::format("tokenizer.json: added_tokens[{}]", i), true));
            t.add_tokens(toks, &warnings);
        } else {
            t.rebuild_added_matchers();
        }

        std::vector<AddedToken> to_add;
        if (tc.contains("added_tokens_decoder") && !tc["added_tokens_decoder"].is_null()) {
            const json& dec = tc["added_tokens_decoder"];
            PHI_CHECK(dec.is_object(),
                      "tokenizer_config.json: added_tokens_decoder must be an object {{id: token}}");
            std::vector<std::pair<int64_t, AddedToken>> entries;
            for (auto it = dec.begin(); it != dec.end(); ++it) {
                const std::string where =
                    fmt::format("tokenizer_config.json: added_tokens_decoder[\"{}\"]", it.key());
                int64_t id = -1;
                try {
                    std::size_t used = 0;
                    id = std::stoll(it.key(), &used);
                    PHI_CHECK(used == it.key().size() && id >= 0, "{}: the key must be a token id", where);
                } catch (const std::logic_error&) {
                    PHI_FAIL("{}: the key must be a token id", where);
                }
                AddedToken a = parse_added_token(it.value(), where, false);
                a.id = static_cast<int32_t>(id);
                entries.emplace_back(id, std::move(a));
            }
            std::sort(entries.begin(), entries.end(),
                      [](const auto& a, const auto& b) { return a.first < b.first; });
            for (auto& [id, tok] : entries) {
                bool present = false;
                for (const auto& [_, cur] : t.added.by_id) present = present || same_token(cur, tok);
                if (!present) to_add.push_back(std::move(tok));
            }
        }
        // Named special tokens, with the class defaults; config values (null included) override them.
        struct Named {
            const char* key;
            std::optional<std::string>* slot;
        };
        std::optional<std::string> sep, cls, mask;
        const Named named[] = {{"bos_token", &t.bos_token}, {"eos_token", &t.eos_token},
                               {"unk_token", &t.unk_token}, {"sep_token", &sep},
                               {"pad_token", &t.pad_token}, {"cls_token", &cls},
                               {"mask_token", &mask}};
        if (gpt2_like) t.bos_token = t.eos_token = t.unk_token = std::string("<|endoftext|>");
        if (llama) {
            t.unk_token = std::string("<unk>");
            t.bos_token = std::string("<s>");
            t.eos_token = std::string("</s>");
        }
        std::vector<std::string> named_values;
        for (const Named& n : named) {
            if (tc.contains(n.key))
                *n.slot = special_token_content(tc[n.key], fmt::format("tokenizer_config.json: {}", n.key));
            if (*n.slot) named_values.push_back(**n.slot);
        }
        for (const char* key : {"additional_special_tokens", "extra_special_tokens"}) {
            if (!tc.contains(key) || tc[key].is_null()) continue;
            const json& v = tc[key];
            const std::string where = fmt::format("tokenizer_config.json: {}", key);
            PHI_CHECK(v.is_array() || v.is_object(), "{} must be a list, got {}", where, type_name(v));
            for (auto it = v.begin(); it != v.end(); ++it)
                if (auto c = special_token_content(*it, where)) named_values.push_back(*c);
        }
        for (const std::string& c : named_values) {
            bool known = t.added.content_to_id.count(c) != 0;
            for (const AddedToken& a : to_add) known = known || a.content == c;
            if (known) continue;
            AddedToken a;
            a.content = c;
            a.special = true;
            a.normalized = false;
            to_add.push_back(std::move(a));
        }
        if (!to_add.empty()) t.add_tokens(to_add, &warnings);
        for (const std::string& msg : warnings) phi::log().debug("tokenizer: {}", msg);

        // Sizes: len(tokenizer) counts distinct token strings.
        int32_t size = static_cast<int32_t>(t.model->size());
        int32_t bound = t.model->id_bound();
        for (const auto& [content, id] : t.added.content_to_id) {
            if (t.model->find(content) < 0) ++size;
            bound = std::max(bound, id + 1);
        }
        t.vocab_size = size;
        t.id_bound = bound;

        // Chat template: a string, or a list of {name, template} (the "default" one).
        if (tc.contains("chat_template") && !tc["chat_template"].is_null()) {
            const json& ct = tc["chat_template"];
            if (ct.is_string()) {
                t.chat_template = ct.get<std::string>();
            } else {
                PHI_CHECK(ct.is_array(),
                          "tokenizer_config.json: chat_template must be a string or a list of "
                          "{{\"name\", \"template\"}}, got {}",
                          type_name(ct));
                for (const json& e : ct) {
                    PHI_CHECK(
                        e.is_object() && e.contains("name") && e.contains("template") &&
                            e["name"].is_string() && e["template"].is_string(),
                        "tokenizer_config.json: chat_template entries must be {{\"name\", \"template\"}}");
                    if (e["name"] == "default") t.chat_template = e["template"].get<std::string>();
                }
            }
        }
    } catch (const json::exception& e) {
        PHI_FAIL("malformed tokenizer files: {}", e.what());
    }
    return Tokenizer(std::move(impl));
}

std::string Tokenizer::read_tokenizer_json(const std::filesystem::path& dir) {
    PHI_CHECK(std::filesystem::is_directory(dir), "tokenizer folder {} does not exist", dir.string());
    if (std::filesystem::exists(dir / "tokenizer.json")) return read_file(dir / "tokenizer.json");
    if (std::filesystem::exists(dir / "tokenizer.json.gz")) return read_gzip(dir / "tokenizer.json.gz");
    PHI_FAIL(
        "{} has no tokenizer.json (or tokenizer.json.gz); phi-cluster needs the fast-tokenizer file that HF "
        "model folders ship",
        dir.string());
}

Tokenizer Tokenizer::load(const std::filesystem::path& dir) {
    const std::string tokenizer_json = read_tokenizer_json(dir);
    const auto config_path = dir / "tokenizer_config.json";
    const auto model_config_path = dir / "config.json";
    const std::string tc = std::filesystem::exists(config_path) ? read_file(config_path) : std::string();
    const std::string mc =
        std::filesystem::exists(model_config_path) ? read_file(model_config_path) : std::string();
    try {
        Tokenizer tok = from_json(tokenizer_json, tc, mc);
        const auto jinja = dir / "chat_template.jinja";
        if (std::filesystem::exists(jinja)) tok.impl_->chat_template = read_file(jinja);
        return tok;
    } catch (const phi::Error& e) {
        PHI_FAIL("cannot load the tokenizer in {}: {}", dir.string(), e.what());
    }
}

}  // namespace phi::tokenizer
