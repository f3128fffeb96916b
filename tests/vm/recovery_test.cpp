// Recovery at the kernel boundary (USERBLK_F_RECOVERY): a daemon that goes away with requests
// in hand leaves a device that holds them, and a new daemon gets them again under new gens;
// I/O that comes meanwhile waits; the recovery timeout fails what is held; a daemon that dies
// during recovery changes nothing; the answers the old daemon had published (ring) are taken;
// a planned hand-over (HANDOVER_DEV) ends the old daemon's queue but takes its last answers.
// The tests serve the device by hand through its one queue, as the old and the new daemon.
//
// Runs as root where userblk.ko is loaded (suite.py runs it once per transport):
//   userblk_recovery_test --transport=ring
// copy and ring recover; for pipe and splice ADD_DEV must refuse the feature.

#include <gtest/gtest.h>

#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <uapi/userblk.h>

#include "control_test.h"

namespace {

using namespace userblk_test;
using namespace std::chrono_literals;

bool recovers(uint32_t mode) {
    return mode == USERBLK_MODE_COPY || mode == USERBLK_MODE_RING;
}

// One daemon's hold on queue 0 of a device: its fd, and for ring its mapping and indices.
class HandDaemon {
public:
    HandDaemon(int qfd, const userblk_dev_config& cfg) : q_(qfd), cfg_(cfg) {
        if (cfg_.mode != USERBLK_MODE_RING || q_.get() < 0)
            return;
        EXPECT_EQ(xioctl(q_.get(), USERBLK_IOC_RING_LAYOUT, &l_), 0);
        area_ = map_ring_area(q_.get(), l_);
        EXPECT_NE(area_, nullptr) << std::strerror(errno);
        if (area_ != nullptr) {
            sq_head_ = didx()->sq_head;
            cq_tail_ = didx()->cq_tail;
        }
    }
    ~HandDaemon() { die(); }
    HandDaemon(const HandDaemon&) = delete;
    HandDaemon& operator=(const HandDaemon&) = delete;

    bool ok() const { return q_.get() >= 0 && (cfg_.mode != USERBLK_MODE_RING || area_); }

    // What a daemon's exit does to its queue: the mapping goes, then the fd.
    void die() {
        if (area_ != nullptr)
            ::munmap(area_, l_.map_size);
        area_ = nullptr;
        q_.reset();
    }

    // The next request (within timeout_ms), or one with len 0 and tag 0xffff if none came.
    userblk_io_desc next_request(int timeout_ms = 10000) {
        userblk_io_desc d{};
        d.tag = 0xffff;
        pollfd p{q_.get(), POLLIN, 0};
        if (::poll(&p, 1, timeout_ms) != 1)
            return d;
        if (cfg_.mode == USERBLK_MODE_RING) {
            auto* sq = reinterpret_cast<userblk_io_desc*>(area_ + l_.sq_off);
            std::memcpy(&d, &sq[sq_head_ & (l_.sq_entries - 1)], sizeof(d));
            store(didx()->sq_head, ++sq_head_);
            return d;
        }
        buf_.resize(USERBLK_COPY_MIN_READ(cfg_.max_io_bytes));
        ssize_t n = ::read(q_.get(), buf_.data(), buf_.size());
        EXPECT_GE(n, (ssize_t)sizeof(d)) << std::strerror(errno);
        if (n >= (ssize_t)sizeof(d))
            std::memcpy(&d, buf_.data(), sizeof(d));
        return d;
    }

