// Bad input at the kernel boundary: every malformed ioctl and every wrong
// answer on a queue fd is rejected with an errno, nothing is lost, and the
// kernel stays clean (the runner checks the kernel log).
//
// Runs as root where userblk.ko is loaded:
//   userblk_badinput_test --transport=copy
// Exit 77 (skip) when /dev/userblk-control is missing.
//
// It speaks the raw uapi on purpose, without the project's C++ library, so
// it tests the kernel and nothing else.

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <liburing.h>

#include <uapi/userblk.h>

#include "control_test.h"

namespace {

using namespace userblk_test;
TEST_F(ControlTest, AddDevRejectsEveryBadField) {
    const uint32_t mode = mode_of(g_transport);
    ASSERT_NE(mode, 0u);
    struct Case {
        const char* what;
        void (*mutate)(userblk_dev_config&);
    } cases[] = {
        {"abi version", [](userblk_dev_config& c) { c.abi_version = 99; }},
        {"unknown feature", [](userblk_dev_config& c) { c.features = 1ull << 40; }},
        {"reserved", [](userblk_dev_config& c) { c.reserved[2] = 1; }},
        {"recovery timeout without the feature",
         [](userblk_dev_config& c) { c.recovery_timeout_ms = 1000; }},
        {"poll queues, all of them", [](userblk_dev_config& c) { c.nr_poll_queues = c.nr_queues; }},
        {"output field", [](userblk_dev_config& c) { c.state = 2; }},
        {"dev id", [](userblk_dev_config& c) { c.dev_id = USERBLK_MAX_DEVICES; }},
        {"block size 1000", [](userblk_dev_config& c) { c.logical_block_size = 1000; }},
        {"block size 256", [](userblk_dev_config& c) { c.logical_block_size = 256; }},
        {"block size 64k", [](userblk_dev_config& c) { c.logical_block_size = 65536; }},
        {"size 0", [](userblk_dev_config& c) { c.size = 0; }},
        {"size unaligned", [](userblk_dev_config& c) { c.size = 1000; }},
        {"size huge", [](userblk_dev_config& c) { c.size = ~0ull & ~511ull; }},
        {"0 queues", [](userblk_dev_config& c) { c.nr_queues = 0; }},
        {"too many queues", [](userblk_dev_config& c) { c.nr_queues = USERBLK_MAX_QUEUES + 1; }},
        {"depth 0", [](userblk_dev_config& c) { c.queue_depth = 0; }},
        {"depth too big", [](userblk_dev_config& c) { c.queue_depth = USERBLK_MAX_DEPTH + 1; }},
        {"max io small", [](userblk_dev_config& c) { c.max_io_bytes = 1024; }},
        {"max io big", [](userblk_dev_config& c) { c.max_io_bytes = 2u << 20; }},
        {"max io unaligned", [](userblk_dev_config& c) { c.max_io_bytes = 4096 + 100; }},
        {"timeout small", [](userblk_dev_config& c) { c.timeout_ms = 5; }},
        {"timeout big", [](userblk_dev_config& c) { c.timeout_ms = USERBLK_MAX_TIMEOUT_MS + 1; }},
        {"mode 0", [](userblk_dev_config& c) { c.mode = 0; }},
        {"mode 99", [](userblk_dev_config& c) { c.mode = 99; }},
    };
    for (const auto& k : cases) {
        userblk_dev_config c = good_config(mode);
        k.mutate(c);
        EXPECT_EQ(add_expect_error(c), -EINVAL) << k.what;
    }
    userblk_dev_config c = good_config(mode);
    EXPECT_EQ(add(c), 0) << "a good config after the bad ones";
}

TEST_F(ControlTest, UnknownAndMissizedIoctlsAreRejected) {
    char buf[128] = {};
    EXPECT_EQ(xioctl(ctl_.get(), _IOWR(USERBLK_IOC_MAGIC, 0x00, char[80]), buf), -ENOTTY);
    EXPECT_EQ(xioctl(ctl_.get(), _IOWR(USERBLK_IOC_MAGIC, 0x04, char[96]), buf), -ENOTTY);
    EXPECT_EQ(xioctl(ctl_.get(), _IO(USERBLK_IOC_MAGIC, 0x7f), 0), -ENOTTY);
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_ADD_DEV, nullptr), -EFAULT);
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_GET_INFO, g_bad_ptr), -EFAULT);
}

TEST_F(ControlTest, BadIdsAndStatesAreRejected) {
    for (unsigned long id : {1000ul, (unsigned long)USERBLK_MAX_DEVICES, ~0ul}) {
        EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_START_DEV, id), -ENODEV) << id;
        EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_STOP_DEV, id), -ENODEV) << id;
        EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_DEL_DEV, id), -ENODEV) << id;
    }
    userblk_dev_config info{};
    info.abi_version = USERBLK_ABI_VERSION;
    info.dev_id = 1000;
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_GET_INFO, &info), -ENODEV);

    userblk_dev_config c = good_config(mode_of(g_transport));
    c.nr_queues = 2;
    ASSERT_EQ(add(c), 0);
    userblk_dev_config twice = good_config(mode_of(g_transport));
    twice.dev_id = c.dev_id;
    EXPECT_EQ(add_expect_error(twice), -EEXIST) << "the same id twice";

    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_START_DEV, (unsigned long)c.dev_id), -ENOTCONN)
        << "start with no queue open";
    EXPECT_EQ(open_queue(c.dev_id, 2), -EINVAL) << "queue id beyond nr_queues";
    userblk_queue_open qo{};
    qo.dev_id = c.dev_id;
    qo.flags = 1;
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_OPEN_QUEUE, &qo), -EINVAL) << "flags";
    qo.flags = 0;
    qo.reserved = 1;
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_OPEN_QUEUE, &qo), -EINVAL) << "reserved";

    Fd q0(open_queue(c.dev_id, 0));
    ASSERT_GE(q0.get(), 0);
    EXPECT_EQ(open_queue(c.dev_id, 0), -EBUSY) << "the same queue twice";
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_START_DEV, (unsigned long)c.dev_id), -ENOTCONN)
        << "start with one of two queues open";
    // Closing a queue before START detaches it; it can be opened again.
    q0.reset();
    q0 = Fd(open_queue(c.dev_id, 0));
    ASSERT_GE(q0.get(), 0);
    Fd q1(open_queue(c.dev_id, 1));
    ASSERT_GE(q1.get(), 0);
    ready_queue(q0.get(), c);
    ready_queue(q1.get(), c);

    info.dev_id = c.dev_id;
    ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_GET_INFO, &info), 0);
    EXPECT_EQ(info.state, (uint32_t)USERBLK_STATE_ADDED);
    EXPECT_EQ(info.nr_queues_open, 2u);
    EXPECT_EQ(info.size, c.size);

    ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_START_DEV, (unsigned long)c.dev_id), 0);
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_START_DEV, (unsigned long)c.dev_id), -EBUSY);
    ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_STOP_DEV, (unsigned long)c.dev_id), 0);
    ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_GET_INFO, &info), 0);
    EXPECT_EQ(info.state, (uint32_t)USERBLK_STATE_DEAD);
    EXPECT_EQ(open_queue(c.dev_id, 0), -ESHUTDOWN) << "a queue of a dead device";
    ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_DEL_DEV, (unsigned long)c.dev_id), 0);
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_DEL_DEV, (unsigned long)c.dev_id), -ENODEV);
    added_.clear();
}

