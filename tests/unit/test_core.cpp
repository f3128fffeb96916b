// Core helpers: Status, Result, unique_fd, Mapping, Capabilities, config names, execute().
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "core/capabilities.h"
#include "core/config.h"
#include "core/io.h"
#include "core/module.h"
#include "core/mapping.h"
#include "core/status.h"
#include "core/unique_fd.h"
#include "test_util.h"

namespace {

using namespace userblk;

TEST(Status, DefaultIsSuccess) {
    Status st;
    EXPECT_TRUE(st.ok());
    EXPECT_EQ(st.error_number(), 0);
    EXPECT_TRUE(st.message().empty());
}

TEST(Status, FromErrnoNamesObjectCauseAndReason) {
    Status st = Status::from_errno(ENOMEM, "ring: mmap of queue 1 failed");
    EXPECT_FALSE(st.ok());
    EXPECT_EQ(st.error_number(), ENOMEM);
    EXPECT_EQ(st.message(), "ring: mmap of queue 1 failed: Cannot allocate memory");
    Status why = Status::from_errno(EINVAL, "ADD_DEV failed", "size 1000");
    EXPECT_EQ(why.message(), "ADD_DEV failed: Invalid argument (size 1000)");
    EXPECT_EQ(why.code(), std::errc::invalid_argument);
}

TEST(Status, NonPositiveErrnoBecomesEio) {
    EXPECT_EQ(Status::from_errno(0, "x").error_number(), EIO);
    EXPECT_EQ(Status::from_errno(-5, "x").error_number(), EIO);
}

TEST(Result, HoldsValueOrError) {
    Result<int> good(42);
    ASSERT_TRUE(good.ok());
    EXPECT_EQ(good.value(), 42);
    Result<int> bad(Status::from_errno(ENOENT, "thing"));
    EXPECT_FALSE(bad.ok());
    EXPECT_EQ(bad.status().error_number(), ENOENT);
    Result<int> confused{Status{}}; // a success Status is no value: still an error
    EXPECT_FALSE(confused.ok());
    EXPECT_FALSE(confused.status().ok());
}

bool fd_open(int fd) {
    return ::fcntl(fd, F_GETFD) >= 0;
}

TEST(UniqueFd, ClosesOnceOnDestructionAndMove) {
    int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(raw, 0);
    {
        unique_fd a(raw);
        EXPECT_TRUE(a.valid());
        unique_fd b(std::move(a));
        EXPECT_FALSE(a.valid()); // NOLINT(bugprone-use-after-move): testing the moved-from state
        EXPECT_EQ(b.get(), raw);
        EXPECT_TRUE(fd_open(raw));
    }
    EXPECT_FALSE(fd_open(raw));
}

TEST(UniqueFd, ReleaseGivesUpOwnership) {
    int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(raw, 0);
    {
        unique_fd a(raw);
        EXPECT_EQ(a.release(), raw);
    }
    EXPECT_TRUE(fd_open(raw));
    ::close(raw);
}

TEST(Mapping, AnonymousIsZeroedWritableAndMovable) {
    auto m = Mapping::anonymous(std::size_t{3} * 4096, true, "test");
    ASSERT_TRUE(m.ok()) << m.status().message();
    Mapping a = std::move(m).value();
    ASSERT_EQ(a.size(), 3U * 4096);
    EXPECT_TRUE(test::all_zero(a.bytes()));
    a.data()[5000] = std::byte{7};
    Mapping b = std::move(a);
    EXPECT_EQ(a.data(), nullptr); // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(b.data()[5000], std::byte{7});
}

TEST(Mapping, ZeroLengthIsEmptyAndHugeFailsWithMessage) {
    auto empty = Mapping::anonymous(0, false, "test");
    ASSERT_TRUE(empty.ok());
    EXPECT_EQ(empty.value().size(), 0U);
    auto huge = Mapping::anonymous(std::size_t{1} << 62, false, "ram: memory");
    ASSERT_FALSE(huge.ok());
    EXPECT_NE(huge.status().message().find("ram: memory: mmap of"), std::string::npos)
        << huge.status().message();
}

TEST(Capabilities, OrderedReplacingOneLineEach) {
    Capabilities caps;
    caps.set("name", "copy");
    caps.set_number("max_queues", 64);
    caps.set_flag("zero_copy", false);
    caps.set("name", "ring");
    caps.set("summary", "two\nlines");
    EXPECT_EQ(caps.to_string(), "name=ring\nmax_queues=64\nzero_copy=0\nsummary=two lines\n");
    EXPECT_EQ(caps.get("max_queues"), "64");
    EXPECT_FALSE(caps.get("missing").has_value());
}

TEST(Features, ParseAndFormat) {
    EXPECT_EQ(parse_features(""), 0U);
    EXPECT_EQ(parse_features("none"), 0U);
    EXPECT_EQ(parse_features("flush,discard,write-zeroes"),
              USERBLK_F_FLUSH | USERBLK_F_DISCARD | USERBLK_F_WRITE_ZEROES);
    EXPECT_EQ(parse_features("read-only"), USERBLK_F_READ_ONLY);
    std::string bad;
    EXPECT_FALSE(parse_features("flush,trim", &bad).has_value());
    EXPECT_EQ(bad, "trim");
    EXPECT_FALSE(parse_features("flush,", &bad).has_value());
    EXPECT_EQ(bad, "");
    EXPECT_EQ(format_features(0), "none");
    EXPECT_EQ(format_features(USERBLK_F_FLUSH | USERBLK_F_WRITE_ZEROES), "flush,write-zeroes");
    EXPECT_EQ(format_features(USERBLK_F_DISCARD | (1ULL << 9)), "discard,0x200");
}

TEST(Names, StatesAndPaths) {
    EXPECT_EQ(state_name(USERBLK_STATE_LIVE), "live");
    EXPECT_EQ(state_name(USERBLK_STATE_DEAD), "dead");
    EXPECT_EQ(state_name(0), "state0");
    EXPECT_EQ(disk_path(7), "/dev/userblk7");
}

userblk_io_desc desc(std::uint8_t op, std::uint64_t off, std::uint32_t len) {
    userblk_io_desc d{};
    d.op = op;
    d.offset = off;
    d.len = len;
    return d;
}

TEST(Execute, RunsOpsAndCountsThem) {
    test::BackendWithQueue b("ram", 1 << 20);
    ASSERT_TRUE(b.queue);
    auto data = test::pattern(4096, 1);
    EXPECT_EQ(execute(*b.backend, *b.queue, desc(USERBLK_OP_WRITE, 8192, 4096), data), 0);
    std::vector<std::byte> back(4096);
    EXPECT_EQ(execute(*b.backend, *b.queue, desc(USERBLK_OP_READ, 8192, 4096), back), 0);
    EXPECT_EQ(back, data);
    EXPECT_EQ(execute(*b.backend, *b.queue, desc(USERBLK_OP_FLUSH, 0, 0), {}), 0);
    EXPECT_EQ(execute(*b.backend, *b.queue, desc(USERBLK_OP_DISCARD, 8192, 4096), {}), 0);
    EXPECT_EQ(execute(*b.backend, *b.queue, desc(USERBLK_OP_READ, 8192, 4096), back), 0);
    EXPECT_TRUE(test::all_zero(back));

    StatsSnapshot s = b.stats.snapshot();
    EXPECT_EQ(s.requests[static_cast<std::size_t>(OpKind::read)], 2U);
    EXPECT_EQ(s.requests[static_cast<std::size_t>(OpKind::write)], 1U);
    EXPECT_EQ(s.requests[static_cast<std::size_t>(OpKind::flush)], 1U);
    EXPECT_EQ(s.requests[static_cast<std::size_t>(OpKind::discard)], 1U);
    EXPECT_EQ(s.bytes[static_cast<std::size_t>(OpKind::read)], 8192U);
    EXPECT_EQ(s.bytes[static_cast<std::size_t>(OpKind::discard)], 4096U);
    EXPECT_EQ(s.io_errors, 0U);
}

TEST(Execute, RejectsUnknownOpsBadRangesAndWrongBuffers) {
    test::BackendWithQueue b("ram", 1 << 20);
    ASSERT_TRUE(b.queue);
    std::vector<std::byte> buf(4096);
    EXPECT_EQ(execute(*b.backend, *b.queue, desc(77, 0, 4096), buf), -EOPNOTSUPP);
    EXPECT_EQ(execute(*b.backend, *b.queue, desc(USERBLK_OP_READ, (1 << 20) - 512, 4096), buf),
              -EINVAL);
    EXPECT_EQ(execute(*b.backend, *b.queue, desc(USERBLK_OP_WRITE, UINT64_MAX - 100, 4096), buf),
              -EINVAL);
    EXPECT_EQ(execute(*b.backend, *b.queue, desc(USERBLK_OP_READ, 0, 8192), buf), -EINVAL);
    EXPECT_EQ(execute(*b.backend, *b.queue, desc(USERBLK_OP_DISCARD, 1 << 20, 512), {}), -EINVAL);
    StatsSnapshot s = b.stats.snapshot();
    EXPECT_EQ(s.io_errors, 5U);
    EXPECT_EQ(s.requests[static_cast<std::size_t>(OpKind::other)], 1U);
}

} // namespace

namespace userblk {
namespace {

TEST(LoadModule, AModuleThatIsPresentIsNotLoadedAgain) {
    // Every kernel has /sys/module/kernel; nothing is run for it.
    std::string how;
    ModuleSpec spec{.name = "kernel", .params = {}, .built = {}, .ready_path = {}, .hint = {}};
    EXPECT_TRUE(load_module(spec, &how).ok());
    EXPECT_EQ(how, "present");
}

TEST(LoadModule, NothingToLoadSaysWhatWasTriedAndWhatToDo) {
    std::string how = "unchanged";
    ModuleSpec spec{.name = "userblk_no_such_module",
                    .params = {},
                    .built = {"/nonexistent/userblk_no_such_module.ko"},
                    .ready_path = {},
                    .hint = "build it with the target x"};
    Status st = load_module(spec, &how);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("cannot load userblk_no_such_module"), std::string::npos)
        << st.message();
    EXPECT_NE(st.message().find("/nonexistent/userblk_no_such_module.ko (missing)"),
              std::string::npos)
        << st.message();
    EXPECT_NE(st.message().find("build it with the target x"), std::string::npos);
    EXPECT_EQ(how, "unchanged");
}

} // namespace
} // namespace userblk