    // Answers d (as the request on tag with gen, d's own unless said) and, for a READ, its
    // data. ring: the answer is published and handed over by RING_ENTER(0) unless
    // publish_only. 0 or -errno.
    int answer(const userblk_io_desc& d, const void* data, uint16_t tag, uint32_t gen,
               bool publish_only = false) {
        userblk_io_cpl c{};
        c.tag = tag;
        c.gen = gen;
        size_t len = d.op == USERBLK_OP_READ ? d.len : 0;
        if (cfg_.mode == USERBLK_MODE_RING) {
            if (len)
                std::memcpy(area_ + l_.buf_off + size_t{tag} * l_.buf_size, data, len);
            auto* cq = reinterpret_cast<userblk_io_cpl*>(area_ + l_.cq_off);
            std::memcpy(&cq[cq_tail_ & (l_.cq_entries - 1)], &c, sizeof(c));
            store(didx()->cq_tail, ++cq_tail_);
            if (publish_only)
                return 0;
            return xioctl(q_.get(), USERBLK_IOC_RING_ENTER, 0ul) < 0 ? -errno : 0;
        }
        std::vector<char> msg(sizeof(c) + len);
        std::memcpy(msg.data(), &c, sizeof(c));
        if (len)
            std::memcpy(msg.data() + sizeof(c), data, len);
        return ::write(q_.get(), msg.data(), msg.size()) < 0 ? -errno : 0;
    }
    int answer(const userblk_io_desc& d, const void* data = nullptr) {
        return answer(d, data, d.tag, d.gen);
    }
    // A WRITE's data as this daemon sees it: after its descriptor (copy), in its tag's buffer.
    const char* write_data(const userblk_io_desc& d) const {
        if (cfg_.mode == USERBLK_MODE_RING)
            return area_ + l_.buf_off + size_t{d.tag} * l_.buf_size;
        return buf_.data() + sizeof(userblk_io_desc);
    }
    // What the daemon's loop sees when it asks for more: copy's read() (0 at end of file) or
    // ring's RING_ENTER with a wait (the need-wake-up flag set first). 0 or -errno.
    long ask_for_more() {
        if (cfg_.mode == USERBLK_MODE_RING) {
            std::atomic_ref(didx()->flags).fetch_or(USERBLK_RING_NEED_WAKEUP);
            int r =
                xioctl(q_.get(), USERBLK_IOC_RING_ENTER, (unsigned long)USERBLK_RING_ENTER_WAIT);
            return r < 0 ? r : 0;
        }
        buf_.resize(USERBLK_COPY_MIN_READ(cfg_.max_io_bytes));
        ssize_t n = ::read(q_.get(), buf_.data(), buf_.size());
        return n < 0 ? -errno : n;
    }
    // poll()'s events on the queue fd, without waiting.
    short events() {
        pollfd p{q_.get(), POLLIN, 0};
        return ::poll(&p, 1, 0) == 1 ? p.revents : 0;
    }
    uint64_t ring_rejected() {
        return std::atomic_ref(kidx()->rejected).load(std::memory_order_relaxed);
    }

private:
    userblk_ring_kernel_indices* kidx() {
        return reinterpret_cast<userblk_ring_kernel_indices*>(area_ + l_.kernel_off);
    }
    userblk_ring_daemon_indices* didx() {
        return reinterpret_cast<userblk_ring_daemon_indices*>(area_ + l_.daemon_off);
    }
    static void store(uint32_t& v, uint32_t x) {
        std::atomic_ref(v).store(x, std::memory_order_release);
    }

    Fd q_;
    userblk_dev_config cfg_;
    userblk_ring_layout l_{};
    char* area_ = nullptr;
    uint32_t sq_head_ = 0;
    uint32_t cq_tail_ = 0;
    std::vector<char> buf_;
};

std::vector<char> pattern_of(size_t len, int seed) {
    std::vector<char> v(len);
    for (size_t i = 0; i < len; i++)
        v[i] = char(i * 13 + seed * 7 + 3);
    return v;
}

class RecoveryTest : public ControlTest {
protected:
    void SetUp() override {
        mode_ = mode_of(g_transport);
        ControlTest::SetUp();
        if (!recovers(mode_))
            GTEST_SKIP() << g_transport << " does not recover (USERBLK_F_RECOVERY is for copy "
                         << "and ring); RecoveryBadInput checks that ADD_DEV says so";
    }

    // A live device with recovery, served by daemon_.
    void bring_up(uint32_t recovery_timeout_ms = 20000) {
        cfg_ = good_config(mode_);
        cfg_.features = USERBLK_F_RECOVERY;
        cfg_.recovery_timeout_ms = recovery_timeout_ms;
        ASSERT_EQ(add(cfg_), 0);
        ASSERT_EQ(cfg_.recovery_timeout_ms, recovery_timeout_ms);
        daemon_ = std::make_unique<HandDaemon>(open_queue(cfg_.dev_id, 0), cfg_);
        ASSERT_TRUE(daemon_->ok());
        ASSERT_EQ(start(), 0);
        path_ = std::string("/dev/" USERBLK_DISK_PREFIX) + std::to_string(cfg_.dev_id);
        ASSERT_TRUE(wait_for_path(path_)) << path_ << " did not appear";
    }
    int start() { return xioctl(ctl_.get(), USERBLK_IOC_START_DEV, (unsigned long)cfg_.dev_id); }
    int recover() {
        return xioctl(ctl_.get(), USERBLK_IOC_RECOVER_DEV, (unsigned long)cfg_.dev_id);
    }
    int hand_over() {
        return xioctl(ctl_.get(), USERBLK_IOC_HANDOVER_DEV, (unsigned long)cfg_.dev_id);
    }
    // The next daemon: RECOVER_DEV, then its queue.
    void take_over() {
        ASSERT_EQ(recover(), 0);
        daemon_ = std::make_unique<HandDaemon>(open_queue(cfg_.dev_id, 0), cfg_);
        ASSERT_TRUE(daemon_->ok());
    }

