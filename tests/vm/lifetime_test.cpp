// Lifetimes at the kernel boundary when user space races itself or stalls: devices added,
// deleted and opened from several threads at once; a request held by a system call while the
// daemon's memory or a tag's pipe does not move; answers and data transfers meant for an
// earlier request on a tag; what the ring mapping lets a daemon (and its children) do; who may
// act on a device. Each test is named after what it reproduces, and failed (or oopsed the
// kernel) before userblk.ko was fixed for it.
//
// Runs as root where userblk.ko is loaded (suite.py runs it once per transport):
//   userblk_lifetime_test --transport=copy
// Exit 77 (skip) when /dev/userblk-control is missing.

#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <uapi/userblk.h>

#include "served_device.h"
#include "stall.h"

namespace {

using namespace userblk_test;
using namespace std::chrono_literals;

// The possible CPUs (nr_cpu_ids): blk-mq maps no more hardware queues than these.
unsigned possible_cpus() {
    std::ifstream f("/sys/devices/system/cpu/possible");
    std::string s;
    f >> s; // "0-1" or "0"
    auto dash = s.find('-');
    return dash == std::string::npos ? 1u : unsigned(std::stoul(s.substr(dash + 1)) + 1);
}

// -- 1: ADD_DEV published a half-built device ---------------------------------------------

// Two threads ADD_DEV one id (a quarter of the time with the reply in a read-only page, so
// that the reply's copy fails after the id was taken) while others DEL_DEV it, GET_INFO it and
// OPEN_QUEUE + START_DEV it. Before the fix this oopsed in userblk_abort_all within seconds.
TEST_F(ControlTest, AddDevRacingDelDevGetInfoAndOpenQueueOfOneId) {
    const uint32_t mode = mode_of(g_transport);
    const uint32_t id = 700 + mode;
    const long page = ::sysconf(_SC_PAGESIZE);
    auto* ro = static_cast<userblk_dev_config*>(
        ::mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(ro, MAP_FAILED);
    *ro = good_config(mode);
    ro->dev_id = id;
    ASSERT_EQ(::mprotect(ro, page, PROT_READ), 0);

    std::atomic<bool> stop{false};
    std::atomic<unsigned> added{0}, efault{0}, unexpected{0};
    std::atomic<int> last_unexpected{0};
    auto expect_one_of = [&](int r, std::initializer_list<int> ok) {
        for (int e : ok)
            if (r == e)
                return;
        unexpected++;
        last_unexpected = r;
    };
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; t++) {
        threads.emplace_back([&, t] {
            for (unsigned i = 0; !stop.load(); i++) {
                if ((i + t) % 4 == 0) {
                    int r = xioctl(ctl_.get(), USERBLK_IOC_ADD_DEV, ro);
                    expect_one_of(r, {-EFAULT, -EEXIST});
                    efault += r == -EFAULT;
                } else {
                    userblk_dev_config c = good_config(mode);
                    c.dev_id = id;
                    int r = xioctl(ctl_.get(), USERBLK_IOC_ADD_DEV, &c);
                    expect_one_of(r, {0, -EEXIST, -ENOMEM});
                    added += r == 0;
                }
            }
        });
    }
    threads.emplace_back([&] {
        while (!stop.load()) {
            int r = xioctl(ctl_.get(), USERBLK_IOC_DEL_DEV, (unsigned long)id);
            expect_one_of(r, {0, -ENODEV});
            r = xioctl(ctl_.get(), USERBLK_IOC_STOP_DEV, (unsigned long)id);
            expect_one_of(r, {0, -ENODEV});
        }
    });
    threads.emplace_back([&] {
        while (!stop.load()) {
            userblk_dev_config info{};
            info.abi_version = USERBLK_ABI_VERSION;
            info.dev_id = id;
            expect_one_of(xioctl(ctl_.get(), USERBLK_IOC_GET_INFO, &info), {0, -ENODEV});
            Fd q(open_queue(id, 0));
            if (q.get() < 0) {
                expect_one_of(q.get(), {-ENODEV, -EBUSY, -ESHUTDOWN});
                continue;
            }
            // A pipe device cannot start without its pipes; that is its own test.
            int r = xioctl(ctl_.get(), USERBLK_IOC_START_DEV, (unsigned long)id);
            expect_one_of(r, {0, -ENODEV, -EBUSY, -ENOTCONN});
        }
    });
    std::this_thread::sleep_for(3s);
    stop = true;
    for (auto& t : threads)
        t.join();
    xioctl(ctl_.get(), USERBLK_IOC_DEL_DEV, (unsigned long)id);
    ::munmap(ro, page);
    EXPECT_EQ(unexpected.load(), 0u) << "last unexpected result " << last_unexpected.load();
    EXPECT_GT(added.load(), 0u) << "the race never added the device";
    EXPECT_GT(efault.load(), 0u) << "no reply ever failed";
}

// -- 2: ring overwrote a tag's buffer after the device died -------------------------------

TEST_F(ServedDevice, RingLeavesATagsBufferAloneOnceTheDeviceIsDead) {
    if (mode_ != USERBLK_MODE_RING)
        GTEST_SKIP() << "the per-tag buffers are ring's";
    bring_up(1, USERBLK_MIN_TIMEOUT_MS * 2);
    Aligned a(kBlock), b(kBlock);
    auto pa = pattern(kBlock, 1), pb = pattern(kBlock, 2);
    std::memcpy(a.data, pa.data(), kBlock);
    std::memcpy(b.data, pb.data(), kBlock);
    auto first = io_async(path_, true, 0, a.data, kBlock);
    pollfd p{q_.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10000), 1);
    ASSERT_EQ(std::memcmp(ring_buf(0), pa.data(), kBlock), 0) << "the WRITE's data is in tag 0";
    // The daemon never answers: the timeout kills the device, and a late daemon may still be
    // writing tag 0's buffer out to offset 0.
    ASSERT_EQ(first.wait_for(30s), std::future_status::ready);
    EXPECT_LT(first.get(), 0);
    auto second = io_async(path_, true, 8192, b.data, kBlock); // gets tag 0 again
    ASSERT_EQ(second.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(second.get(), -EIO);
    EXPECT_EQ(std::memcmp(ring_buf(0), pa.data(), kBlock), 0)
        << "a request of the dead device overwrote the buffer of a request it gave up on";
}

// -- 3: a request held by a system call never timed out -----------------------------------

// The daemon's read() of descriptors (copy: with a WRITE's data; pipe: the descriptor alone)
// or its pread() of the data fd (splice) copies into memory whose pages wait on a
// userfaultfd. The I/O must still fail within its timeout, DEL_DEV return, and another device
// serve I/O and ioctls meanwhile. Before the fix the request stayed held and the I/O hung.
TEST_F(ServedDevice, ARequestHeldInACopyToAStalledBufferStillTimesOut) {
    if (mode_ == USERBLK_MODE_RING)
        GTEST_SKIP() << "ring copies between kernel pages only";
    const uint32_t timeout_ms = 1000;
    bring_up(1, timeout_ms);
    StallingMemory stalled(2 << 20);
    if (!stalled.ok())
        GTEST_SKIP() << stalled.error();

    Aligned src(kBlock);
    std::memcpy(src.data, pattern(kBlock, 3).data(), kBlock);
    auto t0 = std::chrono::steady_clock::now();
    auto io = io_async(path_, true, 0, src.data, kBlock);
    std::future<ssize_t> daemon;
    if (mode_ == USERBLK_MODE_SPLICE) {
        userblk_io_desc d = next_request();
        daemon = std::async(std::launch::async, [&, d] {
            ssize_t r = ::pread(data_.get(), stalled.data(), d.len,
                                USERBLK_SPLICE_OFF(d.tag, d.gen, 0));
            return r < 0 ? (ssize_t)-errno : r;
        });
    } else {
        pollfd p{q_.get(), POLLIN, 0};
        ASSERT_EQ(::poll(&p, 1, 10000), 1);
        daemon = std::async(std::launch::async, [&] {
            ssize_t r = ::read(q_.get(), stalled.data(), stalled.size());
            return r < 0 ? (ssize_t)-errno : r;
        });
    }
    ASSERT_TRUE(stalled.wait_for_stall(10s)) << "the copy never touched the stalled buffer";

    // Another device goes on meanwhile.
    userblk_dev_config other = good_config(mode_);
    other.queue_depth = 1;
    ASSERT_EQ(add(other), 0);
    userblk_dev_config info{};
    info.abi_version = USERBLK_ABI_VERSION;
    info.dev_id = other.dev_id;
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_GET_INFO, &info), 0);

    bool timed_out = io.wait_for(std::chrono::milliseconds(timeout_ms) + 15s) ==
                     std::future_status::ready;
    auto elapsed = std::chrono::steady_clock::now() - t0;
    if (!timed_out)
        stalled.release(); // let the stuck request go, so that the test can end
    ASSERT_TRUE(timed_out) << "the I/O outlived its timeout of " << timeout_ms << " ms by 15 s";
    EXPECT_LT(io.get(), 0);
    EXPECT_LT(elapsed, std::chrono::milliseconds(timeout_ms) + 15s);
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_DEAD);

    auto del = std::async(std::launch::async, [&] {
        return xioctl(ctl_.get(), USERBLK_IOC_DEL_DEV, (unsigned long)cfg_.dev_id);
    });
    bool deleted = del.wait_for(15s) == std::future_status::ready;
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_GET_INFO, &info), 0) << "the other device's ioctls";
    stalled.release();
    ASSERT_TRUE(deleted) << "DEL_DEV of the stalled device did not return";
    EXPECT_EQ(del.get(), 0);
    added_.erase(added_.begin());
    ASSERT_EQ(daemon.wait_for(10s), std::future_status::ready);
    ssize_t r = daemon.get();
    EXPECT_TRUE(r == 0 || r == -ENODEV || r == -ENOENT) << "the daemon's call returned " << r;
}