// A live device whose only queue this test serves by hand.
class CopyQueueTest : public ControlTest {
protected:
    static constexpr size_t kBlock = kIoBlock;
    void SetUp() override {
        if (mode_of(g_transport) != USERBLK_MODE_COPY)
            GTEST_SKIP() << "queue-fd format of " << g_transport << " is not the copy format";
        ControlTest::SetUp();
        cfg_ = good_config(USERBLK_MODE_COPY);
        ASSERT_EQ(add(cfg_), 0);
        q_ = Fd(open_queue(cfg_.dev_id, 0));
        ASSERT_GE(q_.get(), 0);
        ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_START_DEV, (unsigned long)cfg_.dev_id), 0);
        path_ = std::string("/dev/" USERBLK_DISK_PREFIX) + std::to_string(cfg_.dev_id);
        ASSERT_TRUE(wait_for_path(path_)) << path_ << " did not appear";
        buf_.resize(USERBLK_COPY_MIN_READ(cfg_.max_io_bytes) * 2);
    }

    // Start a direct 4 KiB read of the device at off, served by the test.
    std::future<ssize_t> read_async(off_t off, void* dst) {
        return io_async(path_, false, off, dst);
    }

    // Read one request descriptor from the queue fd.
    userblk_io_desc next_request() {
        pollfd p{q_.get(), POLLIN, 0};
        EXPECT_EQ(::poll(&p, 1, 10000), 1) << "no request within 10 s";
        ssize_t n = ::read(q_.get(), buf_.data(), buf_.size());
        EXPECT_GE(n, (ssize_t)sizeof(userblk_io_desc)) << std::strerror(errno);
        userblk_io_desc d{};
        std::memcpy(&d, buf_.data(), sizeof(d));
        return d;
    }

    ssize_t write_raw(const void* p, size_t n) {
        ssize_t r = ::write(q_.get(), p, n);
        return r < 0 ? -errno : r;
    }

    ssize_t complete(const userblk_io_desc& d, int32_t result, const void* data, size_t len,
                     uint16_t tag_override = 0xffff, uint32_t gen_delta = 0) {
        std::vector<char> msg(sizeof(userblk_io_cpl) + len);
        userblk_io_cpl c{};
        c.tag = tag_override == 0xffff ? d.tag : tag_override;
        c.gen = d.gen + gen_delta;
        c.result = result;
        std::memcpy(msg.data(), &c, sizeof(c));
        if (len)
            std::memcpy(msg.data() + sizeof(c), data, len);
        return write_raw(msg.data(), msg.size());
    }

    userblk_dev_config cfg_{};
    Fd q_;
    std::string path_;
    std::vector<char> buf_;
};


TEST_F(CopyQueueTest, WrongAnswersAreRejectedAndTheRightOneStillWorks) {
    AlignedBlock dst;
    std::memset(dst.data, 0, kBlock);
    auto io = read_async(8192, dst.data);
    userblk_io_desc d = next_request();
    ASSERT_EQ(d.op, USERBLK_OP_READ);
    ASSERT_EQ(d.offset, 8192u);
    ASSERT_EQ(d.len, kBlock);

    std::vector<char> pattern(kBlock);
    for (size_t i = 0; i < kBlock; i++)
        pattern[i] = char(i * 7 + 3);

    EXPECT_EQ(complete(d, 0, pattern.data(), kBlock, uint16_t(cfg_.queue_depth)), -EINVAL)
        << "tag >= depth";
    EXPECT_EQ(complete(d, 0, pattern.data(), kBlock, uint16_t((d.tag + 1) % cfg_.queue_depth)),
              -ENOENT)
        << "a tag with no request";
    EXPECT_EQ(complete(d, 0, pattern.data(), kBlock, 0xffff, 1), -ENOENT) << "stale gen";
    EXPECT_EQ(complete(d, 1, nullptr, 0), -EINVAL) << "positive result";
    EXPECT_EQ(complete(d, -5000, nullptr, 0), -EINVAL) << "result below -MAX_ERRNO";
    EXPECT_EQ(complete(d, 0, nullptr, 0), -EINVAL) << "a read's answer without its data";
    EXPECT_EQ(complete(d, 0, pattern.data(), kBlock / 2), -EINVAL) << "half the data";
    userblk_io_cpl reserved{d.tag, 1, d.gen, 0, 0};
    EXPECT_EQ(write_raw(&reserved, sizeof(reserved)), -EINVAL) << "reserved bits";
    EXPECT_EQ(write_raw(&reserved, 8), -EINVAL) << "shorter than one completion";
    EXPECT_EQ(write_raw(g_bad_ptr, 4096), -EFAULT) << "bad pointer";

    EXPECT_EQ(io.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout)
        << "a rejected answer completed the read";
    ASSERT_EQ(complete(d, 0, pattern.data(), kBlock), (ssize_t)(sizeof(userblk_io_cpl) + kBlock));
    ASSERT_EQ(io.get(), (ssize_t)kBlock);
    EXPECT_EQ(std::memcmp(dst.data, pattern.data(), kBlock), 0);
    EXPECT_EQ(complete(d, 0, pattern.data(), kBlock), -ENOENT) << "the same answer twice";
}

TEST_F(CopyQueueTest, ErrorResultReachesTheReader) {
    AlignedBlock dst;
    auto io = read_async(0, dst.data);
    userblk_io_desc d = next_request();
    ASSERT_EQ(complete(d, -EIO, nullptr, 0), (ssize_t)sizeof(userblk_io_cpl));
    EXPECT_EQ(io.get(), -EIO);
}

TEST_F(CopyQueueTest, BadReadBuffersLoseNoRequest) {
    AlignedBlock dst;
    auto io = read_async(4096, dst.data);
    pollfd p{q_.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10000), 1);
    EXPECT_EQ(::read(q_.get(), buf_.data(), 64), -1);
    EXPECT_EQ(errno, EINVAL) << "a buffer smaller than one request with max I/O";
    EXPECT_EQ(::read(q_.get(), g_bad_ptr, buf_.size()), -1);
    EXPECT_EQ(errno, EFAULT);
    userblk_io_desc d = next_request();
    EXPECT_EQ(d.offset, 4096u) << "the request survived the failed reads";
    std::vector<char> zero(kBlock);
    ASSERT_EQ(complete(d, 0, zero.data(), kBlock), (ssize_t)(sizeof(userblk_io_cpl) + kBlock));
    EXPECT_EQ(io.get(), (ssize_t)kBlock);
}

TEST_F(CopyQueueTest, ClosingTheQueueFailsOutstandingIoAtOnce) {
    AlignedBlock dst;
    auto io = read_async(0, dst.data);
    (void)next_request();
    auto t0 = std::chrono::steady_clock::now();
    q_.reset();
    EXPECT_EQ(io.get(), -EIO);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
    // Later I/O fails fast too.
    auto again = read_async(0, dst.data);
    ASSERT_EQ(again.wait_for(std::chrono::seconds(5)), std::future_status::ready);
    EXPECT_EQ(again.get(), -EIO);
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_DEAD);
}

TEST_F(CopyQueueTest, DeadQueueReadsEndOfFileAndRefusesWrites) {
    ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_STOP_DEV, (unsigned long)cfg_.dev_id), 0);
    EXPECT_EQ(::read(q_.get(), buf_.data(), buf_.size()), 0);
    userblk_io_cpl c{};
    EXPECT_EQ(write_raw(&c, sizeof(c)), -ENODEV);
    pollfd p{q_.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 0), 1);
    EXPECT_TRUE(p.revents & POLLHUP);
}