    uint32_t mode_ = 0;
    userblk_dev_config cfg_{};
    std::unique_ptr<HandDaemon> daemon_;
    std::string path_;
};

template <typename T>
bool pending(std::future<T>& f, std::chrono::milliseconds d = 300ms) {
    return f.wait_for(d) == std::future_status::timeout;
}

// The request the old daemon had comes back to the new one under a new (tag, gen): gens count
// a tag's hand-outs and go on counting across the recovery, so no pair is handed out twice.
// The old daemon's answer is refused; the new one's completes the read with its data.
TEST_F(RecoveryTest, AHeldReadIsHandedToTheNextDaemonUnderANewGen) {
    bring_up();
    AlignedBlock out;
    auto io = io_async(path_, false, 8192, out.data);
    userblk_io_desc d1 = daemon_->next_request();
    ASSERT_EQ(d1.op, USERBLK_OP_READ);
    daemon_->die();
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_RECOVERING);
    EXPECT_TRUE(pending(io)) << "the read failed instead of being held";

    take_over();
    EXPECT_EQ(daemon_->next_request(300).tag, 0xffff) << "dispatched before START_DEV";
    ASSERT_EQ(start(), 0);
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_LIVE);
    userblk_io_desc d2 = daemon_->next_request();
    ASSERT_EQ(d2.op, USERBLK_OP_READ);
    EXPECT_EQ(d2.offset, d1.offset);
    EXPECT_EQ(d2.len, d1.len);
    EXPECT_TRUE(d2.tag != d1.tag || d2.gen != d1.gen)
        << "tag " << d1.tag << " gen " << d1.gen << " handed out twice";
    auto data = pattern_of(d2.len, 1);
    // The old daemon's answer is stale: copy refuses it, ring counts it as rejected.
    if (mode_ == USERBLK_MODE_COPY) {
        EXPECT_EQ(daemon_->answer(d2, data.data(), d1.tag, d1.gen), -ENOENT);
    } else {
        uint64_t before = daemon_->ring_rejected();
        EXPECT_EQ(daemon_->answer(d2, data.data(), d1.tag, d1.gen), 0);
        EXPECT_EQ(daemon_->ring_rejected(), before + 1);
    }
    EXPECT_TRUE(pending(io, 100ms)) << "a stale answer completed the read";
    ASSERT_EQ(daemon_->answer(d2, data.data()), 0);
    ASSERT_EQ(io.get(), (ssize_t)kIoBlock);
    EXPECT_EQ(std::memcmp(out.data, data.data(), kIoBlock), 0);
}

// A write that comes while the device recovers waits, and the next daemon gets it whole.
TEST_F(RecoveryTest, IoDuringRecoveryWaitsAndReachesTheNextDaemon) {
    bring_up();
    daemon_->die();
    ASSERT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_RECOVERING);
    AlignedBlock in;
    auto data = pattern_of(kIoBlock, 2);
    std::memcpy(in.data, data.data(), kIoBlock);
    auto io = io_async(path_, true, 4096, in.data);
    EXPECT_TRUE(pending(io)) << "a write during recovery did not wait";
    take_over();
    ASSERT_EQ(start(), 0);
    userblk_io_desc d = daemon_->next_request();
    ASSERT_EQ(d.op, USERBLK_OP_WRITE);
    EXPECT_EQ(d.offset, 4096u);
    ASSERT_EQ(d.len, kIoBlock);
    EXPECT_EQ(std::memcmp(daemon_->write_data(d), data.data(), kIoBlock), 0);
    ASSERT_EQ(daemon_->answer(d), 0);
    EXPECT_EQ(io.get(), (ssize_t)kIoBlock);
}

