// The userblk CLI as users and the harness see it: output, messages and exit codes, without the
// kernel module.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <gtest/gtest.h>

#include "backend_fixtures.h"
#include "cli/registry.h"
#include <csignal>
#include <cstdlib>
#include <sys/wait.h>
#include <unistd.h>

namespace {

struct CliRun {
    int code = -1;
    std::string out;
    std::string err;
};

std::string slurp(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

/// Runs build/userblk with args; stdout and stderr through files so nothing can block.
CliRun run(const std::vector<std::string>& args) {
    char out_path[] = "/tmp/userblk-cli-out-XXXXXX";
    char err_path[] = "/tmp/userblk-cli-err-XXXXXX";
    int out = ::mkstemp(out_path);
    int err = ::mkstemp(err_path);
    CliRun r;
    if (out < 0 || err < 0) {
        ADD_FAILURE() << "mkstemp failed";
        return r;
    }
    pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(out, STDOUT_FILENO);
        ::dup2(err, STDERR_FILENO);
        int null = ::open("/dev/null", O_RDONLY);
        ::dup2(null, STDIN_FILENO);
        std::vector<char*> argv;
        argv.push_back(const_cast<char*>(USERBLK_CLI_PATH));
        for (const auto& a : args) {
            argv.push_back(const_cast<char*>(a.c_str()));
        }
        argv.push_back(nullptr);
        ::execv(USERBLK_CLI_PATH, argv.data());
        ::_exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    ::close(out);
    ::close(err);
    r.out = slurp(out_path);
    r.err = slurp(err_path);
    ::unlink(out_path);
    ::unlink(err_path);
    return r;
}

bool module_loaded() {
    return std::filesystem::exists("/dev/userblk-control");
}

const char* kNoModule =
    "userblk: cannot open /dev/userblk-control: No such file or directory (is userblk.ko "
    "loaded?)\n";

TEST(Cli, ListsTransportsAndBackends) {
    CliRun t = run({"--list-transports"});
    EXPECT_EQ(t.code, 0);
    std::string want;
    for (const auto& e : userblk::transports()) {
        want += std::string(e.name) + "\n";
    }
    EXPECT_EQ(t.out, want);
    CliRun b = run({"--list-backends"});
    EXPECT_EQ(b.code, 0);
    EXPECT_EQ(b.out, "null\nram\nfile\nforward\n");
}

TEST(Cli, DumpTransportPrintsKeyValueLines) {
    CliRun r = run({"--dump-transport", "copy"});
    EXPECT_EQ(r.code, 0);
    EXPECT_EQ(r.out.rfind("name=copy\n", 0), 0U) << r.out;
    EXPECT_NE(r.out.find("\nmode=copy\n"), std::string::npos) << r.out;
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);) {
        EXPECT_NE(line.find('='), std::string::npos) << line;
    }
}

TEST(Cli, UnknownTransportListsTheValidOnesAndExits2) {
    CliRun r = run({"--dump-transport", "warp"});
    EXPECT_EQ(r.code, 2);
    std::string want =
        "userblk: unknown transport 'warp'; valid transports: " + userblk::transport_names() + "\n";
    EXPECT_EQ(r.err, want);
    CliRun a = run({"add", "--transport", "warp", "--backend", "ram", "--size", "1G"});
    EXPECT_EQ(a.code, 2);
    EXPECT_EQ(a.err, want);
}

TEST(Cli, BackendIsRequiredExactlyWhereItIsUsed) {
    CliRun missing = run({"add", "--transport", "copy", "--size", "1M"});
    EXPECT_EQ(missing.code, 2);
    EXPECT_EQ(
        missing.err,
        "userblk: --backend is required for copy; valid backends: null, ram, file, forward\n");
    CliRun extra = run({"add", "--transport", "null_blk", "--backend", "ram", "--size", "1M"});
    EXPECT_EQ(extra.code, 2);
    EXPECT_EQ(extra.err,
              "userblk: null_blk is served by the kernel alone: it takes no --backend\n");
}