// A daemon thread holds a tag's pipe (splicing it into a socket that does not drain). The
// kernel must not wait for the pipe: the WRITE fails at once. Before the fix the read() that
// hands out the WRITE blocked on the pipe's mutex, holding the request past every timeout.
TEST_F(ServedDevice, APipeThatAnotherThreadHoldsFailsTheRequestAtOnce) {
    if (mode_ != USERBLK_MODE_PIPE)
        GTEST_SKIP() << "the tags' pipes are pipe's";
    bring_up(1, 20000);
    PipeHolder hold(pipes_[0].r.get(), pipes_[0].w.get());
    ASSERT_TRUE(hold.ok()) << hold.error();
    Aligned src(kBlock);
    auto io = io_async(path_, true, 0, src.data, kBlock);
    pollfd p{q_.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10000), 1);
    int fl = ::fcntl(q_.get(), F_GETFL);
    ASSERT_EQ(::fcntl(q_.get(), F_SETFL, fl | O_NONBLOCK), 0);
    auto reader = std::async(std::launch::async, [&] {
        userblk_io_desc d{};
        ssize_t r = ::read(q_.get(), &d, sizeof(d));
        return r < 0 ? (ssize_t)-errno : r;
    });
    bool returned = reader.wait_for(5s) == std::future_status::ready;
    if (!returned)
        hold.release();
    ASSERT_TRUE(returned) << "read() of the queue fd waits for the daemon's pipe";
    EXPECT_EQ(reader.get(), -EAGAIN) << "the WRITE was not handed out";
    ASSERT_EQ(io.wait_for(5s), std::future_status::ready);
    EXPECT_EQ(io.get(), -EIO);
    hold.release();
}