// Nobody takes over in time: the held read fails, the device is dead and can be deleted.
TEST_F(RecoveryTest, TheRecoveryTimeoutFailsHeldIo) {
    bring_up(500);
    AlignedBlock out;
    auto io = io_async(path_, false, 0, out.data);
    ASSERT_NE(daemon_->next_request().tag, 0xffff);
    auto died = std::chrono::steady_clock::now();
    daemon_->die();
    ASSERT_EQ(io.wait_for(10s), std::future_status::ready) << "held I/O outlived the timeout";
    EXPECT_EQ(io.get(), -EIO);
    auto took = std::chrono::steady_clock::now() - died;
    EXPECT_GE(took, 400ms);
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_DEAD);
    EXPECT_EQ(recover(), -ESHUTDOWN);
    EXPECT_EQ(open_queue(cfg_.dev_id, 0), -ESHUTDOWN);
    // New I/O fails fast too.
    auto later = io_async(path_, false, 0, out.data);
    ASSERT_EQ(later.wait_for(5s), std::future_status::ready);
    EXPECT_EQ(later.get(), -EIO);
}

// A new daemon that dies before its START_DEV: still recovering, the next one gets the read.
TEST_F(RecoveryTest, ADaemonThatDiesDuringRecoveryChangesNothing) {
    bring_up();
    AlignedBlock out;
    auto io = io_async(path_, false, 0, out.data);
    ASSERT_NE(daemon_->next_request().tag, 0xffff);
    daemon_->die();
    take_over();
    daemon_->die();
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_RECOVERING);
    EXPECT_EQ(start(), -ENOTCONN) << "START_DEV without a queue";
    take_over();
    ASSERT_EQ(start(), 0);
    userblk_io_desc d = daemon_->next_request();
    ASSERT_EQ(d.op, USERBLK_OP_READ);
    auto data = pattern_of(d.len, 3);
    ASSERT_EQ(daemon_->answer(d, data.data()), 0);
    ASSERT_EQ(io.get(), (ssize_t)kIoBlock);
    EXPECT_EQ(std::memcmp(out.data, data.data(), kIoBlock), 0);
    // Live again: the next death begins a new recovery.
    daemon_->die();
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_RECOVERING);
}

// ring: an answer published to the ring before the daemon died completes its request; it is
// not handed out again.
TEST_F(RecoveryTest, AnAnswerPublishedBeforeTheDeathIsTaken) {
    if (mode_ != USERBLK_MODE_RING)
        GTEST_SKIP() << "copy's answers are taken by write() at once";
    bring_up();
    AlignedBlock out;
    auto io = io_async(path_, false, 0, out.data);
    userblk_io_desc d = daemon_->next_request();
    ASSERT_EQ(d.op, USERBLK_OP_READ);
    auto data = pattern_of(d.len, 4);
    ASSERT_EQ(daemon_->answer(d, data.data(), d.tag, d.gen, /*publish_only=*/true), 0);
    daemon_->die();
    ASSERT_EQ(io.wait_for(5s), std::future_status::ready) << "the published answer was lost";
    ASSERT_EQ(io.get(), (ssize_t)kIoBlock);
    EXPECT_EQ(std::memcmp(out.data, data.data(), kIoBlock), 0);
    take_over();
    ASSERT_EQ(start(), 0);
    EXPECT_EQ(daemon_->next_request(300).tag, 0xffff) << "an answered request came back";
}

