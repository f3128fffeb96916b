// The ublk baseline without ublk_drv: the ADD_DEV and SET_PARAMS buffers built from a
// DeviceConfig (and what 6.1 would refuse), the SQE layout of control and I/O commands, the
// descriptor area, the mapping of request descriptors and results, and the errors a user sees
// when the control device is missing or is not ublk's.
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "core/io.h"
#include "cli/registry.h"
#include "test_util.h"
#include "baselines/ublk/control.h"
#include "baselines/ublk/protocol.h"

namespace {

using namespace userblk;
using namespace userblk::ublk;

const std::size_t kPage = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));

DeviceConfig config(std::uint64_t size = 256U << 20) {
    DeviceConfig cfg;
    cfg.size = size;
    cfg.block_size = 512;
    cfg.nr_queues = 2;
    cfg.queue_depth = 64;
    return cfg;
}

// ---- ADD_DEV and SET_PARAMS from a DeviceConfig -------------------------------------------------

TEST(UblkSetup, MapsTheDeviceConfig) {
    auto s = make_setup(config(), kPage);
    ASSERT_TRUE(s.ok()) << s.status().message();
    const ublksrv_ctrl_dev_info& i = s->info;
    EXPECT_EQ(i.nr_hw_queues, 2);
    EXPECT_EQ(i.queue_depth, 64);
    EXPECT_EQ(i.max_io_buf_bytes, kDefaultMaxIo);
    EXPECT_EQ(i.dev_id, 0xffffffffU) << "any id";
    EXPECT_EQ(i.flags, 0U) << "no optional feature asked of 6.1";
    EXPECT_EQ(i.state, 0);
    const ublk_params& p = s->params;
    EXPECT_EQ(p.len, sizeof(ublk_params));
    EXPECT_EQ(p.types, static_cast<unsigned>(UBLK_PARAM_TYPE_BASIC));
    EXPECT_EQ(p.basic.attrs, 0U);
    EXPECT_EQ(p.basic.logical_bs_shift, 9);
    EXPECT_EQ(p.basic.physical_bs_shift, 9);
    EXPECT_EQ(p.basic.io_min_shift, 9);
    EXPECT_EQ(p.basic.max_sectors, kDefaultMaxIo / 512);
    EXPECT_EQ(p.basic.dev_sectors, (256U << 20) / 512);
    EXPECT_EQ(p.basic.chunk_sectors, 0U);
    EXPECT_EQ(p.discard.max_discard_sectors, 0U);
}

TEST(UblkSetup, BlockSizeMaxIoAndIdAreCarried) {
    DeviceConfig cfg = config();
    cfg.block_size = 4096;
    cfg.max_io_bytes = 1U << 20;
    cfg.dev_id = 7;
    cfg.queue_depth = UBLK_MAX_QUEUE_DEPTH;
    auto s = make_setup(cfg, kPage);
    ASSERT_TRUE(s.ok()) << s.status().message();
    EXPECT_EQ(s->info.dev_id, 7U);
    EXPECT_EQ(s->info.queue_depth, UBLK_MAX_QUEUE_DEPTH);
    EXPECT_EQ(s->params.basic.logical_bs_shift, 12);
    EXPECT_EQ(s->params.basic.max_sectors, 2048U);
    // ublk_drv's checks: physical >= logical, max_sectors within max_io_buf_bytes.
    EXPECT_GE(s->params.basic.physical_bs_shift, s->params.basic.logical_bs_shift);
    EXPECT_LE(s->params.basic.max_sectors, s->info.max_io_buf_bytes >> 9);
}