// A live pipe or splice device whose only queue this test serves by hand: descriptors and
// completions on the queue fd, the data in the tag's pipe (pipe) or through the data fd (splice).
class DescQueueTest : public ControlTest {
protected:
    static constexpr size_t kBlock = kIoBlock;
    void SetUp() override {
        mode_ = mode_of(g_transport);
        if (mode_ != USERBLK_MODE_PIPE && mode_ != USERBLK_MODE_SPLICE)
            GTEST_SKIP() << g_transport << " does not keep data off the queue fd";
        ControlTest::SetUp();
        cfg_ = good_config(mode_);
        ASSERT_EQ(add(cfg_), 0);
        q_ = Fd(open_queue(cfg_.dev_id, 0));
        ASSERT_GE(q_.get(), 0);
        if (mode_ == USERBLK_MODE_SPLICE) {
            data_ = Fd(xioctl(q_.get(), USERBLK_IOC_SPLICE_DATA_FD, 0ul));
            ASSERT_GE(data_.get(), 0);
        }
        if (!start_later_) {
            start();
        }
    }
    void start() {
        ready_queue(q_.get(), cfg_);
        ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_START_DEV, (unsigned long)cfg_.dev_id), 0);
        path_ = std::string("/dev/" USERBLK_DISK_PREFIX) + std::to_string(cfg_.dev_id);
        ASSERT_TRUE(wait_for_path(path_)) << path_ << " did not appear";
    }

    userblk_io_desc next_request() {
        pollfd p{q_.get(), POLLIN, 0};
        EXPECT_EQ(::poll(&p, 1, 10000), 1) << "no request within 10 s";
        userblk_io_desc d{};
        ssize_t n = ::read(q_.get(), &d, sizeof(d));
        EXPECT_EQ(n, (ssize_t)sizeof(d)) << std::strerror(errno);
        return d;
    }
    ssize_t complete(const userblk_io_desc& d, int32_t result) {
        userblk_io_cpl c{};
        c.tag = d.tag;
        c.gen = d.gen;
        c.result = result;
        ssize_t r = ::write(q_.get(), &c, sizeof(c));
        return r < 0 ? -errno : r;
    }
    // A WRITE's data as the daemon receives it.
    ssize_t take_data(const userblk_io_desc& d, void* buf, size_t len, size_t pos = 0) {
        ssize_t r = mode_ == USERBLK_MODE_PIPE
                        ? ::read(pipes_[d.tag].r.get(), buf, len)
                        : ::pread(data_.get(), buf, len, USERBLK_SPLICE_OFF(d.tag, d.gen, pos));
        return r < 0 ? -errno : r;
    }
    // A READ's data as the daemon gives it.
    ssize_t give_data(const userblk_io_desc& d, const void* buf, size_t len, size_t pos = 0) {
        ssize_t r = mode_ == USERBLK_MODE_PIPE
                        ? ::write(pipes_[d.tag].w.get(), buf, len)
                        : ::pwrite(data_.get(), buf, len, USERBLK_SPLICE_OFF(d.tag, d.gen, pos));
        return r < 0 ? -errno : r;
    }
    static std::vector<char> pattern(size_t len, int seed) {
        std::vector<char> v(len);
        for (size_t i = 0; i < len; i++)
            v[i] = char(i * 13 + seed);
        return v;
    }

    bool start_later_ = false;
    uint32_t mode_ = 0;
    userblk_dev_config cfg_{};
    Fd q_, data_;
    std::string path_;
};

TEST_F(DescQueueTest, DataTakesItsOwnPathBothWays) {
    AlignedBlock src, dst;
    auto w = pattern(kBlock, 1);
    std::memcpy(src.data, w.data(), kBlock);
    auto wio = io_async(path_, true, 4096, src.data);
    userblk_io_desc d = next_request();
    ASSERT_EQ(d.op, USERBLK_OP_WRITE);
    ASSERT_EQ(d.len, kBlock);
    std::vector<char> got(kBlock * 2);
    ASSERT_EQ(take_data(d, got.data(), got.size()), (ssize_t)kBlock) << "exactly the request's data";
    EXPECT_EQ(std::memcmp(got.data(), w.data(), kBlock), 0);
    ASSERT_EQ(complete(d, 0), (ssize_t)sizeof(userblk_io_cpl));
    ASSERT_EQ(wio.get(), (ssize_t)kBlock);

    auto r = pattern(kBlock, 2);
    auto rio = io_async(path_, false, 4096, dst.data);
    d = next_request();
    ASSERT_EQ(d.op, USERBLK_OP_READ);
    ASSERT_EQ(give_data(d, r.data(), kBlock / 2), (ssize_t)kBlock / 2);
    ASSERT_EQ(give_data(d, r.data() + kBlock / 2, kBlock / 2, kBlock / 2), (ssize_t)kBlock / 2);
    ASSERT_EQ(complete(d, 0), (ssize_t)sizeof(userblk_io_cpl));
    ASSERT_EQ(rio.get(), (ssize_t)kBlock);
    EXPECT_EQ(std::memcmp(dst.data, r.data(), kBlock), 0);
}

TEST_F(DescQueueTest, AReadAnsweredWithoutAllItsDataFailsWithEio) {
    AlignedBlock dst;
    auto r = pattern(kBlock, 3);
    auto rio = io_async(path_, false, 0, dst.data);
    userblk_io_desc d = next_request();
    ASSERT_EQ(give_data(d, r.data(), kBlock / 2), (ssize_t)kBlock / 2);
    ASSERT_EQ(complete(d, 0), (ssize_t)sizeof(userblk_io_cpl)) << "the answer is taken...";
    EXPECT_EQ(rio.get(), -EIO) << "...and fails the read: the pages were not all filled";
    if (mode_ == USERBLK_MODE_PIPE) {
        char c;
        EXPECT_EQ(::read(pipes_[d.tag].r.get(), &c, 1), -1) << "the kernel took what was there";
    }

    auto again = io_async(path_, false, 0, dst.data);
    d = next_request();
    ASSERT_EQ(complete(d, 0), (ssize_t)sizeof(userblk_io_cpl));
    EXPECT_EQ(again.get(), -EIO) << "no data at all";
}

TEST_F(DescQueueTest, ClosingTheQueueFailsOutstandingIoAtOnce) {
    AlignedBlock dst;
    auto io = io_async(path_, false, 0, dst.data);
    userblk_io_desc d = next_request();
    auto t0 = std::chrono::steady_clock::now();
    q_.reset();
    EXPECT_EQ(io.get(), -EIO);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_DEAD);
    if (mode_ == USERBLK_MODE_SPLICE) {
        char b[512];
        EXPECT_EQ(give_data(d, b, sizeof(b)), -ENOENT) << "the data fd of a dead device";
        ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_DEL_DEV, (unsigned long)cfg_.dev_id), 0);
        added_.clear();
        EXPECT_EQ(take_data(d, b, sizeof(b)), -ENOENT) << "the data fd of a deleted device";
    }
}

class PipeSetupTest : public DescQueueTest {
protected:
    void SetUp() override {
        start_later_ = true;
        DescQueueTest::SetUp();
        if (!IsSkipped() && mode_ != USERBLK_MODE_PIPE)
            GTEST_SKIP() << "pipe registration is the pipe transport's";
    }
    int set(uint32_t tag, int rfd, int wfd, uint32_t flags = 0, uint64_t reserved = 0) {
        userblk_pipe_set ps{};
        ps.tag = tag;
        ps.read_fd = rfd;
        ps.write_fd = wfd;
        ps.flags = flags;
        ps.reserved = reserved;
        return xioctl(q_.get(), USERBLK_IOC_PIPE_SET, &ps);
    }
};

