#include "coordinator/app/signals.h"

#include "common/log.h"

namespace phi::app {

sigset_t shutdown_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    return set;
}

SignalWatcher::SignalWatcher(std::function<void(int)> on_teardown, std::function<void()> on_drain)
    : on_teardown_(std::move(on_teardown)), on_drain_(std::move(on_drain)) {
    const sigset_t sigs = shutdown_signals();
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);  // this thread, and so the watcher, inherit it
    thread_ = std::thread([this, sigs] {
        for (;;) {
            int sig = 0;
            if (sigwait(&sigs, &sig) != 0) continue;
            if (stopping_.load()) return;  // the destructor's wake-up
            if (sig == SIGUSR1) {
                if (on_drain_) on_drain_();
            } else if (on_teardown_) {
                on_teardown_(sig);
            }
        }
    });
}

SignalWatcher::~SignalWatcher() {
    stopping_ = true;
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
}

}  // namespace phi::app
