// The ublk baseline's pure parts: what our server sends to ublk_drv and how it reads the answers,
// for the ABI of Linux 6.1 (include/uapi/linux/ublk_cmd.h of 6.1, which Debian 12's
// linux-libc-dev ships). No syscalls here, so all of it runs in unit tests.
//
// The 6.1 ABI in short (drivers/block/ublk_drv.c of 6.1):
// - control commands are IORING_OP_URING_CMD on /dev/ublk-control, in a ring of 128-byte SQEs
//   (IORING_SETUP_SQE128; anything else is EINVAL); cmd_op is the plain UBLK_CMD_* number (the
//   ioctl-encoded UBLK_U_CMD_* came later) and the SQE's command area holds a
//   struct ublksrv_ctrl_cmd;
// - I/O commands are IORING_OP_URING_CMD on /dev/ublkc<id>, 64-byte SQEs do: the command area
//   (16 bytes) holds a struct ublksrv_io_cmd {q_id, tag, result, addr}. UBLK_IO_FETCH_REQ once per
//   tag before START_DEV, then UBLK_IO_COMMIT_AND_FETCH_REQ answers a request and waits for the
//   tag's next one. Its CQE res is UBLK_IO_RES_OK when a request is in the tag's descriptor, and
//   UBLK_IO_RES_ABORT (-ENODEV) when the device is stopped: no request will come on that tag;
// - the request descriptors (struct ublksrv_io_desc, 24 bytes per tag) are mmap()ed read-only from
//   /dev/ublkc<id> at UBLKSRV_CMD_BUF_OFFSET + q_id * (the size for UBLK_MAX_QUEUE_DEPTH tags);
// - data moves through the daemon's buffer of the tag (the address given with each FETCH): the
//   kernel copies a WRITE's data into it before the CQE and a READ's out of it at the commit;
// - a module build forces UBLK_F_URING_CMD_COMP_IN_TASK; 6.1 knows no ioctl encoding, no
//   UBLK_F_UNPRIVILEGED_DEV, no per-request timeout and no zero copy (refused at ADD_DEV).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <liburing.h>
#include <linux/ublk_cmd.h>
#include <uapi/userblk.h>

#include "core/config.h"
#include "core/status.h"

