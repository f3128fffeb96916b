// Lending (USERBLK_F_LEND): a WRITE's own pages in a pipe. What the kernel promises
// (docs/splice-and-pipe.md, "Lending"), tried by a test that serves the device by hand:
// - the request completes only when it was answered and every buffer lent from it (tee'd
//   copies too) was released;
// - no pipe operation writes into a lent page: a write() that would merge into it (Dirty
//   Pipe), a splice into a file that could steal it, vmsplice, tee, a splice back into the
//   data fd;
// - liveness: a buffer kept past the request's timeout fails the request and the device,
//   not the kernel, and the page stays readable (no use-after-free: run on the debug kernel);
//   a daemon that dies with lent buffers fails its requests at once.
//
// Runs as root where userblk.ko is loaded (suite.py runs it for the lend variants):
//   userblk_lend_test --transport=splice
// Exit 77 (skip) when /dev/userblk-control is missing.

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <string>
#include <vector>

#include <uapi/userblk.h>

#include "served_device.h"

namespace {

using namespace userblk_test;
using namespace std::chrono_literals;

// Long enough for a completion that should not happen to show itself.
constexpr auto kNotYet = 400ms;

class LendDevice : public ServedDevice {
protected:
    void SetUp() override {
        ServedDevice::SetUp();
        if (mode_ != USERBLK_MODE_PIPE && mode_ != USERBLK_MODE_SPLICE)
            GTEST_SKIP() << "only pipe and splice lend pages";
    }

    void bring_up_lending(uint32_t timeout_ms = 20000) {
        bring_up(1, timeout_ms, USERBLK_F_LEND);
        int fds[2];
        ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
        own_r_ = Fd(fds[0]);
        own_w_ = Fd(fds[1]);
    }
    // The pipe that holds what a WRITE lent: the test's own pipe (as a daemon's pipe to its
    // socket or file), or for pipe with in_tag_pipe the tag's pipe itself.
    int lent_r() { return in_tag_pipe_ ? pipes_[0].r.get() : own_r_.get(); }
    int lent_w() { return in_tag_pipe_ ? pipes_[0].w.get() : own_w_.get(); }

    // Takes the next request (a WRITE of len bytes) and has its pages lent to lent_r():
    // splice moves them from the data fd; pipe put them in the tag's pipe as it handed out d,
    // and the test moves them on to its own pipe unless in_tag_pipe.
    userblk_io_desc lend_next(size_t len, bool in_tag_pipe = false) {
        userblk_io_desc d = next_request();
        EXPECT_EQ(d.op, USERBLK_OP_WRITE);
        EXPECT_EQ(d.len, len);
        in_tag_pipe_ = mode_ == USERBLK_MODE_PIPE && in_tag_pipe;
        if (mode_ == USERBLK_MODE_SPLICE) {
            loff_t off = (loff_t)USERBLK_SPLICE_OFF(d.tag, d.gen, 0);
            EXPECT_EQ(::splice(data_.get(), &off, own_w_.get(), nullptr, len, 0), (ssize_t)len)
                << std::strerror(errno);
        } else if (!in_tag_pipe_) {
            EXPECT_EQ(::splice(pipes_[0].r.get(), nullptr, own_w_.get(), nullptr, len, 0),
                      (ssize_t)len)
                << std::strerror(errno);
        }
        return d;
    }
    unsigned long long counter(const char* name) { return disk_counter(cfg_.dev_id, name); }
    std::vector<char> read_exact(int fd, size_t len) {
        std::vector<char> got(len);
        size_t done = 0;
        while (done < len) {
            ssize_t n = ::read(fd, got.data() + done, len - done);
            if (n <= 0)
                break;
            done += size_t(n);
        }
        got.resize(done);
        return got;
    }

