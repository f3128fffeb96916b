#include "protocol.h"

#include <bit>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstring>

namespace userblk::ublk {

// The layouts this file relies on, as in the 6.1 uapi.
static_assert(sizeof(ublksrv_ctrl_cmd) == 32);
static_assert(sizeof(ublksrv_ctrl_dev_info) == 64);
static_assert(sizeof(ublksrv_io_cmd) == 16);
static_assert(sizeof(ublksrv_io_desc) == 24);
static_assert(sizeof(io_uring_sqe) == 64);
// The command area starts at byte 48: 16 bytes in a 64-byte SQE, 80 in a 128-byte one.
static_assert(offsetof(io_uring_sqe, cmd) == 48);
static_assert(offsetof(io_uring_sqe, cmd) + sizeof(ublksrv_io_cmd) == sizeof(io_uring_sqe));
static_assert(offsetof(io_uring_sqe, cmd) + sizeof(ublksrv_ctrl_cmd) <= 2 * sizeof(io_uring_sqe));

namespace {

constexpr std::uint32_t kSector = 512;

std::string n(std::uint64_t v) {
    return std::to_string(v);
}

Status invalid(const std::string& why) {
    return Status::from_errno(EINVAL, "ublk: cannot create the device", why);
}

/// The largest discard or write-zeroes in sectors: its byte length must fit the u32 len of a
/// userblk_io_desc, and be whole blocks.
std::uint32_t max_zeroing_sectors(std::uint32_t block_size) noexcept {
    const std::uint32_t sectors_per_block = block_size / kSector;
    return (UINT32_MAX / kSector) / sectors_per_block * sectors_per_block;
}

} // namespace

std::string char_path(std::uint32_t id) {
    return "/dev/ublkc" + n(id);
}

std::string disk_path(std::uint32_t id) {
    return "/dev/ublkb" + n(id);
}

std::string ctrl_cmd_name(std::uint32_t op) {
    switch (op) {
    case UBLK_CMD_GET_QUEUE_AFFINITY:
        return "GET_QUEUE_AFFINITY";
    case UBLK_CMD_GET_DEV_INFO:
        return "GET_DEV_INFO";
    case UBLK_CMD_ADD_DEV:
        return "ADD_DEV";
    case UBLK_CMD_DEL_DEV:
        return "DEL_DEV";
    case UBLK_CMD_START_DEV:
        return "START_DEV";
    case UBLK_CMD_STOP_DEV:
        return "STOP_DEV";
    case UBLK_CMD_SET_PARAMS:
        return "SET_PARAMS";
    case UBLK_CMD_GET_PARAMS:
        return "GET_PARAMS";
    default: {
        char buf[32];
        std::snprintf(buf, sizeof(buf), "command 0x%x", op);
        return buf;
    }
    }
}

Result<DeviceSetup> make_setup(const DeviceConfig& cfg, std::size_t page_size) {
    const std::uint32_t bs = cfg.block_size;
    if (bs < kSector || bs > page_size || !std::has_single_bit(bs)) {
        return invalid("block size " + n(bs) + " is not a power of two from 512 to the page size " +
                       n(page_size));
    }
    if (cfg.size == 0 || cfg.size % bs != 0) {
        return invalid("size " + n(cfg.size) + " is not a positive multiple of block size " +
                       n(bs));
    }
    if (cfg.nr_queues < 1 || cfg.nr_queues > UINT16_MAX) {
        return invalid("queues " + n(cfg.nr_queues) + " is outside 1.." + n(UINT16_MAX));
    }
    if (cfg.queue_depth < 1 || cfg.queue_depth > UBLK_MAX_QUEUE_DEPTH) {
        return invalid("depth " + n(cfg.queue_depth) + " is outside 1.." + n(UBLK_MAX_QUEUE_DEPTH));
    }
    const std::uint32_t max_io = cfg.max_io_bytes != 0 ? cfg.max_io_bytes : kDefaultMaxIo;
    if (max_io < page_size || max_io % page_size != 0) {
        return invalid("max I/O " + n(max_io) + " is not a multiple of the page size " +
                       n(page_size) + " (ublk_drv rounds it down)");
    }
    if (cfg.timeout_ms != 0) {
        return invalid("a request timeout (" + n(cfg.timeout_ms) +
                       " ms) is not supported: ublk_drv of Linux 6.1 has none, a request waits "
                       "for the daemon as long as it lives; leave the timeout at 0");
    }
    if ((cfg.features & ~static_cast<std::uint64_t>(USERBLK_F_ALL)) != 0) {
        return invalid("unknown feature bits " + format_features(cfg.features & ~USERBLK_F_ALL));
    }
    if (cfg.dev_id != USERBLK_DEV_ID_ANY && cfg.dev_id > kMaxDevId) {
        return invalid("device id " + n(cfg.dev_id) + " is above " + n(kMaxDevId));
    }

    DeviceSetup s;
    ublksrv_ctrl_dev_info& info = s.info;
    info.nr_hw_queues = static_cast<std::uint16_t>(cfg.nr_queues);
    info.queue_depth = static_cast<std::uint16_t>(cfg.queue_depth);
    info.max_io_buf_bytes = max_io;
    info.dev_id = cfg.dev_id; // USERBLK_DEV_ID_ANY is ublk's "any" too: (u32)-1
    info.flags = 0;           // the module adds UBLK_F_URING_CMD_COMP_IN_TASK itself
    static_assert(USERBLK_DEV_ID_ANY == 0xffffffffU);

    ublk_params& p = s.params;
    p.len = sizeof(ublk_params);
    p.types = UBLK_PARAM_TYPE_BASIC;
    const auto shift = static_cast<std::uint8_t>(std::countr_zero(bs));
    ublk_param_basic& b = p.basic;
    b.attrs = 0;
    if ((cfg.features & USERBLK_F_FLUSH) != 0) {
        b.attrs |= UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA;
    }
    if ((cfg.features & USERBLK_F_READ_ONLY) != 0) {
        b.attrs |= UBLK_ATTR_READ_ONLY;
    }
    b.logical_bs_shift = shift;
    b.physical_bs_shift = shift;
    b.io_min_shift = shift;
    b.io_opt_shift = shift;
    b.max_sectors = max_io / kSector;
    b.chunk_sectors = 0;
    b.dev_sectors = cfg.size / kSector;
    b.virt_boundary_mask = 0;
    if ((cfg.features & (USERBLK_F_DISCARD | USERBLK_F_WRITE_ZEROES)) != 0) {
        p.types |= UBLK_PARAM_TYPE_DISCARD;
        ublk_param_discard& d = p.discard;
        d.discard_alignment = 0;
        d.discard_granularity = bs;
        d.max_discard_sectors =
            (cfg.features & USERBLK_F_DISCARD) != 0 ? max_zeroing_sectors(bs) : 0;
        d.max_write_zeroes_sectors =
            (cfg.features & USERBLK_F_WRITE_ZEROES) != 0 ? max_zeroing_sectors(bs) : 0;
        d.max_discard_segments = 1; // 6.1 serves single-segment discards only
    }
    return s;
}

DeviceInfo info_from(const ublksrv_ctrl_dev_info& info, const ublk_params& params,
                     std::uint64_t features) {
    DeviceInfo d;
    d.id = info.dev_id;
    d.path = disk_path(info.dev_id);
    d.size = params.basic.dev_sectors * kSector;
    d.block_size = 1U << params.basic.logical_bs_shift;
    d.nr_queues = info.nr_hw_queues;
    d.queue_depth = info.queue_depth;
    d.max_io_bytes = info.max_io_buf_bytes;
    d.timeout_ms = 0; // none
    d.features = features;
    return d;
}

ublksrv_ctrl_cmd ctrl_cmd(std::uint32_t dev_id, void* buf, std::uint16_t len,
                          std::uint64_t data0) noexcept {
    ublksrv_ctrl_cmd c{};
    c.dev_id = dev_id;
    c.queue_id = kNoQueue;
    c.len = len;
    c.addr = reinterpret_cast<std::uintptr_t>(buf);
    c.data[0] = data0;
    return c;
}

void prep_ctrl_cmd(io_uring_sqe* sqe, int control_fd, std::uint32_t op,
                   const ublksrv_ctrl_cmd& cmd) noexcept {
    std::memset(static_cast<void*>(sqe), 0, 2 * sizeof(io_uring_sqe));
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = control_fd;
    sqe->cmd_op = op;
    sqe->user_data = op;
    std::memcpy(reinterpret_cast<std::byte*>(sqe) + offsetof(io_uring_sqe, cmd), &cmd, sizeof(cmd));
}

void prep_io_cmd(io_uring_sqe* sqe, int char_fd, std::uint32_t op, std::uint16_t q_id,
                 std::uint16_t tag, std::int32_t result, std::uint64_t addr) noexcept {
    std::memset(static_cast<void*>(sqe), 0, sizeof(io_uring_sqe));
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = char_fd;
    sqe->cmd_op = op;
    sqe->user_data = io_user_data(tag, op);
    ublksrv_io_cmd cmd{};
    cmd.q_id = q_id;
    cmd.tag = tag;
    cmd.result = result;
    cmd.addr = addr;
    std::memcpy(reinterpret_cast<std::byte*>(sqe) + offsetof(io_uring_sqe, cmd), &cmd, sizeof(cmd));
}

std::size_t desc_area_size(std::uint32_t depth, std::size_t page_size) noexcept {
    const std::size_t bytes = depth * sizeof(ublksrv_io_desc);
    return (bytes + page_size - 1) / page_size * page_size;
}

std::uint64_t desc_area_offset(std::uint16_t q_id, std::size_t page_size) noexcept {
    // Queues are spaced by the area of the largest depth (ublk_max_cmd_buf_size()).
    return UBLKSRV_CMD_BUF_OFFSET +
           static_cast<std::uint64_t>(q_id) * desc_area_size(UBLK_MAX_QUEUE_DEPTH, page_size);
}

userblk_io_desc to_request(const ublksrv_io_desc& iod, std::uint16_t tag, std::uint32_t buf_size,
                           DescCheck* check) noexcept {
    userblk_io_desc d{};
    d.tag = tag;
    d.flags = (iod.op_flags & UBLK_IO_F_FUA) != 0 ? USERBLK_IO_F_FUA : 0;
    if ((iod.op_flags & UBLK_IO_F_NOUNMAP) != 0) {
        d.flags |= USERBLK_IO_F_NOUNMAP;
    }
    d.offset = iod.start_sector * kSector;
    const std::uint64_t len = static_cast<std::uint64_t>(iod.nr_sectors) * kSector;
    d.len = static_cast<std::uint32_t>(len);
    DescCheck c = DescCheck::ok;
    switch (ublksrv_get_op(&iod)) {
    case UBLK_IO_OP_READ:
        d.op = USERBLK_OP_READ;
        break;
    case UBLK_IO_OP_WRITE:
        d.op = USERBLK_OP_WRITE;
        break;
    case UBLK_IO_OP_FLUSH:
        d.op = USERBLK_OP_FLUSH;
        d.len = 0;
        break;
    case UBLK_IO_OP_DISCARD:
        d.op = USERBLK_OP_DISCARD;
        break;
    case UBLK_IO_OP_WRITE_ZEROES:
        d.op = USERBLK_OP_WRITE_ZEROES;
        break;
    default:
        d.op = kUnknownOp;
        c = DescCheck::unknown_op;
        break;
    }
    if (c == DescCheck::ok && d.op != USERBLK_OP_FLUSH && len > UINT32_MAX) {
        c = DescCheck::too_large;
    } else if (c == DescCheck::ok && (d.op == USERBLK_OP_READ || d.op == USERBLK_OP_WRITE) &&
               len > buf_size) {
        c = DescCheck::too_long;
    }
    if (check != nullptr) {
        *check = c;
    }
    return d;
}

std::int32_t commit_result(const userblk_io_desc& d, int result) noexcept {
    if (result < 0) {
        return result;
    }
    if (d.op == USERBLK_OP_READ || d.op == USERBLK_OP_WRITE) {
        return static_cast<std::int32_t>(d.len); // <= the buffer size, far below 2^31
    }
    return 0;
}

std::string explain_ctrl_error(std::uint32_t op, int err, std::uint32_t dev_id) {
    switch (err) {
    case EPERM:
    case EACCES:
        if (op == UBLK_CMD_SET_PARAMS && err == EACCES) {
            return "the device is started: parameters can only be set before START_DEV";
        }
        return "run as root (CAP_SYS_ADMIN)";
    case EOPNOTSUPP:
        return "is ublk_drv loaded? the control device does not take this io_uring command";
    case ENODEV:
        return op == UBLK_CMD_ADD_DEV ? "" : "no ublk device with id " + n(dev_id);
    case EEXIST:
        if (op == UBLK_CMD_ADD_DEV) {
            return "ublk device id " + n(dev_id) + " is taken";
        }
        if (op == UBLK_CMD_START_DEV) {
            return "the device was started before (a stopped ublk device cannot be restarted: "
                   "delete it)";
        }
        return "";
    case EINTR:
        return op == UBLK_CMD_START_DEV ? "interrupted while waiting for every queue to fetch "
                                          "its requests"
                                        : "";
    case EINVAL:
        switch (op) {
        case UBLK_CMD_ADD_DEV:
            return "ublk_drv refused the device (depth above " + n(UBLK_MAX_QUEUE_DEPTH) +
                   ", or a control ring without IORING_SETUP_SQE128)";
        case UBLK_CMD_SET_PARAMS:
            return "ublk_drv refused the parameters (block size, max sectors above max I/O, or "
                   "discard limits)";
        case UBLK_CMD_START_DEV:
            return "ublk_drv refused to start the device (no valid parameters)";
        default:
            return "";
        }
    default:
        return "";
    }
}

} // namespace userblk::ublk
