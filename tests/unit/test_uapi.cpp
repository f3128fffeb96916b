// The kernel ABI as this build sees it: sizes, offsets and ioctl encodings must match what
// userblk.ko was built with (fixed-size types, explicit padding, entries multiples of 8 bytes).
#include <cstddef>

#include <gtest/gtest.h>
#include <sys/ioctl.h>

#include <uapi/userblk.h>

namespace {

static_assert(sizeof(userblk_dev_config) == 88);
static_assert(offsetof(userblk_dev_config, abi_version) == 0);
static_assert(offsetof(userblk_dev_config, dev_id) == 4);
static_assert(offsetof(userblk_dev_config, mode) == 8);
static_assert(offsetof(userblk_dev_config, logical_block_size) == 12);
static_assert(offsetof(userblk_dev_config, size) == 16);
static_assert(offsetof(userblk_dev_config, features) == 24);
static_assert(offsetof(userblk_dev_config, nr_queues) == 32);
static_assert(offsetof(userblk_dev_config, queue_depth) == 36);
static_assert(offsetof(userblk_dev_config, max_io_bytes) == 40);
static_assert(offsetof(userblk_dev_config, timeout_ms) == 44);
static_assert(offsetof(userblk_dev_config, state) == 48);
static_assert(offsetof(userblk_dev_config, nr_queues_open) == 52);
static_assert(offsetof(userblk_dev_config, nr_poll_queues) == 56);
static_assert(offsetof(userblk_dev_config, recovery_timeout_ms) == 60);
static_assert(offsetof(userblk_dev_config, reserved) == 64);

static_assert(sizeof(userblk_queue_open) == 16);
static_assert(offsetof(userblk_queue_open, queue_id) == 4);
static_assert(offsetof(userblk_queue_open, flags) == 6);
static_assert(offsetof(userblk_queue_open, reserved) == 8);

static_assert(sizeof(userblk_io_desc) == 24);
static_assert(offsetof(userblk_io_desc, tag) == 0);
static_assert(offsetof(userblk_io_desc, op) == 2);
static_assert(offsetof(userblk_io_desc, flags) == 3);
static_assert(offsetof(userblk_io_desc, gen) == 4);
static_assert(offsetof(userblk_io_desc, offset) == 8);
static_assert(offsetof(userblk_io_desc, len) == 16);
static_assert(offsetof(userblk_io_desc, reserved) == 20);

static_assert(sizeof(userblk_io_cpl) == 16);
static_assert(offsetof(userblk_io_cpl, tag) == 0);
static_assert(offsetof(userblk_io_cpl, reserved0) == 2);
static_assert(offsetof(userblk_io_cpl, gen) == 4);
static_assert(offsetof(userblk_io_cpl, result) == 8);
static_assert(offsetof(userblk_io_cpl, reserved1) == 12);

TEST(Uapi, StructSizesAreFixedAndMultiplesOfEight) {
    EXPECT_EQ(sizeof(userblk_dev_config), 88U);
    EXPECT_EQ(sizeof(userblk_queue_open), 16U);
    EXPECT_EQ(sizeof(userblk_io_desc), 24U);
    EXPECT_EQ(sizeof(userblk_io_cpl), 16U);
    for (std::size_t s : {sizeof(userblk_dev_config), sizeof(userblk_queue_open),
                          sizeof(userblk_io_desc), sizeof(userblk_io_cpl)}) {
        EXPECT_EQ(s % 8, 0U) << "size " << s;
    }
}

TEST(Uapi, FieldOffsets) {
    EXPECT_EQ(offsetof(userblk_dev_config, size), 16U);
    EXPECT_EQ(offsetof(userblk_dev_config, nr_poll_queues), 56U);
    EXPECT_EQ(offsetof(userblk_dev_config, reserved), 64U);
    EXPECT_EQ(offsetof(userblk_ring_daemon_indices, flags), 4U);
    EXPECT_EQ(offsetof(userblk_io_desc, offset), 8U);
    EXPECT_EQ(offsetof(userblk_io_desc, len), 16U);
    EXPECT_EQ(offsetof(userblk_io_cpl, result), 8U);
}

TEST(Uapi, IoctlEncodings) {
    EXPECT_EQ(_IOC_TYPE(USERBLK_IOC_ADD_DEV), USERBLK_IOC_MAGIC);
    EXPECT_EQ(_IOC_SIZE(USERBLK_IOC_ADD_DEV), sizeof(userblk_dev_config));
    EXPECT_EQ(_IOC_DIR(USERBLK_IOC_ADD_DEV), unsigned{_IOC_READ | _IOC_WRITE});
    EXPECT_EQ(_IOC_SIZE(USERBLK_IOC_GET_INFO), sizeof(userblk_dev_config));
    EXPECT_EQ(_IOC_DIR(USERBLK_IOC_GET_INFO), unsigned{_IOC_READ | _IOC_WRITE});
    EXPECT_EQ(_IOC_SIZE(USERBLK_IOC_OPEN_QUEUE), sizeof(userblk_queue_open));
    EXPECT_EQ(_IOC_DIR(USERBLK_IOC_OPEN_QUEUE), unsigned{_IOC_WRITE});
    EXPECT_EQ(_IOC_DIR(USERBLK_IOC_START_DEV), unsigned{_IOC_NONE});
    const unsigned long all[] = {USERBLK_IOC_ADD_DEV,  USERBLK_IOC_START_DEV,
                                 USERBLK_IOC_STOP_DEV, USERBLK_IOC_DEL_DEV,
                                 USERBLK_IOC_GET_INFO, USERBLK_IOC_OPEN_QUEUE,
                                 USERBLK_IOC_RECOVER_DEV};
    for (std::size_t i = 0; i < std::size(all); ++i) {
        for (std::size_t j = i + 1; j < std::size(all); ++j) {
            EXPECT_NE(_IOC_NR(all[i]), _IOC_NR(all[j])) << i << " and " << j;
        }
    }
}

TEST(Uapi, ConstantsUsedByTheDaemon) {
    EXPECT_EQ(USERBLK_F_ALL, 0xffULL);
    EXPECT_EQ(USERBLK_F_LEND, 1ULL << 6);
    EXPECT_EQ(USERBLK_F_RECOVERY, 1ULL << 7);
    EXPECT_EQ(USERBLK_STATE_RECOVERING, 4);
    EXPECT_EQ(USERBLK_DEFAULT_RECOVERY_TIMEOUT_MS, 30000U);
    EXPECT_EQ(USERBLK_ABI_VERSION, 2);
    // The splice data fd's offset: gen, tag and a position up to max_io_bytes inclusive.
    EXPECT_EQ(USERBLK_SPLICE_OFF(3, 7, 512), (7ULL << 32) | (3ULL << 21) | 512U);
    EXPECT_EQ(USERBLK_SPLICE_OFF(1023, 0xffffffffU, USERBLK_MAX_IO_BYTES),
              (0x7fffffffULL << 32) | (1023ULL << 21) | USERBLK_MAX_IO_BYTES);
    EXPECT_LT(USERBLK_MAX_IO_BYTES, 1U << USERBLK_SPLICE_TAG_SHIFT);
    EXPECT_EQ(sizeof(userblk_ring_kernel_indices), 192U);
    EXPECT_EQ(sizeof(userblk_ring_daemon_indices), 128U);
    EXPECT_EQ(sizeof(userblk_ring_layout), 88U);
    EXPECT_EQ(USERBLK_COPY_MIN_READ(4096U), 4096U + 24U);
    EXPECT_EQ(USERBLK_OP_READ, 0);
    EXPECT_EQ(USERBLK_OP_WRITE, 1);
    EXPECT_EQ(USERBLK_OP_WRITE_ZEROES, 4);
    EXPECT_STREQ(USERBLK_CONTROL_PATH, "/dev/userblk-control");
}

} // namespace