TEST(Cli, ReferencesDescribeThemselvesAsKernelOnly) {
    for (const char* name : {"null_blk", "brd"}) {
        CliRun r = run({"--dump-transport", name});
        EXPECT_EQ(r.code, 0) << name;
        EXPECT_NE(r.out.find("\nkind=reference\n"), std::string::npos) << r.out;
    }
    CliRun c = run({"--dump-transport", "copy"});
    EXPECT_NE(c.out.find("\nkind=userblk\n"), std::string::npos) << c.out;
}

TEST(Cli, UnknownBackendListsTheValidOnesAndExits2) {
    CliRun r = run({"add", "--transport", "copy", "--backend", "disk", "--size", "1G"});
    EXPECT_EQ(r.code, 2);
    EXPECT_EQ(r.err, "userblk: unknown backend 'disk'; valid backends: null, ram, file, forward\n");
    EXPECT_EQ(run({"--dump-backend", "disk"}).code, 2);
}

TEST(Cli, BackendOptionsAreParsedAndCheckedBeforeAnythingElse) {
    CliRun bad = run({"add", "--transport", "copy", "--backend", "file:path", "--size", "1M"});
    EXPECT_EQ(bad.code, 2);
    EXPECT_EQ(bad.err, "userblk: invalid --backend 'file:path': expected KEY=VALUE, got 'path'\n");
    CliRun none = run({"add", "--transport", "copy", "--backend", "ram:size=1", "--size", "1M"});
    EXPECT_EQ(none.code, 2);
    EXPECT_EQ(none.err,
              "userblk: ram: unknown option 'size': Invalid argument (ram takes no options)\n");
    CliRun typo = run({"add", "--transport", "copy", "--backend", "file:pth=/x", "--size", "1M"});
    EXPECT_EQ(typo.code, 2);
    EXPECT_EQ(typo.err,
              "userblk: file: unknown option 'pth': Invalid argument (file takes: path, direct)\n");
    CliRun unknown = run({"add", "--transport", "copy", "--backend", "disk:x=1", "--size", "1M"});
    EXPECT_EQ(unknown.code, 2);
    EXPECT_EQ(unknown.err.rfind("userblk: unknown backend 'disk'; valid backends: ", 0), 0U)
        << unknown.err;
}

// Recovery is for the transports whose devices a new daemon can take over, and not with lend;
// its timeout needs it. Each is a usage error before any device exists.
TEST(Cli, RecoveryBadInputIsAUsageError) {
    struct Case {
        std::vector<std::string> args;
        const char* says;
    } cases[] = {
        {{"--transport", "pipe", "--recovery", "on"},
         "cannot take over a device of the pipe transport; transports that can: copy, ring"},
        {{"--transport", "splice", "--features", "flush,recovery"},
         "cannot take over a device of the splice transport"},
        {{"--transport", "ring", "--recovery", "yes"}, "invalid --recovery 'yes'"},
        {{"--transport", "ring", "--recovery-timeout-ms", "5000"},
         "--recovery-timeout-ms needs --recovery on"},
        {{"--transport", "copy", "--recovery", "on", "--features", "lend"},
         "recovery and lend exclude each other"},
    };
    for (const Case& c : cases) {
        std::vector<std::string> argv{"add", "--backend", "null", "--size", "1M"};
        argv.insert(argv.end(), c.args.begin(), c.args.end());
        CliRun r = run(argv);
        EXPECT_EQ(r.code, 2) << c.says;
        EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
    }
}

