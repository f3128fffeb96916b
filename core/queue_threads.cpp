// One thread per queue around a device's start and stop (queue_threads.h).
#include "core/queue_threads.h"

#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <pthread.h>

#include "core/log.h"

namespace userblk {

namespace {

/// What the serving thread waits for, written by the queue threads.
struct Progress {
    std::mutex m;
    std::condition_variable cv;
    unsigned ready = 0;
    unsigned ended = 0;
    bool failed = false;
    bool stop = false;
};

void run_one(const QueueThreads& spec, unsigned i, Progress& progress, Status& result) noexcept {
    // "copy-q3" in top, perf and /proc/PID/task/*/comm (at most 15 characters).
    const std::string thread_name = spec.name.substr(0, 8) + "-q" + std::to_string(i);
    pthread_setname_np(pthread_self(), thread_name.c_str());
    bool reported = false;
    auto ready = [&](const Status& st) {
        std::lock_guard lock(progress.m);
        if (reported) {
            return;
        }
        reported = true;
        progress.ready += 1;
        progress.failed = progress.failed || !st.ok();
        progress.cv.notify_all();
    };
    const std::string what = spec.name + ": queue " + std::to_string(i) + " failed";
    try {
        result = spec.run(i, ready);
    } catch (const std::exception& e) {
        result = Status::from_errno(EIO, what, e.what());
    } catch (...) {
        result = Status::from_errno(EIO, what, "unknown exception");
    }
    std::lock_guard lock(progress.m);
    if (!reported) {
        progress.ready += 1;
    }
    progress.ended += 1;
    progress.failed = progress.failed || !result.ok();
    progress.cv.notify_all();
}

} // namespace

QueuesServed serve_queues(const QueueThreads& spec, std::stop_token stop,
                          const std::function<void()>& ready) {
    const unsigned n = spec.nr_queues;
    std::vector<Status> results(n);
    Progress progress;
    QueuesServed out;
    {
        std::stop_callback on_stop(stop, [&progress] {
            std::lock_guard lock(progress.m);
            progress.stop = true;
            progress.cv.notify_all();
        });
        std::vector<std::jthread> threads;
        threads.reserve(n);
        try {
            for (unsigned i = 0; i < n; ++i) {
                threads.emplace_back([&spec, i, &progress, &result = results[i]] {
                    run_one(spec, i, progress, result);
                });
            }
        } catch (const std::exception& e) {
            out.status = Status::from_errno(EAGAIN, spec.name + ": cannot start the queue threads",
                                            e.what());
            std::lock_guard lock(progress.m);
            progress.failed = true;
        }
        // Every thread reports first: a stop aborts only what the queues have asked for before
        // it (ublk: the fetches), so it must not overtake one.
        bool go = false;
        {
            std::unique_lock lock(progress.m);
            progress.cv.wait(lock, [&] { return progress.ready >= threads.size(); });
            go = out.status.ok() && progress.ready == n && !progress.failed && !progress.stop;
        }
        if (go) {
            out.status = spec.start();
        }
        const bool started = go && out.status.ok();
        if (started && ready) {
            try {
                ready();
            } catch (const std::exception& e) {
                out.status = Status::from_errno(EIO, spec.name + ": ready callback failed",
                                                e.what());
            }
        }
        if (started && out.status.ok()) {
            // A stop of the device (ours or another's) ends every queue's loop, so once one
            // queue has ended the others follow.
            std::unique_lock lock(progress.m);
            progress.cv.wait(
                lock, [&] { return progress.ended == n || progress.failed || progress.stop; });
            out.ended_by_kernel = progress.ended == n && !progress.failed && !progress.stop;
        }
        if (!out.ended_by_kernel) {
            spec.halt();
        }
        // Leaving the scope joins every queue thread (std::jthread).
    }
    for (const Status& r : results) {
        if (r.ok()) {
            continue;
        }
        if (out.status.ok()) {
            out.status = r;
        } else {
            log_error("%s", r.message().c_str());
        }
    }
    return out;
}

Status serve_queues(const QueueThreads& spec, std::stop_token stop, const ReadyFn& ready,
                    const DeviceInfo& info, bool& ended_by_kernel) {
    QueuesServed served = serve_queues(spec, stop, [&] {
        if (ready) {
            ready(info);
        }
    });
    ended_by_kernel = served.ended_by_kernel;
    return served.status;
}

} // namespace userblk