// -- 4: pipe left a failed request's bytes for the tag's next READ ------------------------

// A WRITE of 8 KiB into a tag's pipe of one page fails; a READ on the same tag answered 0
// without any data must then fail too. Before the fix the WRITE's first page stayed in the
// pipe and the READ returned it as its data.
TEST_F(ServedDevice, APartialPipeWriteLeavesNothingForTheTagsNextRead) {
    if (mode_ != USERBLK_MODE_PIPE)
        GTEST_SKIP() << "the tags' pipes are pipe's";
    bring_up(1, 20000);
    const long page = ::sysconf(_SC_PAGESIZE);
    ASSERT_GE(::fcntl(pipes_[0].w.get(), F_SETPIPE_SZ, (int)page), page);
    Aligned src(2 * kBlock), dst(kBlock);
    std::memcpy(src.data, pattern(2 * kBlock, 4).data(), 2 * kBlock);
    auto w = io_async(path_, true, 0, src.data, 2 * kBlock);
    pollfd p{q_.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10000), 1);
    int fl = ::fcntl(q_.get(), F_GETFL);
    ASSERT_EQ(::fcntl(q_.get(), F_SETFL, fl | O_NONBLOCK), 0);
    userblk_io_desc d0{};
    EXPECT_EQ(::read(q_.get(), &d0, sizeof(d0)), -1) << "the WRITE was not handed out";
    EXPECT_EQ(errno, EAGAIN);
    ASSERT_EQ(::fcntl(q_.get(), F_SETFL, fl), 0);
    ASSERT_EQ(w.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(w.get(), -EIO) << "8 KiB cannot go into a pipe of one page";
    char c;
    EXPECT_EQ(::read(pipes_[0].r.get(), &c, 1), -1) << "nothing of the failed WRITE is left";
    EXPECT_EQ(errno, EAGAIN);

    std::memset(dst.data, 0, kBlock);
    auto r = io_async(path_, false, 0, dst.data, kBlock);
    userblk_io_desc d = next_request();
    ASSERT_EQ(d.op, USERBLK_OP_READ);
    ASSERT_EQ(answer(d, 0), (ssize_t)sizeof(userblk_io_cpl));
    ASSERT_EQ(r.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(r.get(), -EIO) << "a READ answered without data read someone else's bytes";
}

// Stale bytes the daemon left in a tag's pipe (it answered a READ with an error after writing
// its data) never pass for the next request's data.
TEST_F(ServedDevice, BytesLeftInATagsPipeNeverPassForTheNextReadsData) {
    if (mode_ != USERBLK_MODE_PIPE)
        GTEST_SKIP() << "the tags' pipes are pipe's";
    bring_up(1, 20000);
    Aligned dst(kBlock);
    auto stale = pattern(kBlock, 5);
    auto r1 = io_async(path_, false, 0, dst.data, kBlock);
    userblk_io_desc d = next_request();
    ASSERT_EQ(::write(pipes_[0].w.get(), stale.data(), kBlock), (ssize_t)kBlock);
    ASSERT_EQ(answer(d, -EIO), (ssize_t)sizeof(userblk_io_cpl));
    EXPECT_EQ(r1.get(), -EIO);
    // The next READ on the tag is answered 0 without data: it must fail, not read `stale`.
    auto r2 = io_async(path_, false, 0, dst.data, kBlock);
    pollfd p{q_.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10000), 1);
    int fl = ::fcntl(q_.get(), F_GETFL);
    ASSERT_EQ(::fcntl(q_.get(), F_SETFL, fl | O_NONBLOCK), 0); // it may fail as it is handed out
    userblk_io_desc d2{};
    ssize_t n = ::read(q_.get(), &d2, sizeof(d2));
    if (n == (ssize_t)sizeof(d2)) {
        EXPECT_EQ(answer(d2, 0), (ssize_t)sizeof(userblk_io_cpl));
    }
    ASSERT_EQ(r2.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(r2.get(), -EIO);
}

// -- 5: the generation was per request, not per tag ----------------------------------------

// With an I/O scheduler two requests take turns on the one tag of a queue of depth 1. The
// answer to the first, sent again while the second is out, must be refused. Before the fix
// both requests carried gen 1, 2, ... in step, and the repeated answer completed the second.
TEST_F(ServedDevice, ARepeatedAnswerForTheTagsLastRequestIsRefusedWithAScheduler) {
    if (mode_ != USERBLK_MODE_COPY)
        GTEST_SKIP() << "one body is enough: the gens are the core's (copy's format is simplest)";
    bring_up(1, 20000);
    std::string sched = "/sys/block/" USERBLK_DISK_PREFIX + std::to_string(cfg_.dev_id) +
                        "/queue/scheduler";
    {
        std::ofstream f(sched);
        f << "mq-deadline";
    }
    std::string now;
    {
        std::ifstream f(sched);
        std::getline(f, now);
    }
    if (now.find("[mq-deadline]") == std::string::npos)
        GTEST_SKIP() << "no mq-deadline here (" << now << ")";
    auto data = pattern(kBlock, 6);
    for (int round = 0; round < 6; round++) {
        Aligned a(kBlock), b(kBlock);
        auto ra = io_async(path_, false, 0, a.data, kBlock);
        auto rb = io_async(path_, false, 65536, b.data, kBlock);
        userblk_io_desc d1 = next_request();
        ASSERT_EQ(answer(d1, 0, data.data(), kBlock), (ssize_t)(sizeof(userblk_io_cpl) + kBlock));
        userblk_io_desc d2 = next_request();
        EXPECT_EQ(d2.tag, d1.tag);
        EXPECT_NE(d2.gen, d1.gen) << "round " << round << ": two requests, one (tag, gen)";
        EXPECT_EQ(answer(d1, -EIO), -ENOENT) << "round " << round << ": the repeated answer";
        ASSERT_EQ(answer(d2, 0, data.data(), kBlock), (ssize_t)(sizeof(userblk_io_cpl) + kBlock));
        EXPECT_EQ(ra.get(), (ssize_t)kBlock);
        EXPECT_EQ(rb.get(), (ssize_t)kBlock);
    }
}

// -- 6: splice data-fd offsets named only the tag -----------------------------------------

// A late pread meant for the tag's previous WRITE must not read the next WRITE's data.
TEST_F(ServedDevice, ALateTransferForTheTagsLastRequestMovesNothingOfTheNext) {
    if (mode_ != USERBLK_MODE_SPLICE)
        GTEST_SKIP() << "the data fd is splice's";
    bring_up(1, 20000);
    Aligned s1(kBlock), s2(kBlock);
    std::memcpy(s1.data, pattern(kBlock, 7).data(), kBlock);
    auto p2 = pattern(kBlock, 8);
    std::memcpy(s2.data, p2.data(), kBlock);
    auto w1 = io_async(path_, true, 0, s1.data, kBlock);
    userblk_io_desc d1 = next_request();
    std::vector<char> got(kBlock);
    ASSERT_EQ(::pread(data_.get(), got.data(), kBlock, USERBLK_SPLICE_OFF(d1.tag, d1.gen, 0)),
              (ssize_t)kBlock);
    ASSERT_EQ(answer(d1, 0), (ssize_t)sizeof(userblk_io_cpl));
    EXPECT_EQ(w1.get(), (ssize_t)kBlock);

    auto w2 = io_async(path_, true, 0, s2.data, kBlock);
    userblk_io_desc d2 = next_request();
    ASSERT_EQ(d2.tag, d1.tag);
    std::fill(got.begin(), got.end(), 0);
    errno = 0;
    ssize_t late = ::pread(data_.get(), got.data(), kBlock, USERBLK_SPLICE_OFF(d1.tag, d1.gen, 0));
    EXPECT_EQ(late, -1) << "the late pread read "
                        << (std::memcmp(got.data(), p2.data(), kBlock) == 0 ? "the next WRITE's data"
                                                                           : "something");
    EXPECT_EQ(errno, ENOENT);
    ASSERT_EQ(answer(d2, 0), (ssize_t)sizeof(userblk_io_cpl));
    EXPECT_EQ(w2.get(), (ssize_t)kBlock);
}

// -- 7: read() looked at a request after handing it over -----------------------------------

// read() of a WRITE stalls in the copy of its data; the device is stopped meanwhile. read()
// must then say end of file: the request failed, and its descriptor is not the daemon's to
// see. Before the fix read() returned the descriptor of the failed request without its data
// (the request, ended, had no bytes left), a batch no daemon can parse.
TEST_F(ServedDevice, AReadThatStallsAndSeesTheDeviceStoppedHandsOutNothing) {
    if (mode_ != USERBLK_MODE_COPY)
        GTEST_SKIP() << "inline data is copy's";
    bring_up(1, 20000);
    StallingMemory stalled(2 << 20);
    if (!stalled.ok())
        GTEST_SKIP() << stalled.error();
    Aligned src(kBlock);
    auto io = io_async(path_, true, 0, src.data, kBlock);
    pollfd p{q_.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10000), 1);
    auto reader = std::async(std::launch::async, [&] {
        ssize_t r = ::read(q_.get(), stalled.data(), stalled.size());
        return r < 0 ? (ssize_t)-errno : r;
    });
    ASSERT_TRUE(stalled.wait_for_stall(10s));
    ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_STOP_DEV, (unsigned long)cfg_.dev_id), 0);
    bool failed_at_once = io.wait_for(5s) == std::future_status::ready;
    stalled.release();
    EXPECT_TRUE(failed_at_once) << "STOP_DEV passed over the request in the stalled copy";
    ASSERT_EQ(reader.wait_for(10s), std::future_status::ready);
    ssize_t n = reader.get();
    EXPECT_EQ(n, 0) << "read() after the stop returned " << n << " bytes";
    EXPECT_EQ(io.get(), -EIO);
}