TEST(Cli, RecoverNamesATransportThatRecovers) {
    CliRun r = run({"recover", "0", "--transport", "pipe", "--backend", "null"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("recover: a new daemon cannot take over a device of the pipe transport"),
              std::string::npos)
        << r.err;
    r = run({"recover", "0", "--transport", "ublk", "--backend", "null"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("recover: ublk is not a userblk.ko transport"), std::string::npos)
        << r.err;
    r = run({"recover", "0", "--transport", "ring"});
    EXPECT_EQ(r.code, 2) << "--backend is required";
}

TEST(Cli, DumpTransportSaysWhichRecover) {
    for (auto [name, flag] : {std::pair{"copy", "\nrecovery=1\n"},
                              {"ring", "\nrecovery=1\n"},
                              {"pipe", "\nrecovery=0\n"},
                              {"splice", "\nrecovery=0\n"}}) {
        CliRun r = run({"--dump-transport", name});
        EXPECT_EQ(r.code, 0) << name;
        EXPECT_NE(r.out.find(flag), std::string::npos) << name << ": " << r.out;
    }
}

TEST(Cli, NullFillMustBeZeroOrNone) {
    // Refused as the backend is made, before any device exists (as file's relative path=).
    CliRun r = run({"add", "--transport", "copy", "--backend", "null:fill=ones", "--size", "1M"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("null: fill=ones is not a fill"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("fill=zero"), std::string::npos) << r.err;
}

TEST(Cli, DumpBackendListsItsOptions) {
    for (auto [name, line] : {std::pair{"null", "\noptions=fill\n"},
                              {"ram", "\noptions=\n"},
                              {"file", "\noptions=path,direct\n"},
                              {"forward", "\noptions=host,port,export,timeout-ms\n"}}) {
        CliRun r = run({"--dump-backend", name});
        EXPECT_EQ(r.code, 0) << name;
        EXPECT_NE(r.out.find(line), std::string::npos) << r.out;
    }
}

TEST(Cli, ForwardWithoutAServerFailsBeforeTheDeviceExists) {
    userblk::test::RefusingPort port;
    CliRun r =
        run({"add", "--transport", "copy", "--backend",
             "forward:host=127.0.0.1,port=" + port.port_string() + ",export=", "--size", "1M"});
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, "userblk: forward: cannot connect to NBD server 127.0.0.1:" +
                         port.port_string() + ": Connection refused\n");
}

// The backend is made (and probed) before the device: what it cannot serve is refused without
// the kernel module.
TEST(Cli, FeaturesTheBackendCannotServeAreRefused) {
    if (!userblk::test::nbdkit_installed()) {
        GTEST_SKIP() << userblk::test::kNoNbdkit;
    }
    userblk::test::Nbdkit plain({"eval", "get_size=echo 1048576",
                                 "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
                                 "pwrite=cat >/dev/null"});
    std::string spec = "forward:host=127.0.0.1,port=" + plain.port_string() + ",export=";
    CliRun d = run({"add", "--transport", "copy", "--backend", spec, "--size", "1M", "--features",
                    "flush,discard"});
    EXPECT_EQ(d.code, 2);
    EXPECT_EQ(d.err, "userblk: --features discard: Operation not supported (backend 'forward' "
                     "cannot serve it; it serves write-zeroes, which is what a device gets "
                     "without --features)\n");
    userblk::test::Nbdkit ro({"-r", "pattern", "size=1M"});
    spec = "forward:host=127.0.0.1,port=" + ro.port_string() + ",export=";
    CliRun w = run(
        {"add", "--transport", "copy", "--backend", spec, "--size", "1M", "--features", "none"});
    EXPECT_EQ(w.code, 2);
    EXPECT_EQ(w.err, "userblk: --features none: Read-only file system (backend 'forward' takes no "
                     "writes: the device must be read-only)\n");
}

TEST(Cli, BadSizesAndFeaturesAreUsageErrors) {
    CliRun s = run({"add", "--transport", "copy", "--backend", "ram", "--size", "1Q"});
    EXPECT_EQ(s.code, 2);
    EXPECT_NE(s.err.find("invalid --size '1Q'"), std::string::npos) << s.err;
    CliRun m =
        run({"add", "--transport", "copy", "--backend", "ram", "--size", "1G", "--max-io", "8G"});
    EXPECT_EQ(m.code, 2);
    EXPECT_NE(m.err.find("invalid --max-io '8G'"), std::string::npos) << m.err;
    CliRun f = run({"add", "--transport", "copy", "--backend", "ram", "--size", "1G", "--features",
                    "flush,trim"});
    EXPECT_EQ(f.code, 2);
    EXPECT_EQ(f.err,
              "userblk: unknown feature 'trim'; valid features: flush, discard, "
              "write-zeroes, read-only, fua (with flush), any-daemon, lend (pipe, splice)\n");
}

TEST(Cli, PollUsIsAUsageErrorForATransportThatDoesNotPoll) {
    CliRun r =
        run({"add", "--transport", "copy", "--backend", "ram", "--size", "1M", "--poll-us", "5"});
    EXPECT_EQ(r.code, 2);
    EXPECT_EQ(r.err, "userblk: --poll-us: the copy transport does not poll; transports that "
                     "poll: " +
                         userblk::polling_transport_names() + "\n");
    EXPECT_NE(r.err.find("ring"), std::string::npos) << r.err;
    // 0 means never: accepted everywhere, so the command goes on to the kernel.
    if (!module_loaded()) {
        CliRun zero = run(
            {"add", "--transport", "copy", "--backend", "ram", "--size", "1M", "--poll-us", "0"});
        EXPECT_EQ(zero.code, 1);
        EXPECT_EQ(zero.err, kNoModule);
    }
}

TEST(Cli, PollUsMustBeAMicrosecondCountUpToASecond) {
    for (const char* bad : {"-1", "abc", "1000001", "5s"}) {
        CliRun r = run(
            {"add", "--transport", "ring", "--backend", "ram", "--size", "1M", "--poll-us", bad});
        EXPECT_EQ(r.code, 2) << bad;
        EXPECT_NE(r.err.find("--poll-us"), std::string::npos) << bad << ": " << r.err;
    }
    if (module_loaded()) {
        GTEST_SKIP() << "/dev/userblk-control exists: a valid --poll-us would create a device";
    }
    for (const char* good : {"1", "1000000"}) {
        CliRun r = run(
            {"add", "--transport", "ring", "--backend", "ram", "--size", "1M", "--poll-us", good});
        EXPECT_EQ(r.code, 1) << good << " was not accepted: " << r.err;
        EXPECT_EQ(r.err, kNoModule) << good;
    }
}

TEST(Cli, RingDescribesItsLayoutWakeUpsAndPolling) {
    CliRun r = run({"--dump-transport", "ring"});
    EXPECT_EQ(r.code, 0);
    for (const char* line : {"\nmode=ring\n", "\npolling=1\n", "\nsyscalls_per_batch=1\n",
                             "\nallocations_per_request=0\n",
                             "\nlayout=", "\nwake_up=", "\ndata_path=", "\nqueue_memory="}) {
        EXPECT_NE(r.out.find(line), std::string::npos) << line << " missing from\n" << r.out;
    }
    CliRun c = run({"--dump-transport", "copy"});
    EXPECT_NE(c.out.find("\npolling=0\n"), std::string::npos) << c.out;
}

TEST(Cli, MissingArgumentsAreUsageErrors) {
    EXPECT_EQ(run({}).code, 2);
    EXPECT_EQ(run({"add", "--transport", "copy"}).code, 2);
    EXPECT_EQ(run({"del"}).code, 2);
    EXPECT_EQ(run({"del", "notanumber"}).code, 2);
    EXPECT_EQ(run({"frobnicate"}).code, 2);
}

TEST(Cli, HelpEverywhere) {
    for (std::vector<std::string> args : {std::vector<std::string>{"--help"},
                                          {"add", "--help"},
                                          {"list", "--help"},
                                          {"del", "--help"}}) {
        CliRun r = run(args);
        EXPECT_EQ(r.code, 0) << args[0];
        EXPECT_NE(r.out.find("Usage:"), std::string::npos) << args[0];
    }
}

TEST(Cli, WithoutTheModuleEveryKernelCommandSaysSo) {
    if (module_loaded()) {
        GTEST_SKIP() << "/dev/userblk-control exists: userblk.ko is loaded";
    }
    for (std::vector<std::string> args :
         {std::vector<std::string>{"list"},
          {"del", "0"},
          {"add", "--transport", "copy", "--backend", "ram", "--size", "1G"},
          {"add", "--transport", "copy", "--backend", "null", "--size", "1G", "--daemon"}}) {
        CliRun r = run(args);
        EXPECT_EQ(r.code, 1) << args[0];
        EXPECT_EQ(r.err, kNoModule) << args.back();
        EXPECT_EQ(r.out, "") << args.back();
    }
}

// `userblk stats ID` finds the daemon serving ID in the runtime directory ($USERBLK_RUNTIME_DIR,
// else /run/userblk): <id>.pid names it, <id>.stats.json is what it writes on SIGUSR1.
class CliStats : public ::testing::Test {
protected:
    void SetUp() override {
        char dir[] = "/tmp/userblk-cli-runtime-XXXXXX";
        ASSERT_NE(::mkdtemp(dir), nullptr);
        dir_ = dir;
        ::setenv("USERBLK_RUNTIME_DIR", dir_.c_str(), 1);
    }
    void TearDown() override {
        ::unsetenv("USERBLK_RUNTIME_DIR");
        std::filesystem::remove_all(dir_);
    }
    void write(const std::string& name, const std::string& text) {
        std::ofstream(dir_ + "/" + name) << text;
    }
    /// Field 22 of /proc/PID/stat, as the CLI records it.
    static std::string start_time(pid_t pid) {
        std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
        std::istringstream rest(stat.substr(stat.rfind(')') + 2));
        std::string field;
        for (int i = 3; i <= 22; ++i) {
            rest >> field;
        }
        return field;
    }
    std::string dir_;
};

TEST_F(CliStats, NoDaemonForTheIdSaysSoAndExits1) {
    CliRun r = run({"stats", "7"});
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(
        r.err.rfind("userblk: no daemon serves device 7: " + dir_ + "/7.pid does not exist", 0), 0U)
        << r.err;
}

TEST_F(CliStats, ARecordOfAProcessThatIsGoneIsStale) {
    // This process, with another start time: a pid reused since the daemon died.
    write("3.pid", std::to_string(::getpid()) + " 1\n");
    CliRun r = run({"stats", "3"});
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err.rfind("userblk: stale " + dir_ + "/3.pid: the daemon of device 3 (pid " +
                              std::to_string(::getpid()) + ") is gone",
                          0),
              0U)
        << r.err;
    write("4.pid", "garbage\n");
    CliRun g = run({"stats", "4"});
    EXPECT_EQ(g.code, 1);
    EXPECT_NE(g.err.find("is not a userblk daemon's record"), std::string::npos) << g.err;
}

TEST_F(CliStats, AsksTheDaemonWithSigusr1AndPrintsWhatItWrote) {
    // A stand-in daemon: waits for SIGUSR1, then writes its document as the daemon does.
    const std::string doc = "{\"schema\": \"userblk-stats/1\", \"total\": {}}\n";
    const std::string stats = dir_ + "/5.stats.json";
    write("5.stats.json", "{\"old\": true}\n"); // an earlier answer must not be taken
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &usr1, &old), 0);
    pid_t child = ::fork();
    if (child == 0) {
        int sig = 0;
        if (::sigwait(&usr1, &sig) == 0) {
            std::ofstream(stats + ".tmp") << doc;
            std::rename((stats + ".tmp").c_str(), stats.c_str());
        }
        ::pause(); // until killed, like a daemon that goes on serving
        ::_exit(0);
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ASSERT_GT(child, 0);
    write("5.pid", std::to_string(child) + " " + start_time(child) + "\n");
    CliRun r = run({"stats", "5", "--timeout", "10"});
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, doc);
    EXPECT_EQ(r.err, "");
}

TEST_F(CliStats, ADaemonThatDoesNotAnswerTimesOut) {
    pid_t child = ::fork();
    if (child == 0) {
        ::signal(SIGUSR1, SIG_IGN);
        ::pause();
        ::_exit(0);
    }
    ASSERT_GT(child, 0);
    // The child must ignore SIGUSR1 before it is sent: wait until /proc says so.
    for (int i = 0; i < 500; ++i) {
        std::string status = slurp("/proc/" + std::to_string(child) + "/status");
        auto at = status.find("SigIgn:");
        if (at != std::string::npos &&
            (std::stoull(status.substr(at + 7), nullptr, 16) & (1ULL << (SIGUSR1 - 1))) != 0) {
            break;
        }
        ::usleep(10000);
    }
    write("6.pid", std::to_string(child) + " " + start_time(child) + "\n");
    CliRun r = run({"stats", "6", "--timeout", "0.3"});
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("wrote no statistics to " + dir_ + "/6.stats.json within 0.3 s"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(run({"stats"}).code, 2);
    EXPECT_EQ(run({"stats", "--help"}).code, 0);
}

} // namespace
