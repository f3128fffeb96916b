// The GoogleTest fixture of the kernel-in-the-loop tests that speak the raw uapi: a control fd,
// and every device a test added deleted after it.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "uapi_test_util.h"

namespace userblk_test {

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
    // The device's state by GET_INFO, or 0 if GET_INFO fails.
    uint32_t state_of(uint32_t dev) {
        userblk_dev_config info{};
        info.abi_version = USERBLK_ABI_VERSION;
        info.dev_id = dev;
        return xioctl(ctl_.get(), USERBLK_IOC_GET_INFO, &info) == 0 ? info.state : 0;
    }
    int open_queue(uint32_t dev, uint16_t q) {
        userblk_queue_open qo{};
        qo.dev_id = dev;
        qo.queue_id = q;
        return xioctl(ctl_.get(), USERBLK_IOC_OPEN_QUEUE, &qo);
    }

    // What a queue needs before START_DEV: in pipe mode, a pipe per tag (kept in pipes_).
    void ready_queue(int qfd, const userblk_dev_config& c) {
        if (c.mode != USERBLK_MODE_PIPE)
            return;
        for (uint32_t tag = 0; tag < c.queue_depth; tag++) {
            int fds[2];
            ASSERT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
            pipes_.emplace_back(fds[0], fds[1]);
            ASSERT_GE(::fcntl(fds[1], F_SETPIPE_SZ, (int)c.max_io_bytes), (int)c.max_io_bytes);
            userblk_pipe_set ps{};
            ps.tag = tag;
            ps.read_fd = fds[0];
            ps.write_fd = fds[1];
            ASSERT_EQ(xioctl(qfd, USERBLK_IOC_PIPE_SET, &ps), 0) << "tag " << tag;
        }
    }

    struct PipeFds {
        PipeFds(int r_, int w_) : r(r_), w(w_) {}
        Fd r, w;
    };

    Fd ctl_;
    std::vector<uint32_t> added_;
    std::vector<PipeFds> pipes_;
};

// main() of a test program over the uapi: --transport=NAME picks g_transport; 77 (skip, with
// the reason) when userblk.ko is not loaded or NAME is not one of its transports.
inline int run_uapi_tests(int argc, char** argv) {
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

} // namespace userblk_test