TEST_F(PipeSetupTest, PipeSetRejectsEveryBadArgument) {
    int a[2], b[2];
    ASSERT_EQ(::pipe2(a, O_CLOEXEC), 0);
    ASSERT_EQ(::pipe2(b, O_CLOEXEC), 0);
    Fd ar(a[0]), aw(a[1]), br(b[0]), bw(b[1]);
    Fd file(::open("/proc/self/stat", O_RDONLY | O_CLOEXEC));
    EXPECT_EQ(set(cfg_.queue_depth, a[0], a[1]), -EINVAL) << "tag beyond depth";
    EXPECT_EQ(set(0, a[0], a[1], 1), -EINVAL) << "flags";
    EXPECT_EQ(set(0, a[0], a[1], 0, 1), -EINVAL) << "reserved";
    EXPECT_EQ(set(0, -1, a[1]), -EBADF) << "no fd";
    EXPECT_EQ(set(0, a[0], 9999), -EBADF) << "no fd";
    EXPECT_EQ(set(0, file.get(), a[1]), -EINVAL) << "not a pipe";
    EXPECT_EQ(set(0, q_.get(), a[1]), -EINVAL) << "the queue fd";
    EXPECT_EQ(set(0, a[1], a[0]), -EINVAL) << "ends swapped";
    EXPECT_EQ(set(0, a[0], b[1]), -EINVAL) << "ends of two pipes";
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_START_DEV, (unsigned long)cfg_.dev_id), -ENOTCONN)
        << "tags without a pipe";
    EXPECT_EQ(set(0, a[0], a[1]), 0);
    EXPECT_EQ(set(0, b[0], b[1]), 0) << "an idle tag's pipe can be replaced";
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_START_DEV, (unsigned long)cfg_.dev_id), -ENOTCONN)
        << "still tags without a pipe";
}

TEST_F(PipeSetupTest, AFullPipeFailsTheWriteWithoutBlockingTheDaemon) {
    start();
    // Fill every tag's pipe: the kernel cannot put a write's data anywhere.
    std::vector<char> junk(cfg_.max_io_bytes, 'j');
    for (auto& p : pipes_) {
        while (::write(p.w.get(), junk.data(), junk.size()) > 0) {
        }
    }
    AlignedBlock src;
    auto io = io_async(path_, true, 0, src.data);
    pollfd p{q_.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10000), 1);
    int fl = ::fcntl(q_.get(), F_GETFL);
    ASSERT_EQ(::fcntl(q_.get(), F_SETFL, fl | O_NONBLOCK), 0);
    userblk_io_desc d{};
    EXPECT_EQ(::read(q_.get(), &d, sizeof(d)), -1) << "the request was not handed out";
    EXPECT_EQ(errno, EAGAIN);
    ASSERT_EQ(io.wait_for(std::chrono::seconds(5)), std::future_status::ready);
    EXPECT_EQ(io.get(), -EIO);
}

TEST_F(PipeSetupTest, ABusyTagsPipeCannotBeReplaced) {
    start();
    AlignedBlock dst;
    auto io = io_async(path_, false, 0, dst.data);
    userblk_io_desc d = next_request();
    int a[2];
    ASSERT_EQ(::pipe2(a, O_CLOEXEC), 0);
    Fd ar(a[0]), aw(a[1]);
    EXPECT_EQ(set(d.tag, a[0], a[1]), -EBUSY);
    ASSERT_EQ(complete(d, -EIO), (ssize_t)sizeof(userblk_io_cpl));
    EXPECT_EQ(io.get(), -EIO);
    EXPECT_EQ(set(d.tag, a[0], a[1]), 0) << "idle again";
}

class SpliceDataTest : public DescQueueTest {
protected:
    void SetUp() override {
        DescQueueTest::SetUp();
        if (!IsSkipped() && mode_ != USERBLK_MODE_SPLICE)
            GTEST_SKIP() << "the data fd is the splice transport's";
    }
};

TEST_F(SpliceDataTest, TheDataFdRefusesWhatNoRequestAllows) {
    EXPECT_EQ(xioctl(q_.get(), USERBLK_IOC_SPLICE_DATA_FD, 1ul), -EINVAL) << "an argument";
    char b[512];
    errno = 0;
    EXPECT_EQ(::pread(data_.get(), b, sizeof(b), USERBLK_SPLICE_OFF(cfg_.queue_depth, 0, 0)), -1);
    EXPECT_EQ(errno, EINVAL) << "tag beyond depth";
    EXPECT_EQ(::pread(data_.get(), b, sizeof(b), USERBLK_SPLICE_OFF(1, 0, 0)), -1);
    EXPECT_EQ(errno, ENOENT) << "no request on the tag";
    EXPECT_EQ(::pwrite(data_.get(), b, sizeof(b), -4096), -1);
    EXPECT_EQ(errno, EINVAL) << "negative offset";

    AlignedBlock src, dst;
    auto w = pattern(kBlock, 4);
    std::memcpy(src.data, w.data(), kBlock);
    auto wio = io_async(path_, true, 0, src.data);
    userblk_io_desc d = next_request();
    EXPECT_EQ(::pwrite(data_.get(), b, sizeof(b), USERBLK_SPLICE_OFF(d.tag, d.gen, 0)), -1);
    EXPECT_EQ(errno, EINVAL) << "writing a WRITE's data";
    EXPECT_EQ(::pread(data_.get(), b, sizeof(b), USERBLK_SPLICE_OFF(d.tag, d.gen, kBlock)), 0)
        << "past the end of the request";
    EXPECT_EQ(::pread(data_.get(), g_bad_ptr, sizeof(b), USERBLK_SPLICE_OFF(d.tag, d.gen, 0)), -1);
    EXPECT_EQ(errno, EFAULT);
    // The same data again, this time by splice into a pipe.
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    Fd pr(p[0]), pw(p[1]);
    loff_t off = USERBLK_SPLICE_OFF(d.tag, d.gen, 0);
    ASSERT_EQ(::splice(data_.get(), &off, p[1], nullptr, kBlock, 0), (ssize_t)kBlock);
    std::vector<char> got(kBlock);
    ASSERT_EQ(::read(p[0], got.data(), kBlock), (ssize_t)kBlock);
    EXPECT_EQ(std::memcmp(got.data(), w.data(), kBlock), 0);
    // copy_file_range() takes regular files only (docs/splice-and-pipe.md): never the data fd.
    char tmpl[] = "/tmp/userblk-cfr-XXXXXX";
    Fd reg(::mkstemp(tmpl));
    ASSERT_GE(reg.get(), 0);
    ::unlink(tmpl);
    off = USERBLK_SPLICE_OFF(d.tag, d.gen, 0);
    EXPECT_EQ(::copy_file_range(data_.get(), &off, reg.get(), nullptr, kBlock, 0), -1);
    EXPECT_EQ(errno, EINVAL) << "copy_file_range from the data fd";
    ASSERT_EQ(complete(d, 0), (ssize_t)sizeof(userblk_io_cpl));
    EXPECT_EQ(wio.get(), (ssize_t)kBlock);
    EXPECT_EQ(::pread(data_.get(), b, sizeof(b), USERBLK_SPLICE_OFF(d.tag, d.gen, 0)), -1);
    EXPECT_EQ(errno, ENOENT) << "after the completion";

    auto rio = io_async(path_, false, 0, dst.data);
    d = next_request();
    EXPECT_EQ(::pread(data_.get(), b, sizeof(b), USERBLK_SPLICE_OFF(d.tag, d.gen, 0)), -1);
    EXPECT_EQ(errno, EINVAL) << "reading a READ's data";
    EXPECT_EQ(::pwrite(data_.get(), b, sizeof(b), USERBLK_SPLICE_OFF(d.tag, d.gen, 512)), -1);
    EXPECT_EQ(errno, EINVAL) << "out of order";
    std::vector<char> big(kBlock + 512);
    EXPECT_EQ(::pwrite(data_.get(), big.data(), big.size(), USERBLK_SPLICE_OFF(d.tag, d.gen, 0)), -1);
    EXPECT_EQ(errno, EINVAL) << "past the end";
    auto r = pattern(kBlock, 5);
    ASSERT_EQ(::write(p[1], r.data(), kBlock), (ssize_t)kBlock);
    off = USERBLK_SPLICE_OFF(d.tag, d.gen, 0);
    ASSERT_EQ(::splice(p[0], nullptr, data_.get(), &off, kBlock, 0), (ssize_t)kBlock);
    ASSERT_EQ(complete(d, 0), (ssize_t)sizeof(userblk_io_cpl));
    ASSERT_EQ(rio.get(), (ssize_t)kBlock);
    EXPECT_EQ(std::memcmp(dst.data, r.data(), kBlock), 0);
}