    Fd own_r_, own_w_;
    bool in_tag_pipe_ = false;
};

// The lent pages are the request's: counted as lent, not copied; the answer alone does not
// complete the WRITE while the pipe still holds them, reading the pipe does.
TEST_F(LendDevice, AnAnsweredWriteWaitsForTheLastLentBuffer) {
    bring_up_lending();
    Aligned src(kBlock);
    auto want = pattern(kBlock, 11);
    std::memcpy(src.data, want.data(), kBlock);
    auto copied_k = counter("write_copied_kernel_bytes");
    auto copied_u = counter("write_copied_user_bytes");
    auto lent = counter("write_lent_bytes");
    auto w = io_async(path_, true, 0, src.data, kBlock);
    userblk_io_desc d = lend_next(kBlock);
    EXPECT_EQ(counter("write_lent_bytes") - lent, kBlock);
    EXPECT_EQ(counter("write_copied_kernel_bytes"), copied_k) << "a lent WRITE was copied";
    EXPECT_EQ(counter("write_copied_user_bytes"), copied_u) << "a lent WRITE was copied";
    ASSERT_EQ(answer(d, 0), (ssize_t)sizeof(userblk_io_cpl));
    EXPECT_EQ(w.wait_for(kNotYet), std::future_status::timeout)
        << "the WRITE completed while a pipe still held its pages";
    EXPECT_EQ(read_exact(lent_r(), kBlock), want);
    ASSERT_EQ(w.wait_for(5s), std::future_status::ready) << "the last release did not complete it";
    EXPECT_EQ(w.get(), (ssize_t)kBlock);
}

// Released before the answer: the answer completes it at once.
TEST_F(LendDevice, AWriteWhosePagesCameBackCompletesAtItsAnswer) {
    bring_up_lending();
    Aligned src(2 * kBlock);
    auto want = pattern(2 * kBlock, 12);
    std::memcpy(src.data, want.data(), 2 * kBlock);
    auto w = io_async(path_, true, 4096, src.data, 2 * kBlock);
    userblk_io_desc d = lend_next(2 * kBlock);
    EXPECT_EQ(read_exact(lent_r(), 2 * kBlock), want);
    EXPECT_EQ(w.wait_for(kNotYet), std::future_status::timeout) << "completed before its answer";
    ASSERT_EQ(answer(d, 0), (ssize_t)sizeof(userblk_io_cpl));
    ASSERT_EQ(w.wait_for(5s), std::future_status::ready);
    EXPECT_EQ(w.get(), (ssize_t)(2 * kBlock));
}

// tee() gives a second pipe buffers over the same pages: they hold the request too.
TEST_F(LendDevice, ATeedCopyHoldsTheRequestToo) {
    bring_up_lending();
    Aligned src(kBlock);
    auto want = pattern(kBlock, 13);
    std::memcpy(src.data, want.data(), kBlock);
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    Fd t_r(fds[0]), t_w(fds[1]);
    auto w = io_async(path_, true, 0, src.data, kBlock);
    userblk_io_desc d = lend_next(kBlock);
    ASSERT_EQ(::tee(lent_r(), t_w.get(), kBlock, SPLICE_F_NONBLOCK), (ssize_t)kBlock)
        << std::strerror(errno);
    EXPECT_EQ(read_exact(lent_r(), kBlock), want);
    ASSERT_EQ(answer(d, 0), (ssize_t)sizeof(userblk_io_cpl));
    EXPECT_EQ(w.wait_for(kNotYet), std::future_status::timeout)
        << "the WRITE completed while a tee'd copy still held its pages";
    EXPECT_EQ(read_exact(t_r.get(), kBlock), want);
    ASSERT_EQ(w.wait_for(5s), std::future_status::ready);
    EXPECT_EQ(w.get(), (ssize_t)kBlock);
}

// Dirty Pipe's shape: a 512-byte WRITE lends the first 512 bytes of a page whose rest holds
// other data of the writer. A write() into the pipe would append into that page if the
// buffer could merge; it must go into a page of its own, leaving the writer's bytes alone.
TEST_F(LendDevice, AWriteIntoThePipeNeverLandsInALentPage) {
    bring_up_lending();
    Aligned src(kBlock);
    auto page = pattern(kBlock, 14);
    std::memcpy(src.data, page.data(), kBlock);
    auto w = io_async(path_, true, 0, src.data, 512);
    userblk_io_desc d = lend_next(512, true); // pipe: write() into the tag's pipe itself
    const std::string attack(100, 'Z');
    ASSERT_EQ(::write(lent_w(), attack.data(), attack.size()), (ssize_t)attack.size());
    EXPECT_EQ(std::memcmp(src.data, page.data(), kBlock), 0)
        << "a write() into the pipe changed the writer's page";
    auto got = read_exact(lent_r(), 512 + attack.size());
    ASSERT_EQ(got.size(), 512 + attack.size());
    EXPECT_EQ(std::memcmp(got.data(), page.data(), 512), 0);
    EXPECT_EQ(std::string(got.data() + 512, attack.size()), attack);
    ASSERT_EQ(answer(d, 0), (ssize_t)sizeof(userblk_io_cpl));
    ASSERT_EQ(w.wait_for(5s), std::future_status::ready);
    EXPECT_EQ(w.get(), 512);
    EXPECT_EQ(std::memcmp(src.data, page.data(), kBlock), 0);
}

// A splice into a file (asking to move the pages) copies them: writing the file afterwards
// leaves the writer's page alone. vmsplice out of the pipe (with the gift flag) copies too.
TEST_F(LendDevice, ASpliceIntoAFileOrVmspliceNeverTakesALentPage) {
    bring_up_lending();
    Aligned src(2 * kBlock);
    auto want = pattern(2 * kBlock, 15);
    std::memcpy(src.data, want.data(), 2 * kBlock);
    char name[] = "/tmp/userblk-lend-XXXXXX";
    int f = ::mkstemp(name);
    ASSERT_GE(f, 0);
    ::unlink(name);
    Fd file(f);
    auto w = io_async(path_, true, 0, src.data, 2 * kBlock);
    userblk_io_desc d = lend_next(2 * kBlock);
    loff_t at = 0;
    ASSERT_EQ(::splice(lent_r(), nullptr, file.get(), &at, kBlock, SPLICE_F_MOVE), (ssize_t)kBlock)
        << std::strerror(errno);
    const std::string scribble(kBlock, 'Q');
    ASSERT_EQ(::pwrite(file.get(), scribble.data(), kBlock, 0), (ssize_t)kBlock);
    EXPECT_EQ(std::memcmp(src.data, want.data(), 2 * kBlock), 0)
        << "writing the file the pages were spliced into changed the writer's data";
    std::vector<char> out(kBlock);
    iovec iov{out.data(), kBlock};
    ASSERT_EQ(::vmsplice(lent_r(), &iov, 1, SPLICE_F_GIFT), (ssize_t)kBlock) << std::strerror(errno);
    EXPECT_EQ(std::memcmp(out.data(), want.data() + kBlock, kBlock), 0);
    std::memset(out.data(), 'V', kBlock);
    EXPECT_EQ(std::memcmp(src.data, want.data(), 2 * kBlock), 0)
        << "vmsplice handed out the writer's page";
    ASSERT_EQ(answer(d, 0), (ssize_t)sizeof(userblk_io_cpl));
    ASSERT_EQ(w.wait_for(5s), std::future_status::ready);
    EXPECT_EQ(w.get(), (ssize_t)(2 * kBlock));
}

// The data fd takes data only for a READ: lent pages spliced back at the WRITE's own offset
// are refused, and nothing changes.
TEST_F(LendDevice, ALentPageSplicedBackIntoTheDataFdIsRefused) {
    if (mode_ != USERBLK_MODE_SPLICE)
        GTEST_SKIP() << "the data fd is splice's";
    bring_up_lending();
    Aligned src(kBlock);
    auto want = pattern(kBlock, 16);
    std::memcpy(src.data, want.data(), kBlock);
    auto w = io_async(path_, true, 0, src.data, kBlock);
    userblk_io_desc d = lend_next(kBlock);
    loff_t off = (loff_t)USERBLK_SPLICE_OFF(d.tag, d.gen, 0);
    EXPECT_EQ(::splice(lent_r(), nullptr, data_.get(), &off, kBlock, 0), -1);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(std::memcmp(src.data, want.data(), kBlock), 0);
    EXPECT_EQ(read_exact(lent_r(), kBlock), want) << "the refused splice consumed the pipe";
    ASSERT_EQ(answer(d, 0), (ssize_t)sizeof(userblk_io_cpl));
    ASSERT_EQ(w.wait_for(5s), std::future_status::ready);
    EXPECT_EQ(w.get(), (ssize_t)kBlock);
}

// Liveness: a tee'd buffer kept past the timeout. The WRITE fails at its timeout (the device
// with it), counted as abandoned; the kept buffer still reads the page, which nobody freed.
TEST_F(LendDevice, ABufferKeptPastTheTimeoutFailsTheRequestNotTheKernel) {
    bring_up_lending(1000);
    Aligned src(kBlock);
    auto want = pattern(kBlock, 17);
    std::memcpy(src.data, want.data(), kBlock);
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    Fd t_r(fds[0]), t_w(fds[1]);
    auto abandoned = counter("lent_abandoned_requests");
    auto w = io_async(path_, true, 0, src.data, kBlock);
    userblk_io_desc d = lend_next(kBlock);
    ASSERT_EQ(::tee(lent_r(), t_w.get(), kBlock, SPLICE_F_NONBLOCK), (ssize_t)kBlock);
    EXPECT_EQ(read_exact(lent_r(), kBlock), want);
    ASSERT_EQ(answer(d, 0), (ssize_t)sizeof(userblk_io_cpl));
    ASSERT_EQ(w.wait_for(8s), std::future_status::ready)
        << "a kept buffer hangs the writer past its timeout";
    EXPECT_LT(w.get(), 0) << "a WRITE whose pages are still lent completed as if returned";
    EXPECT_EQ(counter("lent_abandoned_requests") - abandoned, 1u);
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_DEAD);
    EXPECT_EQ(read_exact(t_r.get(), kBlock), want) << "the kept buffer lost its page";
}

