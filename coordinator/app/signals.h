// The one signal rule of server mode, at every rank:
//  - SIGTERM or SIGINT means teardown: the cluster is going down now (mpirun sends SIGTERM to the
//    surviving ranks when one dies, and a few seconds later SIGKILL). Rank 0 fails every client at
//    once, then exits non-zero; other ranks exit non-zero at once.
//  - SIGUSR1 means drain (rank 0 only; other ranks ignore it and wait for rank 0's shutdown plan).
//    scripts/mpirun.sh turns the operator's SIGTERM into SIGUSR1; with plain mpirun,
//    `kill -USR1 <mpirun pid>` drains.
// The signals are blocked in every thread (phi-worker's main blocks them before MPI starts its
// threads) and taken here by one thread with sigwait, so handlers may do anything.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <functional>
#include <thread>

namespace phi::app {

/// The signals this watcher takes; block them in every thread before starting any.
sigset_t shutdown_signals();

class SignalWatcher {
public:
    /// `on_teardown(sig)` for SIGTERM/SIGINT and `on_drain()` for SIGUSR1 run on the watcher's own
    /// thread; either may be empty (the signal is then ignored).
    SignalWatcher(std::function<void(int)> on_teardown, std::function<void()> on_drain);
    ~SignalWatcher();
    SignalWatcher(const SignalWatcher&) = delete;
    SignalWatcher& operator=(const SignalWatcher&) = delete;

private:
    std::function<void(int)> on_teardown_;
    std::function<void()> on_drain_;
    std::atomic<bool> stopping_{false};
    std::thread thread_;
};

}  // namespace phi::app