// A planned upgrade: HANDOVER_DEV makes the live device recover at once. The old daemon's
// queue gives it nothing more (end of file; ring: ENODEV), even while it waits, yet the answer
// it owes is taken; I/O from then on waits for the next daemon, which gets it after START_DEV.
TEST_F(RecoveryTest, AHandOverEndsTheOldDaemonsQueueAndTakesItsLastAnswers) {
    bring_up();
    AlignedBlock out, out2;
    auto io = io_async(path_, false, 0, out.data);
    userblk_io_desc d = daemon_->next_request();
    ASSERT_EQ(d.op, USERBLK_OP_READ);
    // The old daemon waits for more when the hand-over comes.
    auto asked = std::async(std::launch::async, [&] { return daemon_->ask_for_more(); });
    EXPECT_TRUE(pending(asked, 200ms)) << "the wait returned before the hand-over";
    ASSERT_EQ(hand_over(), 0);
    ASSERT_EQ(asked.wait_for(5s), std::future_status::ready) << "the hand-over did not wake it";
    const long end = mode_ == USERBLK_MODE_RING ? -ENODEV : 0;
    EXPECT_EQ(asked.get(), end);
    EXPECT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_RECOVERING);
    EXPECT_EQ(hand_over(), -EBUSY) << "a second hand-over of a recovering device";
    EXPECT_TRUE(daemon_->events() & POLLHUP) << "poll() does not say the queue has ended";
    // I/O that comes now waits, and the old daemon is not given it.
    auto io2 = io_async(path_, false, 8192, out2.data);
    EXPECT_TRUE(pending(io2)) << "I/O after the hand-over did not wait";
    EXPECT_EQ(daemon_->ask_for_more(), end) << "the old daemon was given more";
    // Its last answer is still taken (ring: reaped by the RING_ENTER that then says ENODEV).
    auto data = pattern_of(d.len, 5);
    EXPECT_EQ(daemon_->answer(d, data.data()), mode_ == USERBLK_MODE_RING ? -ENODEV : 0);
    ASSERT_EQ(io.wait_for(5s), std::future_status::ready) << "the old daemon's answer was lost";
    ASSERT_EQ(io.get(), (ssize_t)kIoBlock);
    EXPECT_EQ(std::memcmp(out.data, data.data(), kIoBlock), 0);
    daemon_->die();
    take_over();
    ASSERT_EQ(start(), 0);
    userblk_io_desc d2 = daemon_->next_request();
    ASSERT_EQ(d2.op, USERBLK_OP_READ);
    EXPECT_EQ(d2.offset, 8192u);
    auto data2 = pattern_of(d2.len, 6);
    ASSERT_EQ(daemon_->answer(d2, data2.data()), 0);
    ASSERT_EQ(io2.get(), (ssize_t)kIoBlock);
    EXPECT_EQ(std::memcmp(out2.data, data2.data(), kIoBlock), 0);
}

// Deleting a recovering device fails what it holds and removes it.
TEST_F(RecoveryTest, DeletingARecoveringDeviceFailsHeldIo) {
    bring_up();
    AlignedBlock out;
    auto io = io_async(path_, false, 0, out.data);
    ASSERT_NE(daemon_->next_request().tag, 0xffff);
    daemon_->die();
    ASSERT_EQ(state_of(cfg_.dev_id), (uint32_t)USERBLK_STATE_RECOVERING);
    ASSERT_EQ(xioctl(ctl_.get(), USERBLK_IOC_DEL_DEV, (unsigned long)cfg_.dev_id), 0);
    ASSERT_EQ(io.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(io.get(), -EIO);
    EXPECT_EQ(state_of(cfg_.dev_id), 0u) << "the device is still there";
}

TEST_F(ControlTest, RecoveryBadInput) {
    const uint32_t mode = mode_of(g_transport);
    userblk_dev_config c = good_config(mode);
    c.features = USERBLK_F_RECOVERY;
    if (!recovers(mode)) {
        EXPECT_EQ(add_expect_error(c), -EINVAL) << g_transport << " took USERBLK_F_RECOVERY";
        return;
    }
    userblk_dev_config plain = good_config(mode);
    ASSERT_EQ(add(plain), 0);
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_HANDOVER_DEV, (unsigned long)plain.dev_id), -EINVAL)
        << "HANDOVER_DEV of a device without USERBLK_F_RECOVERY";
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_HANDOVER_DEV, (unsigned long)USERBLK_MAX_DEVICES),
              -ENODEV);
    c.recovery_timeout_ms = USERBLK_MIN_TIMEOUT_MS - 1;
    EXPECT_EQ(add_expect_error(c), -EINVAL) << "recovery timeout below the minimum";
    c.recovery_timeout_ms = USERBLK_MAX_TIMEOUT_MS + 1;
    EXPECT_EQ(add_expect_error(c), -EINVAL) << "recovery timeout above the maximum";
    c.recovery_timeout_ms = 0;
    ASSERT_EQ(add(c), 0);
    EXPECT_EQ(c.recovery_timeout_ms, USERBLK_DEFAULT_RECOVERY_TIMEOUT_MS);
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_RECOVER_DEV, (unsigned long)c.dev_id), -EBUSY)
        << "RECOVER_DEV of a device that was never live";
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_HANDOVER_DEV, (unsigned long)c.dev_id), -EBUSY)
        << "HANDOVER_DEV of a device that was never live";
    EXPECT_EQ(xioctl(ctl_.get(), USERBLK_IOC_RECOVER_DEV, (unsigned long)USERBLK_MAX_DEVICES),
              -ENODEV);
}

} // namespace

int main(int argc, char** argv) {
    return userblk_test::run_uapi_tests(argc, argv);
}