TEST(UblkSetup, FeaturesBecomeAttributesAndDiscardParams) {
    DeviceConfig cfg = config();
    cfg.block_size = 4096;
    cfg.features = USERBLK_F_FLUSH | USERBLK_F_READ_ONLY | USERBLK_F_DISCARD;
    auto s = make_setup(cfg, kPage);
    ASSERT_TRUE(s.ok()) << s.status().message();
    const ublk_params& p = s->params;
    EXPECT_EQ(p.basic.attrs, static_cast<unsigned>(UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA |
                                                   UBLK_ATTR_READ_ONLY));
    EXPECT_EQ(p.types, static_cast<unsigned>(UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_DISCARD));
    EXPECT_EQ(p.discard.discard_granularity, 4096U);
    EXPECT_EQ(p.discard.max_discard_segments, 1) << "6.1 serves single-segment discards only";
    EXPECT_GT(p.discard.max_discard_sectors, 0U);
    EXPECT_EQ(p.discard.max_discard_sectors % 8, 0U) << "whole blocks";
    // Its length in bytes must fit the u32 len of a request.
    EXPECT_LE(std::uint64_t{p.discard.max_discard_sectors} * 512, std::uint64_t{UINT32_MAX});
    EXPECT_EQ(p.discard.max_write_zeroes_sectors, 0U);

    cfg.features = USERBLK_F_WRITE_ZEROES;
    s = make_setup(cfg, kPage);
    ASSERT_TRUE(s.ok()) << s.status().message();
    EXPECT_EQ(s->params.discard.max_discard_sectors, 0U);
    EXPECT_GT(s->params.discard.max_write_zeroes_sectors, 0U);
    EXPECT_NE(s->params.discard.discard_granularity, 0U) << "6.1 refuses a zero granularity";
}

TEST(UblkSetup, RefusesWhatUblk61WouldAndNamesTheField) {
    struct Case {
        const char* name;
        void (*change)(DeviceConfig&);
        const char* expect;
    };
    const Case cases[] = {
        {"block size 1000", [](DeviceConfig& c) { c.block_size = 1000; }, "block size 1000"},
        {"block size above the page", [](DeviceConfig& c) { c.block_size = 65536; },
         "block size 65536"},
        {"size 0", [](DeviceConfig& c) { c.size = 0; }, "size 0"},
        {"partial block", [](DeviceConfig& c) { c.size = 1000; }, "size 1000"},
        {"no queue", [](DeviceConfig& c) { c.nr_queues = 0; }, "queues 0"},
        {"depth 0", [](DeviceConfig& c) { c.queue_depth = 0; }, "depth 0"},
        {"depth above 4096", [](DeviceConfig& c) { c.queue_depth = 4097; }, "depth 4097"},
        {"max I/O not pages", [](DeviceConfig& c) { c.max_io_bytes = 6000; }, "max I/O 6000"},
        {"a timeout", [](DeviceConfig& c) { c.timeout_ms = 2000; }, "a request timeout"},
        {"unknown feature", [](DeviceConfig& c) { c.features = 1ULL << 40; }, "unknown feature"},
        {"id too large", [](DeviceConfig& c) { c.dev_id = 1U << 21; }, "device id"},
    };
    for (const Case& c : cases) {
        DeviceConfig cfg = config();
        c.change(cfg);
        auto s = make_setup(cfg, kPage);
        ASSERT_FALSE(s.ok()) << c.name;
        EXPECT_EQ(s.status().error_number(), EINVAL) << c.name;
        EXPECT_NE(s.status().message().find(c.expect), std::string::npos)
            << c.name << ": " << s.status().message();
        EXPECT_EQ(s.status().message().rfind("ublk: ", 0), 0U) << s.status().message();
    }
}

TEST(UblkSetup, TimeoutRefusalSaysWhy) {
    DeviceConfig cfg = config();
    cfg.timeout_ms = 2000;
    auto s = make_setup(cfg, kPage);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.status().message().find("Linux 6.1 has none"), std::string::npos)
        << s.status().message();
}

TEST(UblkSetup, InfoFromTheKernelsAnswer) {
    auto s = make_setup(config(64U << 20), kPage);
    ASSERT_TRUE(s.ok());
    ublksrv_ctrl_dev_info answer = s->info;
    answer.dev_id = 3;
    answer.nr_hw_queues = 1; // lowered to the CPUs
    DeviceInfo d = info_from(answer, s->params, USERBLK_F_FLUSH);
    EXPECT_EQ(d.id, 3U);
    EXPECT_EQ(d.path, "/dev/ublkb3");
    EXPECT_EQ(d.size, 64U << 20);
    EXPECT_EQ(d.block_size, 512U);
    EXPECT_EQ(d.nr_queues, 1U);
    EXPECT_EQ(d.queue_depth, 64U);
    EXPECT_EQ(d.max_io_bytes, kDefaultMaxIo);
    EXPECT_EQ(d.timeout_ms, 0U);
    EXPECT_EQ(d.features, USERBLK_F_FLUSH);
    EXPECT_EQ(char_path(3), "/dev/ublkc3");
}

// ---- SQEs --------------------------------------------------------------------------------------

