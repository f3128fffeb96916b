// The kmod device setup as far as it can run without userblk.ko: messages, config mapping, and
// the explanations of ADD_DEV failures.
#include <cerrno>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "transports/kmod/kmod.h"
#include "cli/registry.h"

namespace {

using namespace userblk;

bool module_loaded() {
    return std::filesystem::exists(USERBLK_CONTROL_PATH);
}

TEST(ControlDevice, MissingControlDeviceSaysToLoadTheModule) {
    auto ctl = ControlDevice::open("/nonexistent/userblk-control");
    ASSERT_FALSE(ctl.ok());
    EXPECT_EQ(ctl.status().error_number(), ENOENT);
    EXPECT_EQ(ctl.status().message(), "cannot open /nonexistent/userblk-control: No such file or "
                                      "directory (is userblk.ko loaded?)");
}

TEST(ControlDevice, DefaultPathMessageWhenTheModuleIsNotLoaded) {
    if (module_loaded()) {
        GTEST_SKIP() << USERBLK_CONTROL_PATH << " exists: userblk.ko is loaded";
    }
    auto ctl = ControlDevice::open();
    ASSERT_FALSE(ctl.ok());
    EXPECT_EQ(ctl.status().message(), "cannot open /dev/userblk-control: No such file or "
                                      "directory (is userblk.ko loaded?)");
}

TEST(ControlDevice, IoctlsOnSomethingElseFailWithAVersionHint) {
    auto ctl = ControlDevice::open("/dev/null"); // not the control device: every ioctl is ENOTTY
    ASSERT_TRUE(ctl.ok());
    userblk_dev_config cfg = to_uapi(DeviceConfig{.size = 1 << 20}, USERBLK_MODE_COPY);
    Status st = ctl->add_dev(cfg);
    EXPECT_EQ(st.error_number(), ENOTTY);
    EXPECT_NE(st.message().find("ADD_DEV failed: "), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("differ in version"), std::string::npos) << st.message();
    auto info = ctl->get_info(3);
    ASSERT_FALSE(info.ok());
    EXPECT_EQ(info.status().message().rfind("GET_INFO of device 3 failed: ", 0), 0U)
        << info.status().message();
    EXPECT_EQ(ctl->del_dev(3).error_number(), ENOTTY);
    EXPECT_FALSE(ctl->open_queue(3, 1).ok());
}

TEST(KmodConfig, ToUapiFillsEveryFieldAndZeroesReserved) {
    DeviceConfig cfg;
    cfg.size = 1 << 30;
    cfg.block_size = 4096;
    cfg.nr_queues = 2;
    cfg.queue_depth = 128;
    cfg.max_io_bytes = 512 * 1024;
    cfg.timeout_ms = 30000;
    cfg.features = USERBLK_F_FLUSH | USERBLK_F_DISCARD;
    cfg.dev_id = 5;
    userblk_dev_config u = to_uapi(cfg, USERBLK_MODE_RING);
    EXPECT_EQ(u.abi_version, USERBLK_ABI_VERSION);
    EXPECT_EQ(u.dev_id, 5U);
    EXPECT_EQ(u.mode, static_cast<std::uint32_t>(USERBLK_MODE_RING));
    EXPECT_EQ(u.logical_block_size, 4096U);
    EXPECT_EQ(u.size, 1U << 30);
    EXPECT_EQ(u.features, USERBLK_F_FLUSH | USERBLK_F_DISCARD);
    EXPECT_EQ(u.nr_queues, 2U);
    EXPECT_EQ(u.queue_depth, 128U);
    EXPECT_EQ(u.max_io_bytes, 512U * 1024);
    EXPECT_EQ(u.timeout_ms, 30000U);
    EXPECT_EQ(u.state, 0U);
    for (auto r : u.reserved) {
        EXPECT_EQ(r, 0U);
    }
    EXPECT_EQ(u.recovery_timeout_ms, 0U);
    EXPECT_EQ(u.nr_poll_queues, 0U);
    EXPECT_EQ(to_uapi(DeviceConfig{.nr_queues = 2, .nr_poll_queues = 1}, USERBLK_MODE_RING)
                  .nr_poll_queues,
              1U);
    EXPECT_EQ(to_uapi(DeviceConfig{}, USERBLK_MODE_COPY).dev_id, USERBLK_DEV_ID_ANY);
}

TEST(KmodConfig, InfoFromUapi) {
    userblk_dev_config u =
        to_uapi(DeviceConfig{.size = 1 << 20, .nr_queues = 3}, USERBLK_MODE_COPY);
    u.dev_id = 12;
    DeviceInfo info = info_from_uapi(u);
    EXPECT_EQ(info.id, 12U);
    EXPECT_EQ(info.path, "/dev/userblk12");
    EXPECT_EQ(info.size, 1U << 20);
    EXPECT_EQ(info.nr_queues, 3U);
}

std::string explain(DeviceConfig cfg, int err = EINVAL) {
    return explain_add_dev(err, to_uapi(cfg, USERBLK_MODE_COPY));
}

TEST(ExplainAddDev, NamesTheOffendingValue) {
    EXPECT_EQ(explain({.size = 1000}), "size 1000 is not a multiple of block size 512");
    EXPECT_EQ(explain({.size = 0}), "size 0");
    EXPECT_EQ(explain({.size = 1 << 20, .block_size = 1000}),
              "block size 1000 is not a power of two from 512 to 4096");
    EXPECT_EQ(explain({.size = 1 << 20, .block_size = 8192}),
              "block size 8192 is not a power of two from 512 to 4096");
    EXPECT_EQ(explain({.size = 1 << 20, .nr_queues = 0}), "queues 0 is outside 1..64");
    EXPECT_EQ(explain({.size = 1 << 20, .nr_queues = 65}), "queues 65 is outside 1..64");
    EXPECT_EQ(explain({.size = 1 << 20, .queue_depth = 2000}), "depth 2000 is outside 1..1024");
    EXPECT_EQ(explain({.size = 1 << 20, .max_io_bytes = 8192 + 1000}),
              "max I/O 9192 is not a multiple of block size 512");
    EXPECT_EQ(explain({.size = 1 << 20, .max_io_bytes = 1024}),
              "max I/O 1024 is below the page size 4096");
    EXPECT_EQ(explain({.size = 1ULL << 63}), "size 9223372036854775808 is too large");
    EXPECT_EQ(explain({.size = 1 << 20, .max_io_bytes = 2 << 20}),
              "max I/O 2097152 exceeds 1048576");
    EXPECT_EQ(explain({.size = 1 << 20, .timeout_ms = 5}), "timeout 5 ms is outside 100..600000");
    EXPECT_EQ(explain({.size = 1 << 20, .features = 1ULL << 40}),
              "unknown feature bits 0x10000000000");
    EXPECT_EQ(explain({.size = 1 << 20, .dev_id = 5000}), "device id 5000 is not below 1024");
    EXPECT_EQ(explain({.size = 1 << 20, .nr_queues = 2, .nr_poll_queues = 2}),
              "2 poll queues of 2 queues: at least one queue must take I/O that is not polled "
              "(raise --queues)");
    EXPECT_EQ(explain({.size = 1 << 20, .nr_queues = 2, .nr_poll_queues = 1}),
              "poll queues are a ring feature: the submitter reaps a ring's completions, while "
              "the other modes complete in the daemon's write()");
}

TEST(ExplainAddDev, OtherErrnos) {
    EXPECT_EQ(explain({.size = 1 << 20, .dev_id = 3}, EEXIST), "device id 3 is taken");
    EXPECT_EQ(explain({.size = 1 << 20}, EOPNOTSUPP),
              "the loaded userblk.ko does not serve mode 1: built without it? The kernel log says");
    EXPECT_EQ(explain_add_dev(EOPNOTSUPP, to_uapi({.size = 1 << 20}, USERBLK_MODE_COPY), "copy"),
              "the loaded userblk.ko does not serve mode 1 (copy): built without it? The kernel "
              "log says");
    EXPECT_EQ(explain({.size = 1 << 20}, EPERM),
              "run as root (CAP_SYS_ADMIN); a device belongs to the process that added it "
              "(`userblk del ID` acts on anyone's)");
    EXPECT_EQ(explain({.size = 1 << 20}, ENOMEM), "");
    EXPECT_EQ(explain({.size = 1 << 20}), ""); // a valid config: the kernel's own reason
    EXPECT_EQ(explain({.size = 1 << 20}, E2BIG), "") << "only a ring queue has a size limit";
    EXPECT_EQ(
        explain_add_dev(E2BIG, to_uapi({.size = 1 << 20, .queue_depth = 1024}, USERBLK_MODE_RING)),
        "a ring queue's shared area holds a buffer of max I/O (the module's default) per "
        "tag; depth 1024 of them exceed the module's limit (see the kernel log): lower "
        "--depth or --max-io");
}

TEST(KmodTransport, CreateWithoutTheModuleFailsClearly) {
    if (module_loaded()) {
        GTEST_SKIP() << USERBLK_CONTROL_PATH << " exists: userblk.ko is loaded";
    }
    auto backend = find_backend("null")->make(BackendConfig{1 << 20, 512, 1, 0, {}});
    ASSERT_TRUE(backend.ok());
    for (const auto& entry : transports()) {
        auto t = entry.make();
        if (describe_transport(entry).get("kernel") != "userblk") {
            continue; // references and baselines (ublk, nbd) do not use userblk.ko
        }
        Status st = t->create(DeviceConfig{.size = 1 << 20}, backend.value().get());
        EXPECT_EQ(st.message(), "cannot open /dev/userblk-control: No such file or directory "
                                "(is userblk.ko loaded?)")
            << entry.name;
        EXPECT_TRUE(t->destroy().ok()) << entry.name;
    }
}

TEST(KmodTransport, ServeBeforeCreateIsAnError) {
    auto t = find_transport("copy")->make();
    bool called = false;
    Status st = t->serve(std::stop_token{}, [&](const DeviceInfo&) { called = true; });
    EXPECT_EQ(st.error_number(), EINVAL);
    EXPECT_EQ(st.message(), "copy: serve failed: Invalid argument (no device was created)");
    EXPECT_FALSE(called);
    EXPECT_EQ(t->stats(), nullptr);
    EXPECT_TRUE(t->destroy().ok());
}

} // namespace
