// The registries: lookups by name, and every entry can describe itself and be made.
#include <set>
#include <utility>

#include <gtest/gtest.h>

#include "cli/registry.h"

namespace {

using namespace userblk;

TEST(Registry, FindsKnownTransports) {
    const TransportEntry* copy = find_transport("copy");
    ASSERT_NE(copy, nullptr);
    EXPECT_EQ(copy->name, "copy");
    EXPECT_NE(copy->make(), nullptr);
}

TEST(Registry, UnknownNamesAreNull) {
    EXPECT_EQ(find_transport("nope"), nullptr);
    EXPECT_EQ(find_transport(""), nullptr);
    EXPECT_EQ(find_transport("COPY"), nullptr); // names are exact
    EXPECT_EQ(find_backend("nope"), nullptr);
    EXPECT_EQ(find_backend("copy"), nullptr); // tables are separate
}

TEST(Registry, FindsKnownBackends) {
    for (const char* name : {"null", "ram"}) {
        const BackendEntry* b = find_backend(name);
        ASSERT_NE(b, nullptr) << name;
        auto made = b->make(BackendConfig{1 << 20, 512, 1, 0, {}});
        ASSERT_TRUE(made.ok()) << made.status().message();
        EXPECT_EQ(made.value()->size(), 1U << 20);
    }
}

TEST(Registry, NamesForMessages) {
    std::string want;
    for (const auto& t : transports()) {
        want += (want.empty() ? "" : ", ") + std::string(t.name);
    }
    EXPECT_EQ(transport_names(), want);
    EXPECT_EQ(transport_names().rfind("copy, ", 0), 0U) << "the table starts with copy";
    EXPECT_EQ(backend_names(), "null, ram, file, forward");
}

TEST(Registry, NamesAreUnique) {
    std::set<std::string_view> seen;
    for (const auto& t : transports()) {
        EXPECT_TRUE(seen.insert(t.name).second) << t.name;
    }
    seen.clear();
    for (const auto& b : backends()) {
        EXPECT_TRUE(seen.insert(b.name).second) << b.name;
    }
}

// Every registered transport, present and future, describes itself in key=value lines.
TEST(Registry, EveryTransportDescribesItself) {
    for (const auto& t : transports()) {
        Capabilities caps = describe_transport(t);
        EXPECT_EQ(caps.get("name"), std::string(t.name));
        EXPECT_TRUE(caps.get("summary").has_value()) << t.name;
        EXPECT_GT(caps.entries().size(), 4U) << t.name << " says little about itself";
        for (const auto& [k, v] : caps.entries()) {
            EXPECT_EQ(k.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_"),
                      std::string::npos)
                << t.name << " key " << k;
            EXPECT_EQ(v.find('\n'), std::string::npos) << t.name << " " << k;
        }
    }
}

TEST(Registry, KmodTransportsNameTheirMode) {
    // For the userblk transports the registry name is the kmod mode.
    for (auto [name, mode] : {std::pair{"copy", USERBLK_MODE_COPY}, {"ring", USERBLK_MODE_RING}}) {
        const TransportEntry* t = find_transport(name);
        ASSERT_NE(t, nullptr) << name;
        Capabilities caps = describe_transport(*t);
        EXPECT_EQ(caps.get("mode"), name);
        EXPECT_EQ(caps.get("mode_number"), std::to_string(mode));
        EXPECT_EQ(caps.get("kernel"), "userblk");
    }
}

TEST(Registry, EveryModeOfTheUapiIsOneUserblkTransport) {
    // The uapi's modes run from USERBLK_MODE_COPY to the end marker; each is exactly one entry.
    for (std::uint32_t m = USERBLK_MODE_COPY; m < USERBLK_MODE_END; ++m) {
        const TransportEntry* t = find_transport_by_mode(m);
        ASSERT_NE(t, nullptr) << "mode " << m;
        EXPECT_EQ(t->kind, TransportKind::userblk) << t->name;
        int same = 0;
        for (const auto& e : transports()) {
            same += e.kind == TransportKind::userblk && e.mode == m;
        }
        EXPECT_EQ(same, 1) << "mode " << m;
    }
    EXPECT_EQ(find_transport_by_mode(0), nullptr);
    EXPECT_EQ(find_transport_by_mode(USERBLK_MODE_END), nullptr);
    for (const auto& e : transports()) {
        EXPECT_EQ(e.kind == TransportKind::userblk, e.mode != 0) << e.name;
        EXPECT_EQ(describe_transport(e).get("kind"), kind_name(e.kind)) << e.name;
    }
}

TEST(Registry, EveryUserblkTransportSaysWhatItsKernelCopiesTo) {
    // The VM suite checks the kernel's copy counters against kernel_copy= (docs/splice-and-pipe.md).
    const std::set<std::string> known = {"user", "kernel",
                                         "kernel if the backend has native_pipe=1, else user"};
    for (const auto& e : transports()) {
        auto said = describe_transport(e).get("kernel_copy");
        if (e.kind == TransportKind::userblk) {
            ASSERT_TRUE(said.has_value()) << e.name;
            EXPECT_TRUE(known.contains(std::string(*said))) << e.name << ": " << *said;
        } else {
            EXPECT_FALSE(said.has_value()) << e.name << ": not a mode of userblk.ko";
        }
    }
}

TEST(Registry, PollingIsReadFromTheCapabilities) {
    EXPECT_TRUE(transport_polls(*find_transport("ring")));
    EXPECT_FALSE(transport_polls(*find_transport("copy")));
    EXPECT_FALSE(transport_polls(*find_transport("null_blk")));
    std::string names = polling_transport_names();
    EXPECT_NE(names.find("ring"), std::string::npos) << names;
    EXPECT_EQ(names.find("copy"), std::string::npos) << names;
}

TEST(Registry, EveryBackendDescribesItself) {
    for (const auto& b : backends()) {
        Capabilities caps = describe_backend(b);
        EXPECT_EQ(caps.get("name"), std::string(b.name));
        EXPECT_TRUE(caps.get("pipe_path").has_value()) << b.name;
        EXPECT_TRUE(caps.get("options").has_value()) << b.name;
        EXPECT_TRUE(caps.get("native_pipe").has_value()) << b.name;
    }
}

} // namespace