namespace userblk::ublk {

inline constexpr const char* kControlPath = "/dev/ublk-control";
/// The largest request when DeviceConfig::max_io_bytes is 0: userblk.ko's default, so that a
/// comparison splits large I/O the same way.
inline constexpr std::uint32_t kDefaultMaxIo = 512 * 1024;
/// ublk_drv allocates device numbers below 1 << MINORBITS (UBLK_MINORS).
inline constexpr std::uint32_t kMaxDevId = (1U << 20) - 1;
/// The queue_id of a control command that is not for a queue.
inline constexpr std::uint16_t kNoQueue = 0xffff;

/// The control device's character device of device id: /dev/ublkc<id>.
std::string char_path(std::uint32_t id);
/// Its disk: /dev/ublkb<id>.
std::string disk_path(std::uint32_t id);

/// "ADD_DEV", "SET_PARAMS", ..., or "command 0x<op>": for messages.
std::string ctrl_cmd_name(std::uint32_t op);

/// What ADD_DEV and SET_PARAMS ask for one device.
struct DeviceSetup {
    ublksrv_ctrl_dev_info info{}; ///< ADD_DEV's buffer (in and out)
    ublk_params params{};         ///< SET_PARAMS's buffer
};

/// Checks cfg against what ublk_drv of 6.1 takes and builds the ADD_DEV and SET_PARAMS buffers for
/// a page size: a logical block size of 512..page size (a power of two), a size that is a whole
/// number of blocks, 1..65535 queues (the kernel lowers it to the CPUs), a depth of
/// 1..UBLK_MAX_QUEUE_DEPTH, a max I/O (0: kDefaultMaxIo) that is a multiple of the page size (the
/// kernel would round it down), known USERBLK_F_* features and no timeout (6.1 has none). Basic
/// params always; discard params when discard or write-zeroes is asked for. Failure: EINVAL with
/// the field, e.g. "ublk: cannot create the device: Invalid argument (depth 5000 is outside
/// 1..4096)".
Result<DeviceSetup> make_setup(const DeviceConfig& cfg, std::size_t page_size);

/// The DeviceInfo of a device as ADD_DEV/GET_DEV_INFO report it, with the params it was given.
DeviceInfo info_from(const ublksrv_ctrl_dev_info& info, const ublk_params& params,
                     std::uint64_t features);

/// The command area of a control command for device dev_id with buffer buf of len bytes (nullptr
/// and 0 for none) and inline data0 (START_DEV's daemon pid); queue_id kNoQueue.
ublksrv_ctrl_cmd ctrl_cmd(std::uint32_t dev_id, void* buf, std::uint16_t len,
                          std::uint64_t data0 = 0) noexcept;

/// Fills sqe, one 128-byte entry of an IORING_SETUP_SQE128 ring, with control command op for
/// control_fd. user_data is op.
void prep_ctrl_cmd(io_uring_sqe* sqe, int control_fd, std::uint32_t op,
                   const ublksrv_ctrl_cmd& cmd) noexcept;

/// user_data of an I/O command: the tag in bits 0-15, the command op in bits 16-23.
constexpr std::uint64_t io_user_data(std::uint16_t tag, std::uint32_t op) noexcept {
    return tag | (static_cast<std::uint64_t>(op & 0xff) << 16);
}
constexpr std::uint16_t user_data_tag(std::uint64_t user_data) noexcept {
    return static_cast<std::uint16_t>(user_data & 0xffff);
}
constexpr std::uint32_t user_data_op(std::uint64_t user_data) noexcept {
    return static_cast<std::uint32_t>((user_data >> 16) & 0xff);
}

/// Fills sqe (64 bytes) with I/O command op (UBLK_IO_FETCH_REQ or UBLK_IO_COMMIT_AND_FETCH_REQ)
/// for tag of queue q_id on the char device char_fd: result is the answer of a commit, addr the
/// tag's buffer.
void prep_io_cmd(io_uring_sqe* sqe, int char_fd, std::uint32_t op, std::uint16_t q_id,
                 std::uint16_t tag, std::int32_t result, std::uint64_t addr) noexcept;

/// Size of the descriptor area of a queue of depth tags, and the mmap offset of queue q_id's.
std::size_t desc_area_size(std::uint32_t depth, std::size_t page_size) noexcept;
std::uint64_t desc_area_offset(std::uint16_t q_id, std::size_t page_size) noexcept;

/// The ublk op that maps to no USERBLK_OP_*: execute() answers it -EOPNOTSUPP and counts "other".
inline constexpr std::uint8_t kUnknownOp = 0xff;

/// The verdict on one request descriptor read from the shared area.
enum class DescCheck : std::uint8_t {
    ok,
    too_long,   ///< a READ or WRITE longer than the tag's buffer: answered -EIO
    too_large,  ///< a length that does not fit 32 bits of bytes: answered -EIO
    unknown_op, ///< an op this build does not serve (WRITE_SAME, new ops): -EOPNOTSUPP
};

/// The request of descriptor iod on tag, for execute(): USERBLK_OP_* (kUnknownOp for an op with no
/// equivalent), offset and length in bytes, USERBLK_IO_F_FUA from UBLK_IO_F_FUA. *check says
/// whether it may run on a buffer of buf_size bytes.
userblk_io_desc to_request(const ublksrv_io_desc& iod, std::uint16_t tag, std::uint32_t buf_size,
                           DescCheck* check) noexcept;

/// The result COMMIT_AND_FETCH_REQ carries for request d that execute() answered with result
/// (0 or -errno): the bytes done for a successful READ or WRITE (ublk_drv fails a READ that
/// returns 0 bytes), 0 for other successful ops, else the -errno.
std::int32_t commit_result(const userblk_io_desc& d, int result) noexcept;

/// Why control command op failed with err (a positive errno), as far as user space can tell, for
/// device dev_id; empty when it cannot tell.
std::string explain_ctrl_error(std::uint32_t op, int err, std::uint32_t dev_id);

} // namespace userblk::ublk
