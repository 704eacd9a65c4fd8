// Runs a test body on N in-process ranks (ThreadCommunicator), as the MPI tests run N processes.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "cluster/thread_communicator.h"

namespace phi::test {

/// Runs body(comm) on N threads, one ThreadCommunicator each. The first exception of any rank
/// aborts the group (so the others stop instead of waiting out their deadline) and is rethrown.
inline void run_ranks(int n, const std::function<void(ThreadCommunicator&)>& body) {
    auto group = std::make_shared<ThreadGroup>(n);
    std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
    std::vector<std::thread> threads;
    for (int r = 0; r < n; ++r) {
        threads.emplace_back([&, r] {
            try {
                ThreadCommunicator comm(group, r);
                comm.set_timeout(std::chrono::milliseconds(60000));
                body(comm);
            } catch (const std::exception& e) {
                errors[size_t(r)] = std::current_exception();
                group->abort(fmt::format("rank {} failed: {}", r, e.what()));
            }
        });
    }
    for (auto& t : threads) t.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

}  // namespace phi::test
