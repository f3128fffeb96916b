// Backend options: `--backend NAME[:KEY=VALUE,...]` parsing, the keys each backend takes, and how
// they are described.
#include <string>

#include <gtest/gtest.h>

#include "backends/options.h"
#include "cli/registry.h"

namespace {

using namespace userblk;

BackendSpec parse_ok(std::string_view text) {
    std::string why;
    auto spec = parse_backend_spec(text, &why);
    EXPECT_TRUE(spec.has_value()) << text << ": " << why;
    return spec.value_or(BackendSpec{});
}

std::string parse_error(std::string_view text) {
    std::string why;
    auto spec = parse_backend_spec(text, &why);
    EXPECT_FALSE(spec.has_value()) << text << " parsed";
    return why;
}

TEST(BackendSpec, NameAlone) {
    BackendSpec s = parse_ok("ram");
    EXPECT_EQ(s.name, "ram");
    EXPECT_TRUE(s.options.empty());
}

TEST(BackendSpec, OneOption) {
    BackendSpec s = parse_ok("file:path=/tmp/disk.img");
    EXPECT_EQ(s.name, "file");
    ASSERT_EQ(s.options.size(), 1U);
    EXPECT_EQ(s.options.at("path"), "/tmp/disk.img");
}

TEST(BackendSpec, SeveralOptionsAndAnEmptyValue) {
    BackendSpec s = parse_ok("forward:host=127.0.0.1,port=10809,export=");
    EXPECT_EQ(s.name, "forward");
    ASSERT_EQ(s.options.size(), 3U);
    EXPECT_EQ(s.options.at("host"), "127.0.0.1");
    EXPECT_EQ(s.options.at("port"), "10809");
    EXPECT_EQ(s.options.at("export"), "");
}

TEST(BackendSpec, ValuesMayHoldColonsAndEquals) {
    BackendSpec s = parse_ok("forward:host=::1,export=a=b:c");
    EXPECT_EQ(s.options.at("host"), "::1");
    EXPECT_EQ(s.options.at("export"), "a=b:c");
    EXPECT_EQ(parse_ok("file:path=/x:y").options.at("path"), "/x:y");
}

TEST(BackendSpec, KeysMayHoldDigitsDashesAndUnderscores) {
    BackendSpec s = parse_ok("forward:timeout-ms=5,a_1=2");
    EXPECT_EQ(s.options.at("timeout-ms"), "5");
    EXPECT_EQ(s.options.at("a_1"), "2");
}

TEST(BackendSpec, MalformedSpecsSayWhy) {
    EXPECT_EQ(parse_error(""), "expected NAME[:KEY=VALUE,...], got no name");
    EXPECT_EQ(parse_error(":path=x"), "expected NAME[:KEY=VALUE,...], got no name");
    EXPECT_EQ(parse_error("file:"), "expected KEY=VALUE after 'file:'");
    EXPECT_EQ(parse_error("file:path"), "expected KEY=VALUE, got 'path'");
    EXPECT_EQ(parse_error("file:=x"), "expected KEY=VALUE, got '=x'");
    EXPECT_EQ(parse_error("file:path=a,"), "expected KEY=VALUE, got ''");
    EXPECT_EQ(parse_error("file:path=a,,b=c"), "expected KEY=VALUE, got ''");
    EXPECT_EQ(parse_error("file:path=a,path=b"), "'path' is given twice");
    EXPECT_EQ(parse_error("file:PATH=x"),
              "invalid key 'PATH' (lower-case letters, digits, '-' and '_')");
    EXPECT_EQ(parse_error("file:pa th=x"),
              "invalid key 'pa th' (lower-case letters, digits, '-' and '_')");
}

TEST(BackendSpec, ErrorPointerMayBeNull) {
    EXPECT_FALSE(parse_backend_spec("file:", nullptr).has_value());
}

TEST(BackendOptions, RamTakesNoneAndNullOnlyFill) {
    for (auto [name, takes] : {std::pair{"ram", "takes no options"}, {"null", "takes: fill"}}) {
        const BackendEntry* b = find_backend(name);
        ASSERT_NE(b, nullptr);
        EXPECT_TRUE(check_backend_options(*b, {}).ok());
        Status st = check_backend_options(*b, {{"path", "/x"}});
        EXPECT_EQ(st.error_number(), EINVAL);
        EXPECT_EQ(st.message(), std::string(name) + ": unknown option 'path': Invalid argument (" +
                                    name + " " + takes + ")");
        auto made = b->make(BackendConfig{1 << 20, 512, 1, 0, {{"size", "1"}}});
        ASSERT_FALSE(made.ok()) << name;
        EXPECT_EQ(made.status().error_number(), EINVAL);
    }
    EXPECT_TRUE(find_backend("ram")->options.empty());
    EXPECT_TRUE(check_backend_options(*find_backend("null"), {{"fill", "none"}}).ok());
}

TEST(BackendOptions, UnknownKeysNameTheKeysTaken) {
    const BackendEntry* file = find_backend("file");
    ASSERT_NE(file, nullptr);
    EXPECT_TRUE(check_backend_options(*file, {{"path", "/x"}}).ok());
    EXPECT_EQ(check_backend_options(*file, {{"pth", "/x"}}).message(),
              "file: unknown option 'pth': Invalid argument (file takes: path, direct)");
    const BackendEntry* forward = find_backend("forward");
    ASSERT_NE(forward, nullptr);
    EXPECT_TRUE(
        check_backend_options(*forward, {{"host", "h"}, {"port", "1"}, {"export", ""}}).ok());
    EXPECT_EQ(check_backend_options(*forward, {{"hots", "h"}}).message(),
              "forward: unknown option 'hots': Invalid argument (forward takes: host, port, "
              "export, timeout-ms)");
}

TEST(BackendOptions, DumpListsTheKeys) {
    for (auto [name, keys] : {std::pair{"null", "fill"},
                              {"ram", ""},
                              {"file", "path,direct"},
                              {"forward", "host,port,export,timeout-ms"}}) {
        const BackendEntry* b = find_backend(name);
        ASSERT_NE(b, nullptr) << name;
        EXPECT_EQ(describe_backend(*b).get("options"), std::string(keys)) << name;
    }
}

TEST(BackendOptions, Numbers) {
    BackendOptions o = {{"port", "10809"}, {"bad", "12x"}, {"neg", "-1"}, {"empty", ""}};
    auto port = option_number("forward", o, "port", 1, 1, 65535);
    ASSERT_TRUE(port.ok());
    EXPECT_EQ(port.value(), 10809U);
    auto absent = option_number("forward", o, "timeout-ms", 30000, 1, 3600000);
    ASSERT_TRUE(absent.ok());
    EXPECT_EQ(absent.value(), 30000U);
    for (const char* key : {"bad", "neg", "empty"}) {
        auto v = option_number("forward", o, key, 1, 1, 65535);
        ASSERT_FALSE(v.ok()) << key;
        EXPECT_NE(v.status().message().find("expected a whole number from 1 to 65535"),
                  std::string::npos)
            << v.status().message();
    }
    auto big = option_number("forward", o, "port", 1, 1, 1000);
    ASSERT_FALSE(big.ok());
    EXPECT_EQ(big.status().message(), "forward: invalid port='10809': Invalid argument (expected "
                                      "a whole number from 1 to 1000)");
}

} // namespace
