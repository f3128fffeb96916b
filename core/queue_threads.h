// The per-queue skeleton that every transport with one thread per hardware queue shares: the
// userblk.ko modes (transports/kmod) and the ublk baseline.
#pragma once

#include <functional>
#include <stop_token>
#include <string>

#include "core/status.h"
#include "core/transport.h"

namespace userblk {

/// What serve_queues() drives: n queues, each served on its own thread by run(), and the
/// device's start and stop around them.
struct QueueThreads {
    /// Names the threads "<name>-q<i>" (shortened to the 15 characters a thread name holds).
    std::string name;
    unsigned nr_queues = 0;
    /// Tells the serving thread that queue i is ready for the device to start (ublk: every tag
    /// fetched), or that it cannot be (a failed status). Called at most once per queue.
    using Ready = std::function<void(const Status&)>;
    /// Serves queue i until the device ends (success) or a fatal error; must call ready once
    /// it can take requests. Exceptions are caught and become the queue's failure.
    std::function<Status(unsigned i, const Ready& ready)> run;
    /// Starts the device once every queue is ready (START_DEV).
    std::function<Status()> start;
    /// Stops the device so that every run() returns (STOP_DEV). Called by the serving thread
    /// only, never by a queue's: a stop that waits for requests in flight must not wait on the
    /// thread that would answer them.
    std::function<void()> halt;
};

/// The result of serve_queues().
struct QueuesServed {
    /// The first failure (start, the ready callback, then the queues in order); the others are
    /// logged.
    Status status;
    /// Every queue ended by itself, with no failure and no stop asked: someone else stopped or
    /// deleted the device.
    bool ended_by_kernel = false;
};

/// Starts one thread per queue, waits until each is ready (or has failed or ended), calls
/// spec.start and then ready (the device is visible), and waits until every queue has ended, one
/// has failed, or stop is requested; unless every queue ended by itself, spec.halt; then joins
/// the threads.
QueuesServed serve_queues(const QueueThreads& spec, std::stop_token stop,
                          const std::function<void()>& ready);

/// The same, as a Transport::serve() ends: calls ready(info), if ready is set, once the device
/// is visible; sets ended_by_kernel from the result and returns its status.
Status serve_queues(const QueueThreads& spec, std::stop_token stop, const ReadyFn& ready,
                    const DeviceInfo& info, bool& ended_by_kernel);

} // namespace userblk
