// ServedDevice: a device of the run's transport that one test serves by hand through its queue
// 0, speaking the raw uapi (descriptors, completions, the ring, the data fd, the tags' pipes).
#pragma once

#include <gtest/gtest.h>

#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <uapi/userblk.h>

#include "control_test.h"

namespace userblk_test {

inline constexpr size_t kBlock = kIoBlock;

inline std::string disk_of(uint32_t id) {
    return std::string("/dev/" USERBLK_DISK_PREFIX) + std::to_string(id);
}


inline std::vector<char> pattern(size_t len, int seed) {
    std::vector<char> v(len);
    for (size_t i = 0; i < len; i++)
        v[i] = char(i * 7 + seed * 31 + 1);
    return v;
}

struct Aligned {
    explicit Aligned(size_t n) : len(n) { data = static_cast<char*>(std::aligned_alloc(4096, n)); }
    ~Aligned() { std::free(data); }
    Aligned(const Aligned&) = delete;
    Aligned& operator=(const Aligned&) = delete;
    char* data;
    size_t len;
};

// A device of this run's transport that one test serves by hand through its queue 0.
class ServedDevice : public ControlTest {
protected:
    void SetUp() override {
        mode_ = mode_of(g_transport);
        ControlTest::SetUp();
    }

    // Adds and starts a device of depth 1 (so that requests share tag 0) with timeout_ms.
    void bring_up(uint32_t depth = 1, uint32_t timeout_ms = 20000, uint64_t features = 0) {
        cfg_ = good_config(mode_);
        cfg_.queue_depth = depth;
        cfg_.timeout_ms = timeout_ms;
        cfg_.features = features;
        ASSERT_EQ(add(cfg_), 0);
        q_ = Fd(open_queue(cfg_.dev_id, 0));
        ASSERT_GE(q_.get(), 0);
        if (mode_ == USERBLK_MODE_RING) {
            ASSERT_EQ(xioctl(q_.get(), USERBLK_IOC_RING_LAYOUT, &l_), 0);
            area_ = map_ring_area(q_.get(), l_);
            ASSERT_NE(area_, nullptr) << std::strerror(errno);
        }
        if (mode_ == USERBLK_MODE_SPLICE) {
            data_ = Fd(xioctl(q_.get(), USERBLK_IOC_SPLICE_DATA_FD, 0ul));
            ASSERT_GE(data_.get(), 0);
        }
        ready_queue(q_.get(), cfg_);
        ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_START_DEV, (unsigned long)cfg_.dev_id), 0);
        path_ = disk_of(cfg_.dev_id);
        ASSERT_TRUE(wait_for_path(path_)) << path_ << " did not appear";
    }
    void TearDown() override {
        if (area_ != nullptr)
            ::munmap(area_, l_.map_size);
        ControlTest::TearDown();
    }

    // A descriptor transport's next request (copy: its inline data goes to buf_).
    userblk_io_desc next_request(int timeout_ms = 10000) {
        pollfd p{q_.get(), POLLIN, 0};
        EXPECT_EQ(::poll(&p, 1, timeout_ms), 1) << "no request in time";
        buf_.resize(USERBLK_COPY_MIN_READ(cfg_.max_io_bytes));
        userblk_io_desc d{};
        ssize_t n = ::read(q_.get(), buf_.data(), mode_ == USERBLK_MODE_COPY ? buf_.size() : sizeof(d));
        EXPECT_GE(n, (ssize_t)sizeof(d)) << std::strerror(errno);
        std::memcpy(&d, buf_.data(), sizeof(d));
        return d;
    }
    // Answers d; a successful READ of copy carries data (len bytes) after the completion.
    ssize_t answer(const userblk_io_desc& d, int32_t result, const void* data = nullptr,
                   size_t len = 0) {
        std::vector<char> msg(sizeof(userblk_io_cpl) + len);
        userblk_io_cpl c{};
        c.tag = d.tag;
        c.gen = d.gen;
        c.result = result;
        std::memcpy(msg.data(), &c, sizeof(c));
        if (len)
            std::memcpy(msg.data() + sizeof(c), data, len);
        ssize_t r = ::write(q_.get(), msg.data(), msg.size());
        return r < 0 ? -errno : r;
    }
    char* ring_buf(uint16_t tag) { return area_ + l_.buf_off + size_t{tag} * l_.buf_size; }

    uint32_t mode_ = 0;
    userblk_dev_config cfg_{};
    userblk_ring_layout l_{};
    char* area_ = nullptr;
    Fd q_, data_;
    std::string path_;
    std::vector<char> buf_;
};


// A counter in the disk's sysfs directory userblk/ (0 if it cannot be read).
inline unsigned long long disk_counter(uint32_t id, const std::string& name) {
    std::ifstream f("/sys/block/" USERBLK_DISK_PREFIX + std::to_string(id) + "/userblk/" + name);
    unsigned long long v = 0;
    f >> v;
    return v;
}

} // namespace userblk_test