// A daemon that dies (its queue fd closes) with lent buffers in a pipe: the WRITE fails at
// once; the pipe's buffers keep their page until the pipe goes.
TEST_F(LendDevice, ADaemonThatDiesWithLentBuffersFailsItsWrites) {
    bring_up_lending();
    Aligned src(kBlock);
    auto want = pattern(kBlock, 18);
    std::memcpy(src.data, want.data(), kBlock);
    auto abandoned = counter("lent_abandoned_requests");
    auto w = io_async(path_, true, 0, src.data, kBlock);
    (void)lend_next(kBlock, true);
    data_ = Fd();
    q_ = Fd();
    ASSERT_EQ(w.wait_for(5s), std::future_status::ready) << "the WRITE outlived its daemon";
    EXPECT_EQ(w.get(), -EIO);
    EXPECT_EQ(counter("lent_abandoned_requests") - abandoned, 1u);
    // The pipe holding the lent buffers still reads the page: nobody freed it (pipe: the tag's
    // pipe keeps it until the device is deleted).
    EXPECT_EQ(read_exact(lent_r(), kBlock), want);
}

// pipe: a WRITE answered while its lent buffers are still in its tag's pipe (nobody read
// them, and nobody else would release them) ends at its answer, not at the timeout: an answer
// of 0 for data the daemon never took is an error, and the pipe is empty for the next request.
TEST_F(LendDevice, AWriteAnsweredWithItsPagesStillInItsTagPipeEndsAtOnce) {
    if (mode_ != USERBLK_MODE_PIPE)
        GTEST_SKIP() << "the tags' pipes are pipe's";
    bring_up_lending();
    Aligned src(kBlock);
    std::memcpy(src.data, pattern(kBlock, 19).data(), kBlock);
    for (int32_t result : {0, -EIO}) {
        auto w = io_async(path_, true, 0, src.data, kBlock);
        userblk_io_desc d = lend_next(kBlock, true);
        ASSERT_EQ(answer(d, result), (ssize_t)sizeof(userblk_io_cpl));
        ASSERT_EQ(w.wait_for(5s), std::future_status::ready)
            << "answered " << result << ": the WRITE waits for buffers nobody will release";
        EXPECT_EQ(w.get(), -EIO) << "answered " << result;
        char c;
        EXPECT_EQ(::read(lent_r(), &c, 1), -1);
        EXPECT_EQ(errno, EAGAIN);
    }
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_LIVE) << "the device died of it";
}

} // namespace

int main(int argc, char** argv) {
    return userblk_test::run_uapi_tests(argc, argv);
}