TEST(UblkSqe, ControlCommandFillsA128ByteEntry) {
    alignas(64) unsigned char buf[128];
    std::memset(buf, 0xa5, sizeof(buf));
    auto* sqe = reinterpret_cast<io_uring_sqe*>(buf);
    ublksrv_ctrl_dev_info info{};
    ublksrv_ctrl_cmd cmd = ctrl_cmd(5, &info, sizeof(info), 1234);
    EXPECT_EQ(cmd.queue_id, 0xffff) << "not for a queue";
    prep_ctrl_cmd(sqe, 9, UBLK_CMD_START_DEV, cmd);
    EXPECT_EQ(sqe->opcode, IORING_OP_URING_CMD);
    EXPECT_EQ(sqe->fd, 9);
    EXPECT_EQ(sqe->cmd_op, static_cast<unsigned>(UBLK_CMD_START_DEV));
    EXPECT_EQ(sqe->flags, 0);
    EXPECT_EQ(sqe->user_data, static_cast<unsigned>(UBLK_CMD_START_DEV));
    // The command area: bytes 48..79 hold the ublksrv_ctrl_cmd, the rest of the entry is zero.
    ublksrv_ctrl_cmd got{};
    std::memcpy(&got, buf + 48, sizeof(got));
    EXPECT_EQ(got.dev_id, 5U);
    EXPECT_EQ(got.queue_id, 0xffff);
    EXPECT_EQ(got.len, sizeof(info));
    EXPECT_EQ(got.addr, reinterpret_cast<std::uintptr_t>(&info));
    EXPECT_EQ(got.data[0], 1234U) << "START_DEV carries the daemon's pid";
    for (std::size_t i = 48 + sizeof(got); i < sizeof(buf); ++i) {
        EXPECT_EQ(buf[i], 0) << "byte " << i;
    }
    EXPECT_EQ(sqe->len, 0U);
    EXPECT_EQ(sqe->addr, 0U);
}

TEST(UblkSqe, IoCommandFitsA64ByteEntry) {
    alignas(64) unsigned char buf[128];
    std::memset(buf, 0xa5, sizeof(buf));
    auto* sqe = reinterpret_cast<io_uring_sqe*>(buf);
    prep_io_cmd(sqe, 11, UBLK_IO_COMMIT_AND_FETCH_REQ, 3, 77, -5, 0x7f0000001000ULL);
    EXPECT_EQ(sqe->opcode, IORING_OP_URING_CMD);
    EXPECT_EQ(sqe->fd, 11);
    EXPECT_EQ(sqe->cmd_op, static_cast<unsigned>(UBLK_IO_COMMIT_AND_FETCH_REQ));
    EXPECT_EQ(user_data_tag(sqe->user_data), 77);
    EXPECT_EQ(user_data_op(sqe->user_data), static_cast<unsigned>(UBLK_IO_COMMIT_AND_FETCH_REQ));
    ublksrv_io_cmd got{};
    std::memcpy(&got, buf + 48, sizeof(got));
    EXPECT_EQ(got.q_id, 3);
    EXPECT_EQ(got.tag, 77);
    EXPECT_EQ(got.result, -5);
    EXPECT_EQ(got.addr, 0x7f0000001000ULL);
    // The layout of ublksrv_io_cmd in 6.1: q_id, tag, result, addr.
    EXPECT_EQ(offsetof(ublksrv_io_cmd, tag), 2U);
    EXPECT_EQ(offsetof(ublksrv_io_cmd, result), 4U);
    EXPECT_EQ(offsetof(ublksrv_io_cmd, addr), 8U);
    EXPECT_EQ(buf[64], 0xa5) << "a 64-byte entry: nothing written beyond it";
    EXPECT_EQ(sqe->flags, 0);
    EXPECT_EQ(sqe->ioprio, 0);
    EXPECT_EQ(sqe->len, 0U);
}

TEST(UblkSqe, UserDataCarriesTagAndOp) {
    for (std::uint16_t tag : std::initializer_list<std::uint16_t>{0, 1, 4095, 65535}) {
        for (std::uint32_t op : {UBLK_IO_FETCH_REQ, UBLK_IO_COMMIT_AND_FETCH_REQ}) {
            std::uint64_t ud = io_user_data(tag, op);
            EXPECT_EQ(user_data_tag(ud), tag);
            EXPECT_EQ(user_data_op(ud), op);
        }
    }
}

