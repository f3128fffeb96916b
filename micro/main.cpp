// userblk_micro: Google Benchmark microbenchmarks of the primitives the transports lean on.
// Besides Google Benchmark's own flags (--benchmark_filter, --benchmark_min_time,
// --benchmark_out, ...) it takes the folders for scratch files and extra context lines, and
// records the machine in the JSON context: platform (host or vm), kernel, CPU model, hypervisor
// and accelerator. `make micro` (micro/micro-run) is the usual way to run it.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include <sys/utsname.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "scratch.h"

namespace {

using namespace userblk::micro;

void print_help() {
    std::printf(
        "userblk_micro: microbenchmarks of the primitives behind the userblk transports\n"
        "(memcpy, pipes, vmsplice/splice to files and sockets, wake-ups, io_uring, and the\n"
        "user-space halves of copy and ring). See docs/micro.md.\n\n"
        "userblk_micro [--micro_tmpfs_dir=DIR] [--micro_disk_dir=DIR]\n"
        "              [--micro_context=KEY=VALUE ...] [Google Benchmark flags]\n"
        "  --micro_tmpfs_dir=DIR     a tmpfs folder for scratch files (default: /dev/shm or /tmp)\n"
        "  --micro_disk_dir=DIR      a folder on a disk filesystem (default: /var/tmp or /tmp);\n"
        "                            the disk benchmarks are skipped, saying why, without one\n"
        "  --micro_context=KEY=VALUE an extra line of the JSON context (repeatable)\n"
        "Environment: USERBLK_PLATFORM (vm in the test VM: the platform recorded),\n"
        "USERBLK_ACCEL (the VM's accelerator, kvm or tcg, as the harness chose it).\n\n"
        "Google Benchmark's flags:\n");
    benchmark::PrintDefaultHelp();
}

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("model name", 0) == 0) {
            auto colon = line.find(':');
            if (colon != std::string::npos) {
                return line.substr(line.find_first_not_of(' ', colon + 1));
            }
        }
    }
    return "unknown";
}

/// The hypervisor this code runs under, from CPUID ("KVMKVMKVM", "TCGTCGTCGTCG", ...), or
/// "none" on bare metal.
std::string hypervisor() {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a = 0;
    unsigned b = 0;
    unsigned c = 0;
    unsigned d = 0;
    __cpuid(1, a, b, c, d);
    if ((c & (1U << 31)) == 0) {
        return "none";
    }
    __cpuid(0x40000000, a, b, c, d);
    char vendor[13] = {};
    std::memcpy(vendor, &b, 4);
    std::memcpy(vendor + 4, &c, 4);
    std::memcpy(vendor + 8, &d, 4);
    std::string v(vendor);
    return v.empty() ? "unknown" : v;
#else
    return "unknown";
#endif
}

/// How this machine's CPU is provided: USERBLK_ACCEL if the harness says, else from CPUID.
std::string accelerator(const std::string& hv) {
    if (const char* env = std::getenv("USERBLK_ACCEL"); env != nullptr && *env != '\0') {
        return env;
    }
    if (hv == "none") {
        return "none";
    }
    if (hv.rfind("KVMKVMKVM", 0) == 0) {
        return "kvm";
    }
    if (hv.rfind("TCG", 0) == 0) {
        return "tcg";
    }
    return hv;
}

bool take_flag(std::string_view arg, std::string_view name, std::string& value) {
    if (arg.size() > name.size() && arg.substr(0, name.size()) == name && arg[name.size()] == '=') {
        value = std::string(arg.substr(name.size() + 1));
        return true;
    }
    return false;
}

} // namespace

int main(int argc, char** argv) {
    std::string tmpfs_dir;
    std::string disk_dir;
    std::vector<std::pair<std::string, std::string>> context;
    std::vector<char*> rest;
    for (int i = 0; i < argc; ++i) {
        std::string value;
        if (i > 0 && take_flag(argv[i], "--micro_tmpfs_dir", tmpfs_dir)) {
            continue;
        }
        if (i > 0 && take_flag(argv[i], "--micro_disk_dir", disk_dir)) {
            continue;
        }
        if (i > 0 && take_flag(argv[i], "--micro_context", value)) {
            auto eq = value.find('=');
            if (eq == std::string::npos || eq == 0) {
                std::fprintf(stderr, "userblk_micro: --micro_context takes KEY=VALUE, not '%s'\n",
                             value.c_str());
                return 2;
            }
            context.emplace_back(value.substr(0, eq), value.substr(eq + 1));
            continue;
        }
        rest.push_back(argv[i]);
    }
    int rest_argc = static_cast<int>(rest.size());
    rest.push_back(nullptr);
    benchmark::Initialize(&rest_argc, rest.data(), print_help);
    if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) {
        std::fprintf(stderr, "userblk_micro: see --help for the flags\n");
        return 2;
    }

    ScratchDirs dirs = find_scratch_dirs(tmpfs_dir, disk_dir);
    const char* platform = std::getenv("USERBLK_PLATFORM");
    utsname u{};
    ::uname(&u);
    const std::string hv = hypervisor();
    benchmark::AddCustomContext("platform",
                                platform != nullptr && *platform != '\0' ? platform : "host");
    benchmark::AddCustomContext("kernel", std::string(u.release) + " " + u.version);
    benchmark::AddCustomContext("machine", u.machine);
    benchmark::AddCustomContext("cpu_model", cpu_model());
    benchmark::AddCustomContext("hypervisor", hv);
    benchmark::AddCustomContext("accelerator", accelerator(hv));
    benchmark::AddCustomContext("tmpfs_dir", dirs.tmpfs.empty() ? dirs.tmpfs_why : dirs.tmpfs);
    benchmark::AddCustomContext("disk_dir", dirs.disk.empty() ? dirs.disk_why : dirs.disk);
    benchmark::AddCustomContext("disk_fs", dirs.disk_fs);
    benchmark::AddCustomContext("counters", "ops = operations per iteration, bytes = bytes per "
                                            "operation; ns per op = real_time / ops");
    for (const auto& [k, v] : context) {
        benchmark::AddCustomContext(k, v);
    }
    set_scratch_dirs(std::move(dirs));

    register_memcpy();
    register_splice();
    register_wakeup();
    register_uring();
    register_codec();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