// A live ring device whose only queue this test serves by hand, through the mapping.
class RingQueueTest : public ControlTest {
protected:
    static constexpr size_t kBlock = kIoBlock;

    void SetUp() override {
        if (mode_of(g_transport) != USERBLK_MODE_RING)
            GTEST_SKIP() << "the shared rings of ring are not the queue-fd format of "
                         << g_transport;
        ControlTest::SetUp();
        cfg_ = good_config(USERBLK_MODE_RING);
        configure(cfg_);
        ASSERT_EQ(add(cfg_), 0);
        // The queue served here is the last; the others stay open, unserved.
        for (uint32_t i = 0; i + 1 < cfg_.nr_queues; i++) {
            others_.emplace_back(open_queue(cfg_.dev_id, uint16_t(i)));
            ASSERT_GE(others_.back().get(), 0);
        }
        q_ = Fd(open_queue(cfg_.dev_id, uint16_t(cfg_.nr_queues - 1)));
        ASSERT_GE(q_.get(), 0);
        ASSERT_EQ(xioctl(q_.get(), USERBLK_IOC_RING_LAYOUT, &l_), 0);
        area_ = map_ring_area(q_.get(), l_);
        ASSERT_NE(area_, nullptr) << std::strerror(errno);
        sq_head_ = didx()->sq_head;
        cq_tail_ = didx()->cq_tail;
        ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_START_DEV, (unsigned long)cfg_.dev_id), 0);
        path_ = std::string("/dev/" USERBLK_DISK_PREFIX) + std::to_string(cfg_.dev_id);
        ASSERT_TRUE(wait_for_path(path_)) << path_ << " did not appear";
    }

    void TearDown() override {
        unmap();
        ControlTest::TearDown();
    }

    // A fixture's changes to the device it adds.
    virtual void configure(userblk_dev_config&) {}

    void unmap() {
        if (area_ != nullptr)
            ::munmap(area_, l_.map_size);
        area_ = nullptr;
    }

    userblk_ring_kernel_indices* kidx() {
        return reinterpret_cast<userblk_ring_kernel_indices*>(area_ + l_.kernel_off);
    }
    userblk_ring_daemon_indices* didx() {
        return reinterpret_cast<userblk_ring_daemon_indices*>(area_ + l_.daemon_off);
    }
    static uint32_t load(uint32_t& v) { return std::atomic_ref(v).load(std::memory_order_acquire); }
    static void store(uint32_t& v, uint32_t x) {
        std::atomic_ref(v).store(x, std::memory_order_release);
    }
    uint64_t rejected() { return std::atomic_ref(kidx()->rejected).load(std::memory_order_relaxed); }
    char* buf(uint16_t tag) { return area_ + l_.buf_off + (size_t)tag * l_.buf_size; }

    long enter(unsigned long flags) { return xioctl(q_.get(), USERBLK_IOC_RING_ENTER, flags); }

    // Waits for a request (poll), takes it from the submission ring, frees its slot.
    userblk_io_desc next_request() {
        pollfd p{q_.get(), POLLIN, 0};
        EXPECT_EQ(::poll(&p, 1, 10000), 1) << "no request within 10 s";
        userblk_io_desc d{};
        EXPECT_NE(load(kidx()->sq_tail), sq_head_) << "POLLIN with an empty submission ring";
        auto* sq = reinterpret_cast<userblk_io_desc*>(area_ + l_.sq_off);
        std::memcpy(&d, &sq[sq_head_ & (l_.sq_entries - 1)], sizeof(d));
        store(didx()->sq_head, ++sq_head_);
        return d;
    }

    // Writes one completion, publishes it and hands it over: RING_ENTER(0)'s result.
    long post(const userblk_io_cpl& c) {
        auto* cq = reinterpret_cast<userblk_io_cpl*>(area_ + l_.cq_off);
        std::memcpy(&cq[cq_tail_ & (l_.cq_entries - 1)], &c, sizeof(c));
        store(didx()->cq_tail, ++cq_tail_);
        return enter(0);
    }

    static userblk_io_cpl answer(const userblk_io_desc& d, int32_t result = 0) {
        userblk_io_cpl c{};
        c.tag = d.tag;
        c.gen = d.gen;
        c.result = result;
        return c;
    }

    userblk_dev_config cfg_{};
    userblk_ring_layout l_{};
    std::vector<Fd> others_;
    Fd q_;
    char* area_ = nullptr;
    uint32_t sq_head_ = 0;
    uint32_t cq_tail_ = 0;
    std::string path_;
};

TEST_F(RingQueueTest, LayoutIsTheDocumentedOneAndMmapTakesItExactly) {
    const uint64_t page = (uint64_t)::sysconf(_SC_PAGESIZE);
    auto align = [](uint64_t v, uint64_t a) { return (v + a - 1) / a * a; };
    const uint64_t e = 4; // depth 4 is a power of two already
    EXPECT_EQ(l_.sq_entries, e);
    EXPECT_EQ(l_.cq_entries, e);
    EXPECT_EQ(l_.nr_bufs, cfg_.queue_depth);
    EXPECT_EQ(l_.buf_size, align(cfg_.max_io_bytes, page));
    EXPECT_EQ(l_.buf_off % page, 0u);
    // The formula `userblk --dump-transport ring` prints as queue_memory.
    EXPECT_EQ(l_.rw_off, align(192 + e * sizeof(userblk_io_desc), page));
    EXPECT_EQ(l_.map_size, l_.rw_off + align(128 + e * sizeof(userblk_io_cpl), page) +
                               cfg_.queue_depth * align(cfg_.max_io_bytes, page));
    EXPECT_EQ(l_.kernel_off, 0u);
    EXPECT_EQ(l_.sq_off, 192u);
    EXPECT_EQ(l_.daemon_off, l_.rw_off);
    EXPECT_EQ(l_.cq_off, l_.rw_off + 128);
    EXPECT_EQ(l_.reserved[0] | l_.reserved[1], 0u);

    const uint64_t rw_len = l_.map_size - l_.rw_off;
    const off_t rw = (off_t)l_.rw_off;
    struct Case {
        const char* what;
        uint64_t len;
        off_t off;
        int prot;
        int flags;
        int err;
    } cases[] = {
        {"the whole area at once", l_.map_size, 0, PROT_READ, MAP_SHARED, EINVAL},
        {"the read-only part, a page more", l_.rw_off + page, 0, PROT_READ, MAP_SHARED, EINVAL},
        {"the writable part, a page short", rw_len - page, rw, PROT_READ, MAP_SHARED, EINVAL},
        {"the writable part at another offset", rw_len, rw + (off_t)page, PROT_READ, MAP_SHARED,
         EINVAL},
        {"the read-only part writable", l_.rw_off, 0, PROT_READ | PROT_WRITE, MAP_SHARED, EPERM},
        {"the read-only part executable", l_.rw_off, 0, PROT_READ | PROT_EXEC, MAP_SHARED, EPERM},
        {"the writable part executable", rw_len, rw, PROT_READ | PROT_WRITE | PROT_EXEC,
         MAP_SHARED, EPERM},
        {"the writable part private", rw_len, rw, PROT_READ | PROT_WRITE, MAP_PRIVATE, EPERM},
    };
    for (const auto& c : cases) {
        void* p = ::mmap(nullptr, c.len, c.prot, c.flags, q_.get(), c.off);
        EXPECT_EQ(p, MAP_FAILED) << c.what;
        EXPECT_EQ(errno, c.err) << c.what;
        if (p != MAP_FAILED)
            ::munmap(p, c.len);
    }
    EXPECT_EQ(xioctl(q_.get(), USERBLK_IOC_RING_LAYOUT, g_bad_ptr), -EFAULT);
    EXPECT_EQ(xioctl(q_.get(), _IO(USERBLK_IOC_MAGIC, 0x12), 0), -ENOTTY);
    // The copy transport's read() and write() are not the ring's.
    char b[64];
    EXPECT_EQ(::read(q_.get(), b, sizeof(b)), -1);
    EXPECT_EQ(::write(q_.get(), b, sizeof(b)), -1);
}