TEST(UblkSqe, DescriptorAreasArePageRoundedAndSpacedByTheLargestDepth) {
    EXPECT_EQ(desc_area_size(64, 4096), 4096U);
    EXPECT_EQ(desc_area_size(171, 4096), 8192U); // 171 * 24 = 4104
    EXPECT_EQ(desc_area_size(4096, 4096), 98304U);
    EXPECT_EQ(desc_area_offset(0, 4096), 0U);
    EXPECT_EQ(desc_area_offset(1, 4096), 98304U);
    EXPECT_EQ(desc_area_offset(3, 4096), 3U * 98304U);
}

// ---- requests and results ----------------------------------------------------------------------

ublksrv_io_desc iod(std::uint32_t op_flags, std::uint32_t sectors, std::uint64_t start) {
    ublksrv_io_desc d{};
    d.op_flags = op_flags;
    d.nr_sectors = sectors;
    d.start_sector = start;
    return d;
}

TEST(UblkRequest, OpsOffsetsAndFlagsAreMapped) {
    DescCheck c = DescCheck::too_long;
    userblk_io_desc d = to_request(iod(UBLK_IO_OP_READ, 8, 10), 5, 65536, &c);
    EXPECT_EQ(c, DescCheck::ok);
    EXPECT_EQ(d.tag, 5);
    EXPECT_EQ(d.op, USERBLK_OP_READ);
    EXPECT_EQ(d.offset, 5120U);
    EXPECT_EQ(d.len, 4096U);
    EXPECT_EQ(d.flags, 0);

    d = to_request(iod(UBLK_IO_OP_WRITE | UBLK_IO_F_FUA | UBLK_IO_F_META, 1, 0), 0, 65536, &c);
    EXPECT_EQ(c, DescCheck::ok);
    EXPECT_EQ(d.op, USERBLK_OP_WRITE);
    EXPECT_EQ(d.flags, USERBLK_IO_F_FUA);

    d = to_request(iod(UBLK_IO_OP_FLUSH, 0, 0), 0, 65536, &c);
    EXPECT_EQ(c, DescCheck::ok);
    EXPECT_EQ(d.op, USERBLK_OP_FLUSH);
    EXPECT_EQ(d.len, 0U);

    d = to_request(iod(UBLK_IO_OP_DISCARD, 1U << 20, 0), 0, 65536, &c);
    EXPECT_EQ(c, DescCheck::ok) << "a discard needs no buffer";
    EXPECT_EQ(d.op, USERBLK_OP_DISCARD);
    EXPECT_EQ(d.len, 512U << 20);

    d = to_request(iod(UBLK_IO_OP_WRITE_ZEROES, 8, 8), 0, 65536, &c);
    EXPECT_EQ(c, DescCheck::ok);
    EXPECT_EQ(d.op, USERBLK_OP_WRITE_ZEROES) << "ublk's 5 is userblk's 4";
}

TEST(UblkRequest, WhatCannotRunIsFlagged) {
    DescCheck c = DescCheck::ok;
    to_request(iod(UBLK_IO_OP_READ, 129, 0), 0, 65536, &c);
    EXPECT_EQ(c, DescCheck::too_long);
    to_request(iod(UBLK_IO_OP_WRITE, 129, 0), 0, 65536, &c);
    EXPECT_EQ(c, DescCheck::too_long);
    to_request(iod(UBLK_IO_OP_DISCARD, 0xffffffffU, 0), 0, 65536, &c);
    EXPECT_EQ(c, DescCheck::too_large);
    userblk_io_desc d = to_request(iod(UBLK_IO_OP_WRITE_SAME, 8, 0), 0, 65536, &c);
    EXPECT_EQ(c, DescCheck::unknown_op);
    EXPECT_EQ(d.op, kUnknownOp);
    to_request(iod(0x7f, 8, 0), 0, 65536, &c);
    EXPECT_EQ(c, DescCheck::unknown_op);
}

TEST(UblkRequest, CommitResultIsBytesForDataOps) {
    userblk_io_desc d{};
    d.len = 8192;
    d.op = USERBLK_OP_READ;
    EXPECT_EQ(commit_result(d, 0), 8192) << "ublk_drv fails a READ that returns 0 bytes";
    d.op = USERBLK_OP_WRITE;
    EXPECT_EQ(commit_result(d, 0), 8192);
    EXPECT_EQ(commit_result(d, -ENOSPC), -ENOSPC);
    d.op = USERBLK_OP_FLUSH;
    d.len = 0;
    EXPECT_EQ(commit_result(d, 0), 0);
    d.op = USERBLK_OP_DISCARD;
    d.len = 1U << 20;
    EXPECT_EQ(commit_result(d, 0), 0);
    EXPECT_EQ(commit_result(d, -EOPNOTSUPP), -EOPNOTSUPP);
}