// -- 8: least privilege ---------------------------------------------------------------------

// A child process (not the one that added the device) may look at it, but not open its
// queues, stop or delete it, unless it says USERBLK_CTL_FORCE or the device lets any daemon in.
TEST_F(ControlTest, AnotherProcessMayNotOpenStopOrDeleteADeviceWithoutForce) {
    userblk_dev_config mine = good_config(mode_of(g_transport));
    ASSERT_EQ(add(mine), 0);
    userblk_dev_config shared = good_config(mode_of(g_transport));
    shared.features = USERBLK_F_ANY_DAEMON;
    ASSERT_EQ(add(shared), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        int ctl = ::open(USERBLK_CONTROL_PATH, O_RDWR | O_CLOEXEC);
        userblk_dev_config info{};
        info.abi_version = USERBLK_ABI_VERSION;
        info.dev_id = mine.dev_id;
        userblk_queue_open qo{};
        qo.dev_id = mine.dev_id;
        int code = 0;
        if (xioctl(ctl, USERBLK_IOC_GET_INFO, &info) != 0)
            code |= 1;
        if (xioctl(ctl, USERBLK_IOC_OPEN_QUEUE, &qo) != -EPERM)
            code |= 2;
        if (xioctl(ctl, USERBLK_IOC_START_DEV, (unsigned long)mine.dev_id) != -EPERM)
            code |= 4;
        if (xioctl(ctl, USERBLK_IOC_STOP_DEV, (unsigned long)mine.dev_id) != -EPERM)
            code |= 8;
        if (xioctl(ctl, USERBLK_IOC_DEL_DEV, (unsigned long)mine.dev_id) != -EPERM)
            code |= 16;
        qo.dev_id = shared.dev_id;
        int q = xioctl(ctl, USERBLK_IOC_OPEN_QUEUE, &qo);
        if (q < 0)
            code |= 32;
        if (xioctl(ctl, USERBLK_IOC_STOP_DEV, (unsigned long)mine.dev_id | USERBLK_CTL_FORCE) != 0)
            code |= 64;
        ::_exit(code);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0)
        << "1 GET_INFO failed, 2 OPEN_QUEUE, 4 START, 8 STOP, 16 DEL not refused, "
           "32 OPEN_QUEUE of an any-daemon device refused, 64 STOP with FORCE refused";
    EXPECT_EQ(state_of(mine.dev_id), (uint32_t)USERBLK_STATE_DEAD) << "stopped by FORCE";
}

