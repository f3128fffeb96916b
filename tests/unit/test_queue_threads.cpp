// serve_queues (core/queue_threads.h): the order of start, ready and halt around the queue
// threads, with queues that a fake device ends.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <stop_token>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/queue_threads.h"

namespace userblk {
namespace {

/// A device whose queues block until it is stopped, as read() of a queue fd does.
struct FakeDevice {
    std::mutex m;
    std::condition_variable cv;
    bool stopped = false;
    std::vector<std::string> events;

    void record(const std::string& e) {
        std::lock_guard lock(m);
        events.push_back(e);
    }
    Status wait_for_stop() {
        std::unique_lock lock(m);
        cv.wait(lock, [&] { return stopped; });
        return {};
    }
    void stop() {
        std::lock_guard lock(m);
        stopped = true;
        events.emplace_back("halt");
        cv.notify_all();
    }
};

QueueThreads spec_for(FakeDevice& dev, unsigned n) {
    return QueueThreads{
        .name = "fake",
        .nr_queues = n,
        .run = [&dev](unsigned, const QueueThreads::Ready& ready) {
            ready({});
            return dev.wait_for_stop();
        },
        .start = [&dev] {
            dev.record("start");
            return Status{};
        },
        .halt = [&dev] { dev.stop(); },
    };
}

TEST(QueueThreads, AStopHaltsTheDeviceAndEveryQueueEnds) {
    FakeDevice dev;
    std::stop_source source;
    QueuesServed served = serve_queues(spec_for(dev, 3), source.get_token(), [&] {
        dev.record("ready");
        source.request_stop();
    });
    EXPECT_TRUE(served.status.ok()) << served.status.message();
    EXPECT_FALSE(served.ended_by_kernel);
    EXPECT_EQ(dev.events, (std::vector<std::string>{"start", "ready", "halt"}));
}

TEST(QueueThreads, QueuesThatEndByThemselvesAreNotHalted) {
    FakeDevice dev;
    QueueThreads spec = spec_for(dev, 2);
    // Someone else stops the device once it runs.
    QueuesServed served = serve_queues(spec, {}, [&] {
        std::lock_guard lock(dev.m);
        dev.stopped = true;
        dev.cv.notify_all();
    });
    EXPECT_TRUE(served.status.ok());
    EXPECT_TRUE(served.ended_by_kernel);
    EXPECT_EQ(dev.events, (std::vector<std::string>{"start"}));
}

TEST(QueueThreads, AQueueThatCannotBeReadyStopsTheDeviceBeforeItStarts) {
    FakeDevice dev;
    QueueThreads spec = spec_for(dev, 3);
    spec.run = [&dev](unsigned i, const QueueThreads::Ready& ready) -> Status {
        if (i == 1) {
            Status bad = Status::from_errno(EIO, "fetch", "refused");
            ready(bad);
            return bad;
        }
        ready({});
        return dev.wait_for_stop();
    };
    bool called = false;
    QueuesServed served = serve_queues(spec, {}, [&] { called = true; });
    EXPECT_EQ(served.status.error_number(), EIO);
    EXPECT_FALSE(called);
    EXPECT_EQ(dev.events, (std::vector<std::string>{"halt"}));
}

TEST(QueueThreads, AnExceptionInAQueueIsItsFailureAndHaltsTheDevice) {
    FakeDevice dev;
    QueueThreads spec = spec_for(dev, 2);
    std::atomic<bool> throw_now{false};
    spec.run = [&](unsigned i, const QueueThreads::Ready& ready) -> Status {
        ready({});
        if (i == 0) {
            while (!throw_now.load()) {
                std::this_thread::yield();
            }
            throw std::runtime_error("backend exploded");
        }
        return dev.wait_for_stop();
    };
    QueuesServed served = serve_queues(spec, {}, [&] { throw_now = true; });
    EXPECT_EQ(served.status.error_number(), EIO);
    EXPECT_NE(served.status.message().find("backend exploded"), std::string::npos);
    EXPECT_NE(served.status.message().find("fake: queue 0 failed"), std::string::npos);
    EXPECT_FALSE(served.ended_by_kernel);
    EXPECT_EQ(dev.events, (std::vector<std::string>{"start", "halt"}));
}

TEST(QueueThreads, AFailedStartHaltsAndIsTheResult) {
    FakeDevice dev;
    QueueThreads spec = spec_for(dev, 2);
    spec.start = [] { return Status::from_errno(EBUSY, "START_DEV", "busy"); };
    bool called = false;
    QueuesServed served = serve_queues(spec, {}, [&] { called = true; });
    EXPECT_EQ(served.status.error_number(), EBUSY);
    EXPECT_FALSE(called);
    EXPECT_EQ(dev.events, (std::vector<std::string>{"halt"}));
}

} // namespace
} // namespace userblk