// A WRITE and a READ the way the serve loop runs them: descriptor, buffer, execute, result.
TEST(UblkRequest, RoundTripThroughABackend) {
    test::BackendWithQueue b("ram", 1 << 20);
    ASSERT_NE(b.backend, nullptr);
    std::vector<std::byte> buffer(65536);
    auto data = test::pattern(8192, 3);
    std::memcpy(buffer.data(), data.data(), data.size());
    DescCheck c = DescCheck::too_long;
    userblk_io_desc w = to_request(iod(UBLK_IO_OP_WRITE, 16, 64), 1, 65536, &c);
    ASSERT_EQ(c, DescCheck::ok);
    int r = execute(*b.backend, *b.queue, w, std::span(buffer).first(w.len));
    EXPECT_EQ(commit_result(w, r), 8192);

    std::fill(buffer.begin(), buffer.end(), std::byte{0});
    userblk_io_desc rd = to_request(iod(UBLK_IO_OP_READ, 16, 64), 1, 65536, &c);
    r = execute(*b.backend, *b.queue, rd, std::span(buffer).first(rd.len));
    EXPECT_EQ(commit_result(rd, r), 8192);
    EXPECT_EQ(std::memcmp(buffer.data(), data.data(), data.size()), 0);

    userblk_io_desc past = to_request(iod(UBLK_IO_OP_READ, 8, (1 << 20) / 512), 1, 65536, &c);
    r = execute(*b.backend, *b.queue, past, std::span(buffer).first(past.len));
    EXPECT_EQ(commit_result(past, r), -EINVAL) << "beyond the end";
    userblk_io_desc same = to_request(iod(UBLK_IO_OP_WRITE_SAME, 8, 0), 1, 65536, &c);
    EXPECT_EQ(commit_result(same, execute(*b.backend, *b.queue, same, {})), -EOPNOTSUPP);
    EXPECT_EQ(b.stats.requests[static_cast<std::size_t>(OpKind::other)].get(), 1U);
}

// ---- errors a user sees ------------------------------------------------------------------------

TEST(UblkErrors, CommandsAreNamed) {
    EXPECT_EQ(ctrl_cmd_name(UBLK_CMD_ADD_DEV), "ADD_DEV");
    EXPECT_EQ(ctrl_cmd_name(UBLK_CMD_SET_PARAMS), "SET_PARAMS");
    EXPECT_EQ(ctrl_cmd_name(UBLK_CMD_GET_DEV_INFO), "GET_DEV_INFO");
    EXPECT_EQ(ctrl_cmd_name(UBLK_CMD_START_DEV), "START_DEV");
    EXPECT_EQ(ctrl_cmd_name(UBLK_CMD_STOP_DEV), "STOP_DEV");
    EXPECT_EQ(ctrl_cmd_name(UBLK_CMD_DEL_DEV), "DEL_DEV");
    EXPECT_EQ(ctrl_cmd_name(0x42), "command 0x42");
}

TEST(UblkErrors, ExplanationsSayWhatToDo) {
    EXPECT_NE(explain_ctrl_error(UBLK_CMD_ADD_DEV, EOPNOTSUPP, 0).find("is ublk_drv loaded?"),
              std::string::npos);
    EXPECT_NE(explain_ctrl_error(UBLK_CMD_ADD_DEV, EPERM, 0).find("root"), std::string::npos);
    EXPECT_NE(explain_ctrl_error(UBLK_CMD_ADD_DEV, EEXIST, 4).find("id 4 is taken"),
              std::string::npos);
    EXPECT_NE(explain_ctrl_error(UBLK_CMD_DEL_DEV, ENODEV, 4).find("no ublk device with id 4"),
              std::string::npos);
    EXPECT_NE(explain_ctrl_error(UBLK_CMD_SET_PARAMS, EACCES, 4).find("before START_DEV"),
              std::string::npos);
    EXPECT_NE(explain_ctrl_error(UBLK_CMD_START_DEV, EEXIST, 4).find("started before"),
              std::string::npos);
}