// The ring's read-only part cannot be made writable, nothing of it is executable, and a child
// of the daemon inherits none of the mapping.
TEST_F(ServedDevice, TheRingsKernelPartStaysReadOnlyAndIsNotInheritedByFork) {
    if (mode_ != USERBLK_MODE_RING)
        GTEST_SKIP() << "the mapping is ring's";
    bring_up(4, 20000);
    EXPECT_EQ(::mprotect(area_, l_.rw_off, PROT_READ | PROT_WRITE), -1);
    EXPECT_EQ(errno, EACCES);
    EXPECT_EQ(::mprotect(area_ + l_.rw_off, l_.map_size - l_.rw_off, PROT_READ | PROT_EXEC), -1);
    EXPECT_EQ(errno, EACCES);
    for (size_t at : {size_t{0}, size_t(l_.rw_off)}) {
        pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            volatile char c = area_[at]; // faults: the child has no such mapping
            (void)c;
            ::_exit(0);
        }
        int status = 0;
        ASSERT_EQ(::waitpid(pid, &status, 0), pid);
        EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV)
            << "a child read the ring area at " << at;
    }
}

// -- 9: smaller things ----------------------------------------------------------------------

// A FUA write and a zeroing that must keep its blocks reach the daemon with their flags.
TEST_F(ServedDevice, FuaAndNoUnmapReachTheDaemon) {
    if (mode_ != USERBLK_MODE_COPY)
        GTEST_SKIP() << "one body is enough: the flags are the core's";
    bring_up(1, 20000, USERBLK_F_FLUSH | USERBLK_F_FUA | USERBLK_F_WRITE_ZEROES);
    // Answers every request (0) until call() returns; the descriptors it saw.
    auto serve = [this](auto call) {
        auto f = std::async(std::launch::async, call);
        std::vector<userblk_io_desc> seen;
        while (f.wait_for(10ms) != std::future_status::ready) {
            pollfd p{q_.get(), POLLIN, 0};
            if (::poll(&p, 1, 100) != 1)
                continue;
            userblk_io_desc d = next_request();
            seen.push_back(d);
            EXPECT_EQ(answer(d, 0), (ssize_t)sizeof(userblk_io_cpl));
        }
        EXPECT_EQ(f.get(), 0);
        return seen;
    };
    auto has = [](const std::vector<userblk_io_desc>& seen, uint8_t op, uint8_t flag, bool set) {
        for (const auto& d : seen)
            if (d.op == op && ((d.flags & flag) != 0) == set)
                return true;
        return false;
    };
    Aligned src(kBlock);
    auto fua = serve([&] {
        int fd = ::open(path_.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
        iovec v{src.data, kBlock};
        ssize_t r = ::pwritev2(fd, &v, 1, 0, RWF_DSYNC);
        int err = r == (ssize_t)kBlock ? 0 : -errno;
        ::close(fd);
        return err;
    });
    EXPECT_TRUE(has(fua, USERBLK_OP_WRITE, USERBLK_IO_F_FUA, true)) << "no FUA WRITE";
    auto zero = serve([&] {
        int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
        uint64_t range[2] = {0, 65536};
        int r = ::ioctl(fd, BLKZEROOUT, range) < 0 ? -errno : 0;
        ::close(fd);
        return r;
    });
    EXPECT_TRUE(has(zero, USERBLK_OP_WRITE_ZEROES, USERBLK_IO_F_NOUNMAP, true))
        << "BLKZEROOUT: no WRITE_ZEROES with NOUNMAP";
    auto punch = serve([&] {
        int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
        int r = ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 65536) < 0 ? -errno
                                                                                         : 0;
        ::close(fd);
        return r;
    });
    EXPECT_TRUE(has(punch, USERBLK_OP_WRITE_ZEROES, USERBLK_IO_F_NOUNMAP, false))
        << "fallocate(PUNCH_HOLE): no WRITE_ZEROES that may unmap";
}

