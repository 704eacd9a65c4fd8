// The start-up collectives of phi-worker: same build, one kernel ISA level, threads per rank.
#include "coordinator/app/launch_checks.h"

#include <elf.h>
#include <omp.h>
#include <link.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "cluster/step_plan.h"
#include "common/error.h"
#include "common/log.h"

namespace phi::app {

namespace {

using kernels::cpu::Isa;

// The main executable is the first object dl_iterate_phdr reports; its PT_NOTE segments hold the
// GNU build id note when the linker wrote one.
int find_build_id(dl_phdr_info* info, size_t, void* out) {
    auto* id = static_cast<uint64_t*>(out);
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_NOTE) continue;
        const char* p = reinterpret_cast<const char*>(info->dlpi_addr + ph.p_vaddr);
        const char* end = p + ph.p_memsz;
        auto align4 = [](size_t n) { return (n + 3) & ~size_t(3); };
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const auto* nh = reinterpret_cast<const ElfW(Nhdr)*>(p);
            const char* name = p + sizeof(ElfW(Nhdr));
            const char* desc = name + align4(nh->n_namesz);
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && std::string_view(name, 3) == "GNU" &&
                desc + nh->n_descsz <= end) {
                *id = fnv1a(desc, nh->n_descsz);
                return 1;
            }
            p = desc + align4(nh->n_descsz);
        }
    }
    return 1;  // only the main executable matters
}

uint64_t hash_of_own_file() {
    std::ifstream f("/proc/self/exe", std::ios::binary);
    PHI_CHECK(f.good(), "cannot read /proc/self/exe to identify this build");
    std::vector<char> buf(1 << 20);
    uint64_t h = fnv1a(nullptr, 0);
    while (f) {
        f.read(buf.data(), std::streamsize(buf.size()));
        h = fnv1a(buf.data(), size_t(f.gcount()), h);
    }
    return h;
}

std::string hex(uint64_t v) { return fmt::format("{:016x}", v); }

}  // namespace

uint64_t binary_build_id() {
    uint64_t id = 0;
    dl_iterate_phdr(find_build_id, &id);
    return id != 0 ? id : hash_of_own_file();
}

void check_same_build(const std::vector<uint64_t>& ids) {
    for (size_t r = 1; r < ids.size(); ++r)
        PHI_CHECK(ids[r] == ids[0],
                  "rank {} runs a different phi-worker build than rank 0 (build id {} vs {}): install the same "
                  "build on every node (the same binary, or one built from the same sources with the same flags)",
                  r, hex(ids[r]), hex(ids[0]));
}

void agree_on_build(Communicator& comm) {
    const uint64_t mine = binary_build_id();
    std::vector<uint64_t> ids(size_t(comm.size()));
    comm.all_gather_u64(&mine, 1, ids.data());
    check_same_build(ids);
}

IsaAgreement agree_isa(const std::vector<RankIsa>& ranks) {
    PHI_CHECK(!ranks.empty(), "agree_isa: no ranks");
    IsaAgreement a;
    a.isa = ranks[0].cap;
    a.features = ~uint64_t(0);
    for (const RankIsa& r : ranks) {
        a.isa = Isa(std::min(int(a.isa), int(r.cap)));
        a.features &= r.features;
    }
    // When some rank could run a higher level, name the ranks that hold the cluster back and why.
    std::string limited;
    const bool held_back = std::any_of(ranks.begin(), ranks.end(), [&](const RankIsa& r) { return r.cap != a.isa; });
    for (size_t r = 0; held_back && r < ranks.size(); ++r) {
        if (ranks[r].cap != a.isa) continue;
        const bool forced = ranks[r].cap != kernels::cpu::best_isa(ranks[r].features);
        limited += fmt::format("{}rank {} ({})", limited.empty() ? "" : ", ", r, forced ? "PHI_CPU_ISA" : "its CPU");
    }
    a.summary = fmt::format("kernel ISA {} on all {} rank(s); CPU features every rank has: {}",
                            kernels::cpu::isa_name(a.isa), ranks.size(), kernels::cpu::feature_names(a.features));
    if (!limited.empty()) a.summary += "; limited by " + limited;
    return a;
}