TEST_F(RingQueueTest, AnAreaBeyondTheModulesLimitIsRefusedWithE2big) {
    userblk_dev_config big = good_config(USERBLK_MODE_RING);
    big.queue_depth = USERBLK_MAX_DEPTH;
    big.max_io_bytes = USERBLK_MAX_IO_BYTES; // 1 GiB of buffers per queue
    EXPECT_EQ(add_expect_error(big), -E2BIG);
    userblk_dev_config deep = good_config(USERBLK_MODE_RING);
    deep.queue_depth = USERBLK_MAX_DEPTH;
    deep.max_io_bytes = 4096; // 4 MiB of buffers: fine
    EXPECT_EQ(add(deep), 0);
}

TEST_F(RingQueueTest, EnterRejectsUnknownFlags) {
    uint64_t before = rejected();
    for (unsigned long flags : {2ul, 1ul | 2ul, 1ul << 31, ~0ul}) {
        // With WAIT among them it must not sleep: the flags are refused first.
        EXPECT_EQ(enter(flags), -EINVAL) << std::hex << flags;
    }
    EXPECT_EQ(enter(0), 0) << "nothing is pending";
    EXPECT_EQ(rejected(), before) << "bad flags are the caller's mistake, not a refused entry";
}

TEST_F(RingQueueTest, WaitingEnterReturnsWhenARequestArrives) {
    auto waiter = std::async(std::launch::async, [this] { return enter(USERBLK_RING_ENTER_WAIT); });
    EXPECT_EQ(waiter.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout)
        << "RING_ENTER(WAIT) returned with nothing pending";
    AlignedBlock dst;
    auto io = io_async(path_, false, 0, dst.data);
    ASSERT_EQ(waiter.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    EXPECT_EQ(waiter.get(), 1) << "one request pending";
    userblk_io_desc d = next_request();
    std::memset(buf(d.tag), 0x5a, kBlock);
    ASSERT_EQ(post(answer(d)), 0);
    ASSERT_EQ(io.get(), (ssize_t)kBlock);
    EXPECT_EQ(dst.data[kBlock - 1], 0x5a);
}

TEST_F(RingQueueTest, WriteDataIsInTheBufferWhenTheRequestIsPublished) {
    AlignedBlock src;
    for (size_t i = 0; i < kBlock; i++)
        src.data[i] = char(i * 13 + 1);
    auto io = io_async(path_, true, 12288, src.data);
    userblk_io_desc d = next_request();
    ASSERT_EQ(d.op, USERBLK_OP_WRITE);
    ASSERT_EQ(d.offset, 12288u);
    ASSERT_EQ(d.len, kBlock);
    ASSERT_LT(d.tag, cfg_.queue_depth);
    EXPECT_EQ(std::memcmp(buf(d.tag), src.data, kBlock), 0);
    ASSERT_EQ(post(answer(d, -ENOSPC)), 0);
    EXPECT_EQ(io.get(), -ENOSPC) << "the error result reaches the writer";
}

TEST_F(RingQueueTest, WrongCompletionsAreRejectedAndTheRightOneStillWorks) {
    AlignedBlock dst;
    std::memset(dst.data, 0, kBlock);
    auto io = io_async(path_, false, 8192, dst.data);
    userblk_io_desc d = next_request();
    ASSERT_EQ(d.op, USERBLK_OP_READ);
    ASSERT_EQ(d.offset, 8192u);
    ASSERT_EQ(d.len, kBlock);
    for (size_t i = 0; i < kBlock; i++)
        buf(d.tag)[i] = char(i * 7 + 3);

    struct Case {
        const char* what;
        void (*mutate)(userblk_io_cpl&, uint32_t depth);
    } cases[] = {
        {"tag == depth", [](userblk_io_cpl& c, uint32_t depth) { c.tag = uint16_t(depth); }},
        {"tag 0xffff", [](userblk_io_cpl& c, uint32_t) { c.tag = 0xffff; }},
        {"a tag with no request",
         [](userblk_io_cpl& c, uint32_t depth) { c.tag = uint16_t((c.tag + 1) % depth); }},
        {"stale gen", [](userblk_io_cpl& c, uint32_t) { c.gen -= 1; }},
        {"future gen", [](userblk_io_cpl& c, uint32_t) { c.gen += 1; }},
        {"result 1", [](userblk_io_cpl& c, uint32_t) { c.result = 1; }},
        {"result below -MAX_ERRNO", [](userblk_io_cpl& c, uint32_t) { c.result = -5000; }},
        {"reserved0", [](userblk_io_cpl& c, uint32_t) { c.reserved0 = 1; }},
        {"reserved1", [](userblk_io_cpl& c, uint32_t) { c.reserved1 = 0x80000000u; }},
    };
    for (const auto& k : cases) {
        userblk_io_cpl c = answer(d);
        k.mutate(c, cfg_.queue_depth);
        uint64_t before = rejected();
        EXPECT_EQ(post(c), 0) << k.what << ": RING_ENTER takes a refused entry and goes on";
        EXPECT_EQ(rejected(), before + 1) << k.what;
    }
    EXPECT_EQ(io.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout)
        << "a rejected answer completed the read";
    uint64_t before = rejected();
    ASSERT_EQ(post(answer(d)), 0);
    ASSERT_EQ(io.get(), (ssize_t)kBlock);
    EXPECT_EQ(std::memcmp(dst.data, buf(d.tag), kBlock), 0);
    EXPECT_EQ(dst.data[1], char(10));
    EXPECT_EQ(rejected(), before);
    EXPECT_EQ(post(answer(d)), 0);
    EXPECT_EQ(rejected(), before + 1) << "the same answer twice";
}

TEST_F(RingQueueTest, ACompletionTailFarAheadIsRefusedUntilItIsSane) {
    AlignedBlock dst;
    auto io = io_async(path_, false, 4096, dst.data);
    userblk_io_desc d = next_request();
    std::memset(buf(d.tag), 0x42, kBlock);
    auto* cq = reinterpret_cast<userblk_io_cpl*>(area_ + l_.cq_off);
    userblk_io_cpl good = answer(d);
    std::memcpy(&cq[cq_tail_ & (l_.cq_entries - 1)], &good, sizeof(good));
    for (uint32_t lie : {cq_tail_ + l_.cq_entries + 1, cq_tail_ + 0x80000000u, cq_tail_ - 1}) {
        uint64_t before = rejected();
        store(didx()->cq_tail, lie);
        EXPECT_EQ(enter(0), -EINVAL) << lie;
        EXPECT_EQ(enter(USERBLK_RING_ENTER_WAIT), -EINVAL) << lie << ": WAIT must not sleep";
        EXPECT_EQ(rejected(), before + 2) << lie;
        EXPECT_EQ(load(kidx()->cq_head), cq_tail_) << "nothing was taken";
    }
    EXPECT_EQ(io.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout);
    store(didx()->cq_tail, cq_tail_); // back to sane: the answer is published properly
    ASSERT_EQ(post(good), 0);
    ASSERT_EQ(io.get(), (ssize_t)kBlock);
    EXPECT_EQ(dst.data[0], 0x42);
}

TEST_F(RingQueueTest, ALyingSubmissionHeadFailsNewRequestsWithEio) {
    uint32_t tail = load(kidx()->sq_tail);
    uint64_t before = rejected();
    store(didx()->sq_head, tail + 5); // beyond anything the kernel published
    AlignedBlock dst;
    auto io = io_async(path_, false, 0, dst.data);
    ASSERT_EQ(io.wait_for(std::chrono::seconds(5)), std::future_status::ready)
        << "a request hangs behind a lying submission head";
    EXPECT_EQ(io.get(), -EIO);
    EXPECT_GT(rejected(), before);
    EXPECT_EQ(load(kidx()->sq_tail), tail) << "nothing was published";
    pollfd p{q_.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 0) << "a lying head makes nothing pending";

    store(didx()->sq_head, sq_head_); // the truth again: the device serves as before
    auto again = io_async(path_, false, 0, dst.data);
    userblk_io_desc d = next_request();
    std::memset(buf(d.tag), 0x17, kBlock);
    ASSERT_EQ(post(answer(d)), 0);
    ASSERT_EQ(again.get(), (ssize_t)kBlock);
    EXPECT_EQ(dst.data[100], 0x17);
}

TEST_F(RingQueueTest, ClosingTheQueueFailsOutstandingIoAtOnce) {
    AlignedBlock dst;
    auto io = io_async(path_, false, 0, dst.data);
    (void)next_request();
    // The mapping holds the queue's file as the fd does: the daemon is gone when both are, as
    // when a daemon exits.
    q_.reset();
    auto t0 = std::chrono::steady_clock::now();
    unmap();
    ASSERT_EQ(io.wait_for(std::chrono::seconds(5)), std::future_status::ready);
    EXPECT_EQ(io.get(), -EIO);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
    auto again = io_async(path_, false, 0, dst.data);
    ASSERT_EQ(again.wait_for(std::chrono::seconds(5)), std::future_status::ready);
    EXPECT_EQ(again.get(), -EIO);
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_DEAD);
}