// blk-mq serves no more hardware queues than possible CPUs: ADD_DEV says how many it got, and
// that many can be opened and started. Before the fix GET_INFO reported the queues asked for,
// the extra ones never got I/O and START_DEV waited for daemons on all of them.
TEST_F(ControlTest, MoreQueuesThanCpusAreCutToTheQueuesBlkMqMaps) {
    userblk_dev_config c = good_config(mode_of(g_transport));
    c.nr_queues = USERBLK_MAX_QUEUES;
    ASSERT_EQ(add(c), 0);
    const unsigned cpus = possible_cpus();
    EXPECT_EQ(c.nr_queues, std::min<unsigned>(USERBLK_MAX_QUEUES, cpus));
    userblk_dev_config info{};
    info.abi_version = USERBLK_ABI_VERSION;
    info.dev_id = c.dev_id;
    ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_GET_INFO, &info), 0);
    EXPECT_EQ(info.nr_queues, c.nr_queues);
    std::vector<Fd> qs;
    for (uint16_t q = 0; q < c.nr_queues; q++) {
        qs.emplace_back(open_queue(c.dev_id, q));
        ASSERT_GE(qs.back().get(), 0) << "queue " << q;
        ready_queue(qs.back().get(), c);
    }
    EXPECT_EQ(open_queue(c.dev_id, (uint16_t)c.nr_queues), -EINVAL);
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_START_DEV, (unsigned long)c.dev_id), 0);
}

} // namespace

int main(int argc, char** argv) {
    return userblk_test::run_uapi_tests(argc, argv);
}
