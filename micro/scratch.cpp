#include "scratch.h"

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <unistd.h>

namespace userblk::micro {

namespace {

ScratchDirs g_dirs;

bool writable_dir(const std::string& dir) {
    unique_fd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    return fd.valid();
}

/// Filesystems that are not on a block device: no "disk" numbers from them.
bool memory_or_network_fs(const std::string& type) {
    for (const char* t : {"tmpfs", "ramfs", "9p", "nfs", "fuse", "overlay", "proc", "sysfs"}) {
        if (type == t) {
            return true;
        }
    }
    return type.empty();
}

} // namespace

std::string fs_type(const std::string& path) {
    struct statfs st {};
    if (::statfs(path.c_str(), &st) != 0) {
        return {};
    }
    struct Name {
        unsigned long magic;
        const char* name;
    };
    static constexpr std::array names = {
        Name{TMPFS_MAGIC, "tmpfs"},
        Name{RAMFS_MAGIC, "ramfs"},
        Name{EXT4_SUPER_MAGIC, "ext4"},
        Name{XFS_SUPER_MAGIC, "xfs"},
        Name{BTRFS_SUPER_MAGIC, "btrfs"},
        Name{V9FS_MAGIC, "9p"},
        Name{NFS_SUPER_MAGIC, "nfs"},
        Name{FUSE_SUPER_MAGIC, "fuse"},
        Name{OVERLAYFS_SUPER_MAGIC, "overlay"},
        Name{F2FS_SUPER_MAGIC, "f2fs"},
    };
    const auto magic = static_cast<unsigned long>(st.f_type);
    for (const Name& n : names) {
        if (n.magic == magic) {
            return n.name;
        }
    }
    char hex[32];
    std::snprintf(hex, sizeof(hex), "0x%lx", magic);
    return hex;
}

ScratchDirs find_scratch_dirs(const std::string& tmpfs, const std::string& disk) {
    ScratchDirs d;
    if (!tmpfs.empty()) {
        if (fs_type(tmpfs) != "tmpfs" || !writable_dir(tmpfs)) {
            d.tmpfs_why = tmpfs + " is not a writable tmpfs folder";
        } else {
            d.tmpfs = tmpfs;
        }
    } else {
        for (const char* dir : {"/dev/shm", "/tmp", "/run/shm"}) {
            if (fs_type(dir) == "tmpfs" && writable_dir(dir)) {
                d.tmpfs = dir;
                break;
            }
        }
        if (d.tmpfs.empty()) {
            d.tmpfs_why = "no writable tmpfs in /dev/shm or /tmp (give --micro_tmpfs_dir)";
        }
    }
    if (!disk.empty()) {
        std::string type = fs_type(disk);
        if (memory_or_network_fs(type) || !writable_dir(disk)) {
            d.disk_why = disk + " is not a writable folder on a disk filesystem (" +
                         (type.empty() ? "not found" : type) + ")";
        } else {
            d.disk = disk;
            d.disk_fs = type;
        }
    } else {
        for (const char* dir : {"/var/tmp", "/tmp"}) {
            std::string type = fs_type(dir);
            if (!memory_or_network_fs(type) && writable_dir(dir)) {
                d.disk = dir;
                d.disk_fs = type;
                break;
            }
        }
        if (d.disk.empty()) {
            d.disk_why = "no writable disk filesystem in /var/tmp or /tmp (give --micro_disk_dir)";
        }
    }
    return d;
}

const ScratchDirs& scratch_dirs() noexcept {
    return g_dirs;
}

void set_scratch_dirs(ScratchDirs dirs) {
    g_dirs = std::move(dirs);
}

unique_fd scratch_file(const std::string& dir, std::size_t len) {
    unique_fd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (!fd) {
        return fd;
    }
    Mapping buf = touched_buffer(len);
    if (buf.size() < len) {
        return unique_fd{};
    }
    std::size_t done = 0;
    while (done < len) {
        ssize_t n = ::pwrite(fd.get(), buf.data() + done, len - done, static_cast<off_t>(done));
        if (n <= 0) {
            return unique_fd{};
        }
        done += static_cast<std::size_t>(n);
    }
    return fd;
}

Mapping touched_buffer(std::size_t len) {
    auto m = Mapping::anonymous(len, false, "micro buffer");
    if (!m.ok()) {
        return Mapping{};
    }
    Mapping buf = std::move(m).value();
    std::memset(buf.data(), 0x5a, buf.size());
    return buf;
}

std::string errno_text(const std::string& what) {
    return what + ": " + std::strerror(errno);
}

void set_op_counters(benchmark::State& state, std::int64_t ops_per_iteration,
                     std::int64_t bytes_per_op) {
    state.counters["ops"] = static_cast<double>(ops_per_iteration);
    state.counters["bytes"] = static_cast<double>(bytes_per_op);
    if (bytes_per_op > 0) {
        state.SetBytesProcessed(state.iterations() * ops_per_iteration * bytes_per_op);
    }
    state.SetItemsProcessed(state.iterations() * ops_per_iteration);
}

} // namespace userblk::micro