TEST_F(RingQueueTest, AStoppedDeviceFailsEnterWithEnodevAndPollsHup) {
    AlignedBlock dst;
    auto io = io_async(path_, false, 0, dst.data);
    userblk_io_desc d = next_request();
    // The daemon sleeps in RING_ENTER(WAIT) when the device is stopped.
    auto waiter = std::async(std::launch::async, [this] { return enter(USERBLK_RING_ENTER_WAIT); });
    EXPECT_EQ(waiter.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout);
    ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_STOP_DEV, (unsigned long)cfg_.dev_id), 0);
    ASSERT_EQ(waiter.wait_for(std::chrono::seconds(5)), std::future_status::ready);
    EXPECT_EQ(waiter.get(), -ENODEV);
    EXPECT_EQ(io.get(), -EIO) << "the outstanding request failed with the stop";

    EXPECT_EQ(enter(USERBLK_RING_ENTER_WAIT), -ENODEV);
    uint64_t before = rejected();
    EXPECT_EQ(post(answer(d)), -ENODEV) << "a late answer";
    EXPECT_EQ(rejected(), before + 1) << "a late answer completes nothing";
    pollfd p{q_.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 0), 1);
    EXPECT_TRUE(p.revents & POLLHUP);
}

// A device with a poll queue (the last of two), served here by a "daemon" that spins on the
// ring as --spin-us does: I/O submitted with io_uring IOPOLL goes to it, and the submitter's
// blk-mq poll reaps the completion ring.
class RingPollTest : public RingQueueTest {
protected:
    static constexpr uint32_t kTimeoutMs = 1500;

    void configure(userblk_dev_config& c) override {
        c.nr_queues = 2;
        c.nr_poll_queues = 1;
        c.timeout_ms = kTimeoutMs;
    }

    void SetUp() override {
        RingQueueTest::SetUp();
        if (IsSkipped() || HasFatalFailure())
            return;
        ASSERT_EQ(cfg_.nr_poll_queues, 1u) << "ADD_DEV kept no poll queue";
    }

    uint32_t flags() { return std::atomic_ref(didx()->flags).load(std::memory_order_relaxed); }
    void set_flags(uint32_t v) {
        std::atomic_ref(didx()->flags).store(v, std::memory_order_seq_cst);
    }

    // A polled read or write (io_uring with IORING_SETUP_IOPOLL, as fio --hipri) on another
    // thread: its result, or -errno.
    std::future<ssize_t> polled_io(bool write, off_t off, void* buf, size_t len = kBlock) {
        return std::async(std::launch::async, [this, write, off, buf, len]() -> ssize_t {
            int fd = ::open(path_.c_str(), (write ? O_WRONLY : O_RDONLY) | O_DIRECT | O_CLOEXEC);
            if (fd < 0)
                return -errno;
            io_uring ring;
            int r = io_uring_queue_init(4, &ring, IORING_SETUP_IOPOLL);
            if (r < 0) {
                ::close(fd);
                return r;
            }
            io_uring_sqe* sqe = io_uring_get_sqe(&ring);
            if (write)
                io_uring_prep_write(sqe, fd, buf, unsigned(len), off);
            else
                io_uring_prep_read(sqe, fd, buf, unsigned(len), off);
            ssize_t res = io_uring_submit(&ring);
            if (res == 1) {
                io_uring_cqe* cqe = nullptr;
                res = io_uring_wait_cqe(&ring, &cqe);
                if (res == 0) {
                    res = cqe->res;
                    io_uring_cqe_seen(&ring, cqe);
                }
            } else if (res >= 0) {
                res = -EAGAIN;
            }
            io_uring_queue_exit(&ring);
            ::close(fd);
            return res;
        });
    }

    // Spins on sq_tail (no poll(), no syscall) for up to 10 s; takes the request.
    std::optional<userblk_io_desc> spin_for_request() {
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (load(kidx()->sq_tail) == sq_head_) {
            if (std::chrono::steady_clock::now() > deadline)
                return std::nullopt;
        }
        userblk_io_desc d{};
        auto* sq = reinterpret_cast<userblk_io_desc*>(area_ + l_.sq_off);
        std::memcpy(&d, &sq[sq_head_ & (l_.sq_entries - 1)], sizeof(d));
        store(didx()->sq_head, ++sq_head_);
        return d;
    }

    // Publishes one completion without RING_ENTER: the poller must take it.
    void publish(const userblk_io_cpl& c) {
        auto* cq = reinterpret_cast<userblk_io_cpl*>(area_ + l_.cq_off);
        std::memcpy(&cq[cq_tail_ & (l_.cq_entries - 1)], &c, sizeof(c));
        store(didx()->cq_tail, ++cq_tail_);
    }