TEST(UblkErrors, MissingControlDeviceAsksWhetherUblkDrvIsLoaded) {
    auto c = Control::open("/nonexistent/ublk-control");
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().error_number(), ENOENT);
    const std::string& m = c.status().message();
    EXPECT_EQ(m.rfind("ublk: cannot open /nonexistent/ublk-control: No such file or directory "
                      "(is ublk_drv loaded?",
                      0),
              0U)
        << m;
    EXPECT_NE(m.find("ublk_kmod"), std::string::npos) << "names the target that builds it: " << m;
}

// A control device that is not ublk's refuses io_uring commands: the message names the command.
// (/dev/null takes them since Linux 6.5, as a no-op for benchmarks; /dev/zero does not.)
TEST(UblkErrors, ControlDeviceThatTakesNoUringCmd) {
    auto c = Control::open("/dev/zero");
    if (!c.ok()) {
        GTEST_SKIP() << "no io_uring here: " << c.status().message();
    }
    auto s = make_setup(config(), kPage);
    ASSERT_TRUE(s.ok());
    Status st = c->add_dev(s->info);
    if (st.ok()) {
        GTEST_SKIP() << "this kernel's /dev/zero takes io_uring commands";
    }
    EXPECT_EQ(st.error_number(), EOPNOTSUPP);
    EXPECT_EQ(st.message().rfind("ublk: ADD_DEV failed: Operation not supported (is ublk_drv "
                                 "loaded?",
                                 0),
              0U)
        << st.message();
    st = c->stop_dev(3);
    EXPECT_EQ(st.message().rfind("ublk: STOP_DEV of device 3 failed: ", 0), 0U) << st.message();
}

TEST(UblkDriver, ModuleIsLookedForNextToTheProgramFirst) {
    auto c = module_candidates("/x/build/userblk");
    ASSERT_FALSE(c.empty());
    EXPECT_EQ(c.front(), "/x/build/ublk/ublk_drv.ko");
    for (const auto& path : c) {
        EXPECT_TRUE(path.ends_with("/ublk/ublk_drv.ko")) << path;
    }
    for (const auto& path : module_candidates("")) { // no program path: only the build's
        EXPECT_EQ(path.front(), '/') << path;
    }
}

// ---- the registry and the CLI ------------------------------------------------------------------

TEST(UblkRegistry, IsABaselineWithItsOwnDelete) {
    const TransportEntry* t = find_transport("ublk");
    ASSERT_NE(t, nullptr);
    EXPECT_NE(t->remove, nullptr) << "its devices are not userblk.ko's";
    EXPECT_EQ(t->backends, BackendUse::object);
    Capabilities caps = describe_transport(*t);
    EXPECT_EQ(caps.get("kind"), "baseline");
    EXPECT_EQ(caps.get("control_device"), "/dev/ublk-control");
    EXPECT_EQ(caps.get("polling"), "0");
    EXPECT_TRUE(caps.get("request_timeout").has_value());
    EXPECT_EQ(find_transport("copy")->remove, nullptr);
}

struct CliRun {
    int status = -1;
    std::string err;
};

/// Runs the built CLI with args; its exit status and stderr. Only commands that fail before
/// they touch a kernel run here.
CliRun run_cli(const std::vector<std::string>& args) {
    std::string cmd = USERBLK_CLI_PATH;
    for (const auto& a : args) {
        cmd += " '" + a + "'";
    }
    cmd += " 2>&1 >/dev/null";
    CliRun r;
    std::FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) {
        return r;
    }
    char buf[1024];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) {
        r.err.append(buf, n);
    }
    int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

TEST(UblkCli, AddRefusesATimeoutBeforeTouchingTheKernel) {
    CliRun r = run_cli(
        {"add", "--transport", "ublk", "--backend", "ram", "--size", "1M", "--timeout-ms", "2000"});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("ublk: cannot create the device: Invalid argument (a request timeout"),
              std::string::npos)
        << r.err;
}

TEST(UblkCli, AddRefusesADepthAbove4096) {
    CliRun r = run_cli(
        {"add", "--transport", "ublk", "--backend", "ram", "--size", "1M", "--depth", "5000"});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("depth 5000 is outside 1..4096"), std::string::npos) << r.err;
}

TEST(UblkCli, DelOfAnUnknownTransportIsAUsageError) {
    CliRun r = run_cli({"del", "--transport", "nope", "3"});
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.err.find("unknown transport 'nope'"), std::string::npos) << r.err;
}

} // namespace