IsaAgreement agree_on_isa(Communicator& comm) {
    const uint64_t mine[2] = {kernels::cpu::cpu_features(), uint64_t(kernels::cpu::choose_isa())};
    std::vector<uint64_t> all(size_t(comm.size()) * 2);
    comm.all_gather_u64(mine, 2, all.data());
    std::vector<RankIsa> ranks(size_t(comm.size()));
    for (size_t r = 0; r < ranks.size(); ++r) ranks[r] = RankIsa{all[2 * r], Isa(int(all[2 * r + 1]))};
    return agree_isa(ranks);
}

ThreadPlan plan_threads(int threads_per_rank, int cpus, int sharing_ranks) {
    ThreadPlan p;
    p.cpus = std::max(1, cpus);
    p.sharing_ranks = std::max(1, sharing_ranks);
    p.threads = threads_per_rank > 0 ? threads_per_rank : std::max(1, p.cpus / p.sharing_ranks);
    if (int64_t(p.threads) * p.sharing_ranks > p.cpus) {
        p.warning = fmt::format(
            "{} thread(s) per rank x {} rank(s) on the {} CPU(s) of this rank's affinity mask: threads will "
            "share cores and run slower; start fewer ranks per node, bind each rank to its own cores "
            "(mpirun --map-by slot:PE=<threads> --bind-to core) or lower threads_per_rank",
            p.threads, p.sharing_ranks, p.cpus);
    }
    return p;
}

std::vector<uint64_t> affinity_mask() {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<uint64_t> words(CPU_SETSIZE / 64, 0);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
        // No mask to read: every online CPU.
        const long n = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
        for (long i = 0; i < n && i < CPU_SETSIZE; ++i) words[size_t(i / 64)] |= uint64_t(1) << (i % 64);
        return words;
    }
    for (int i = 0; i < CPU_SETSIZE; ++i)
        if (CPU_ISSET(i, &set)) words[size_t(i / 64)] |= uint64_t(1) << (i % 64);
    return words;
}

ThreadPlan plan_threads_for_rank(Communicator& comm, int threads_per_rank) {
    const std::vector<uint64_t> mask = affinity_mask();
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    // Per rank: the host's hash, then the mask words.
    const size_t stride = 1 + mask.size();
    std::vector<uint64_t> mine(stride);
    mine[0] = fnv1a(host, std::char_traits<char>::length(host));
    std::copy(mask.begin(), mask.end(), mine.begin() + 1);
    std::vector<uint64_t> all(stride * size_t(comm.size()));
    comm.all_gather_u64(mine.data(), int64_t(stride), all.data());
    int cpus = 0;
    for (uint64_t w : mask) cpus += __builtin_popcountll(w);
    int sharing = 0;
    for (int r = 0; r < comm.size(); ++r) {
        const uint64_t* other = all.data() + size_t(r) * stride;
        if (other[0] != mine[0]) continue;
        bool overlap = false;
        for (size_t i = 0; i < mask.size(); ++i) overlap = overlap || (other[1 + i] & mask[i]) != 0;
        sharing += overlap ? 1 : 0;
    }
    return plan_threads(threads_per_rank, cpus, sharing);
}

LaunchAgreement agree_at_launch(Communicator& comm, int threads_per_rank) {
    agree_on_build(comm);
    LaunchAgreement a{agree_on_isa(comm), plan_threads_for_rank(comm, threads_per_rank)};
    if (comm.rank() == 0) log().info("{}", a.isa.summary);
    log().info("rank {}: {} thread(s) ({} CPU(s) in its affinity mask, shared by {} rank(s) of this node)",
               comm.rank(), a.threads.threads, a.threads.cpus, a.threads.sharing_ranks);
    if (!a.threads.warning.empty()) log().warn("rank {}: {}", comm.rank(), a.threads.warning);
    omp_set_num_threads(a.threads.threads);
    return a;
}

}  // namespace phi::app