    uint64_t counter(const char* name) {
        std::string p = "/sys/block/" USERBLK_DISK_PREFIX + std::to_string(cfg_.dev_id) +
                        "/userblk/" + name;
        FILE* f = std::fopen(p.c_str(), "r");
        if (f == nullptr) {
            ADD_FAILURE() << p << ": " << std::strerror(errno);
            return 0;
        }
        unsigned long long v = 0;
        EXPECT_EQ(std::fscanf(f, "%llu", &v), 1) << p;
        std::fclose(f);
        return v;
    }
};

TEST_F(RingPollTest, TheFlagStartsSetAndAWaitWithItClearIsRefused) {
    EXPECT_EQ(flags(), (uint32_t)USERBLK_RING_NEED_WAKEUP)
        << "a daemon that knows nothing of spinning must be woken";
    set_flags(0);
    uint64_t before = rejected();
    EXPECT_EQ(enter(USERBLK_RING_ENTER_WAIT), -EINVAL) << "nothing would wake this wait";
    EXPECT_EQ(rejected(), before + 1);
    EXPECT_EQ(enter(0), 0) << "a RING_ENTER that does not wait is fine";
    set_flags(USERBLK_RING_NEED_WAKEUP);
    auto waiter = std::async(std::launch::async, [this] { return enter(USERBLK_RING_ENTER_WAIT); });
    EXPECT_EQ(waiter.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout);
    AlignedBlock dst;
    auto io = polled_io(false, 0, dst.data);
    ASSERT_EQ(waiter.wait_for(std::chrono::seconds(10)), std::future_status::ready)
        << "a sleeper with NEED_WAKEUP set was not woken";
    EXPECT_EQ(waiter.get(), 1);
    auto d = spin_for_request();
    ASSERT_TRUE(d);
    publish(answer(*d));
    ASSERT_EQ(io.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    EXPECT_EQ(io.get(), (ssize_t)kBlock);
}

TEST_F(RingPollTest, APolledReadIsReapedByItsSubmitterWithoutASyscallOrWakeup) {
    set_flags(0); // spinning
    uint64_t wakeups = counter("daemon_wakeups"), skipped = counter("daemon_wakeups_skipped");
    uint64_t polled = counter("poll_completions");
    for (int i = 0; i < 20; i++) {
        AlignedBlock dst;
        auto io = polled_io(false, off_t(i) * 4096, dst.data);
        auto d = spin_for_request();
        ASSERT_TRUE(d) << "request " << i << " never reached the ring";
        ASSERT_EQ(d->op, USERBLK_OP_READ);
        std::memset(buf(d->tag), 0x30 + i, kBlock);
        publish(answer(*d)); // no RING_ENTER: only the submitter's poll can take it
        ASSERT_EQ(io.wait_for(std::chrono::seconds(10)), std::future_status::ready)
            << "the poller did not reap the completion ring";
        ASSERT_EQ(io.get(), (ssize_t)kBlock);
        EXPECT_EQ(dst.data[kBlock - 1], char(0x30 + i));
    }
    EXPECT_EQ(load(kidx()->cq_head), cq_tail_) << "every completion was taken";
    EXPECT_EQ(counter("poll_completions") - polled, 20u);
    EXPECT_EQ(counter("daemon_wakeups"), wakeups) << "a spinning daemon was woken";
    EXPECT_EQ(counter("daemon_wakeups_skipped") - skipped, 20u);
}

TEST_F(RingPollTest, ADaemonThatStopsSpinningWithoutTheFlagIsCaughtByTheTimeout) {
    set_flags(0);
    AlignedBlock dst;
    auto t0 = std::chrono::steady_clock::now();
    auto io = polled_io(false, 0, dst.data);
    ASSERT_TRUE(spin_for_request()); // taken, then never answered, the flag left clear
    ASSERT_EQ(io.wait_for(std::chrono::seconds(30)), std::future_status::ready)
        << "a polled request of a silent daemon hangs";
    EXPECT_LT(io.get(), 0);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(kTimeoutMs * 6));
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_DEAD);
}

TEST_F(RingPollTest, ALyingCompletionTailWhilePolledIsRefusedAndTheRequestTimesOut) {
    set_flags(0);
    AlignedBlock dst;
    auto io = polled_io(false, 0, dst.data);
    auto d = spin_for_request();
    ASSERT_TRUE(d);
    auto* cq = reinterpret_cast<userblk_io_cpl*>(area_ + l_.cq_off);
    userblk_io_cpl good = answer(*d);
    std::memcpy(&cq[cq_tail_ & (l_.cq_entries - 1)], &good, sizeof(good));
    uint64_t before = rejected();
    store(didx()->cq_tail, cq_tail_ + l_.cq_entries + 1); // far ahead: a lie
    ASSERT_EQ(io.wait_for(std::chrono::seconds(30)), std::future_status::ready)
        << "a lying completion tail hangs the poller";
    EXPECT_LT(io.get(), 0) << "the request completed through a lying tail";
    EXPECT_GT(rejected(), before) << "the poller did not refuse the tail";
    EXPECT_EQ(load(kidx()->cq_head), cq_tail_) << "the poller took entries behind a lie";
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_DEAD);
}

TEST_F(RingPollTest, AnAnswerNobodyPolledIsTakenAtTheTimeoutNotFailed) {
    // The submitter submits polled I/O and does not poll for a while; the daemon answers in
    // time. The timeout reaps the ring before it calls the request lost.
    int fd = ::open(path_.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    io_uring ring;
    ASSERT_EQ(io_uring_queue_init(4, &ring, IORING_SETUP_IOPOLL), 0);
    AlignedBlock dst;
    io_uring_prep_read(io_uring_get_sqe(&ring), fd, dst.data, kBlock, 0);
    ASSERT_EQ(io_uring_submit(&ring), 1);
    set_flags(0);
    auto d = spin_for_request();
    ASSERT_TRUE(d);
    std::memset(buf(d->tag), 0x77, kBlock);
    publish(answer(*d));
    std::this_thread::sleep_for(std::chrono::milliseconds(kTimeoutMs * 2 + 1000));
    EXPECT_EQ(load(kidx()->cq_head), cq_tail_) << "the timeout did not reap the answer";
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_LIVE)
        << "an answered request was taken for a lost one";
    io_uring_cqe* cqe = nullptr;
    ASSERT_EQ(io_uring_wait_cqe(&ring, &cqe), 0);
    EXPECT_EQ(cqe->res, (int)kBlock);
    io_uring_cqe_seen(&ring, cqe);
    EXPECT_EQ(dst.data[0], 0x77);
    io_uring_queue_exit(&ring);
    ::close(fd);
}

TEST_F(RingPollTest, PollQueuesAreForRingAndLeaveADefaultQueue) {
    userblk_dev_config c = good_config(USERBLK_MODE_RING);
    c.nr_queues = 2;
    c.nr_poll_queues = 2;
    EXPECT_EQ(add_expect_error(c), -EINVAL) << "every queue a poll queue";
    c.nr_queues = 1;
    c.nr_poll_queues = 1;
    EXPECT_EQ(add_expect_error(c), -EINVAL) << "a single queue, polled";
    c = good_config(USERBLK_MODE_COPY);
    c.nr_queues = 2;
    c.nr_poll_queues = 1;
    EXPECT_EQ(add_expect_error(c), -EINVAL) << "poll queues for copy";
    c = good_config(USERBLK_MODE_RING);
    c.nr_queues = 2;
    c.recovery_timeout_ms = 1000;
    EXPECT_EQ(add_expect_error(c), -EINVAL) << "a recovery timeout without the feature";
}

} // namespace

int main(int argc, char** argv) {
    return userblk_test::run_uapi_tests(argc, argv);
}
