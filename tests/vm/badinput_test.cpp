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
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <uapi/userblk.h>

namespace {

std::string g_transport = "copy";
// An address no process maps, hidden from the compiler's buffer checks.
void* volatile g_bad_ptr = reinterpret_cast<void*>(16);

uint32_t mode_of(const std::string& name) {
    if (name == "copy")
        return USERBLK_MODE_COPY;
    if (name == "ring")
        return USERBLK_MODE_RING;
    if (name == "pipe")
        return USERBLK_MODE_PIPE;
    if (name == "splice")
        return USERBLK_MODE_SPLICE;
    return 0;
}

class Fd {
public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(o.release()) {}
    Fd& operator=(Fd&& o) noexcept {
        reset(o.release());
        return *this;
    }
    ~Fd() { reset(); }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1) {
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_;
};

// ioctl returning -errno on failure, the result otherwise.
template <typename Arg>
int xioctl(int fd, unsigned long cmd, Arg arg) {
    int r = ::ioctl(fd, cmd, arg);
    return r < 0 ? -errno : r;
}

userblk_dev_config good_config(uint32_t mode) {
    userblk_dev_config c{};
    c.abi_version = USERBLK_ABI_VERSION;
    c.dev_id = USERBLK_DEV_ID_ANY;
    c.mode = mode;
    c.logical_block_size = 512;
    c.size = 64ull << 20;
    c.nr_queues = 1;
    c.queue_depth = 4;
    c.max_io_bytes = 64 * 1024;
    c.timeout_ms = 20000;
    return c;
}

class ControlTest : public ::testing::Test {
protected:
    void SetUp() override {
        ctl_ = Fd(::open(USERBLK_CONTROL_PATH, O_RDWR | O_CLOEXEC));
        ASSERT_GE(ctl_.get(), 0) << USERBLK_CONTROL_PATH << ": " << std::strerror(errno);
    }
    void TearDown() override {
        for (uint32_t id : added_)
            xioctl(ctl_.get(), USERBLK_IOC_DEL_DEV, (unsigned long)id);
    }
    int add(userblk_dev_config& c) {
        int r = xioctl(ctl_.get(), USERBLK_IOC_ADD_DEV, &c);
        if (r == 0)
            added_.push_back(c.dev_id);
        return r;
    }
    int add_expect_error(userblk_dev_config c) { return add(c); }
    int open_queue(uint32_t dev, uint16_t q) {
        userblk_queue_open qo{};
        qo.dev_id = dev;
        qo.queue_id = q;
        return xioctl(ctl_.get(), USERBLK_IOC_OPEN_QUEUE, &qo);
    }

    Fd ctl_;
    std::vector<uint32_t> added_;
};

TEST_F(ControlTest, AddDevRejectsEveryBadField) {
    const uint32_t mode = mode_of(g_transport);
    ASSERT_NE(mode, 0u);
    struct Case {
        const char* what;
        void (*mutate)(userblk_dev_config&);
    } cases[] = {
        {"abi version", [](userblk_dev_config& c) { c.abi_version = 99; }},
        {"unknown feature", [](userblk_dev_config& c) { c.features = 1ull << 40; }},
        {"reserved", [](userblk_dev_config& c) { c.reserved[3] = 1; }},
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
    static constexpr size_t kBlock = 4096;
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
        for (int i = 0; i < 200 && ::access(path_.c_str(), F_OK) != 0; i++)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        ASSERT_EQ(::access(path_.c_str(), F_OK), 0) << path_ << " did not appear";
        buf_.resize(USERBLK_COPY_MIN_READ(cfg_.max_io_bytes) * 2);
    }

    // Start a direct 4 KiB read of the device at off, served by the test.
    std::future<ssize_t> read_async(off_t off, void* dst) {
        return std::async(std::launch::async, [this, off, dst] {
            int fd = ::open(path_.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
            if (fd < 0)
                return (ssize_t)-errno;
            ssize_t r = ::pread(fd, dst, kBlock, off);
            if (r < 0)
                r = -errno;
            ::close(fd);
            return r;
        });
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

struct AlignedBlock {
    AlignedBlock() { data = static_cast<char*>(std::aligned_alloc(4096, 4096)); }
    ~AlignedBlock() { std::free(data); }
    char* data;
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
    userblk_dev_config info{};
    info.abi_version = USERBLK_ABI_VERSION;
    info.dev_id = cfg_.dev_id;
    ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_GET_INFO, &info), 0);
    EXPECT_EQ(info.state, (uint32_t)USERBLK_STATE_DEAD);
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

} // namespace

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a.rfind("--transport=", 0) == 0)
            g_transport = a.substr(12);
    }
    if (::access(USERBLK_CONTROL_PATH, F_OK) != 0) {
        std::printf("SKIP: %s is missing (load userblk.ko first)\n", USERBLK_CONTROL_PATH);
        return 77;
    }
    if (mode_of(g_transport) == 0) {
        std::printf("SKIP: %s is not a userblk.ko transport\n", g_transport.c_str());
        return 77;
    }
    return RUN_ALL_TESTS();
}
