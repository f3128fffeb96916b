// The file backend on a temporary file: both data paths, what it does to the file, and the paths
// it refuses.
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend_fixtures.h"
#include "core/io.h"
#include "core/unique_fd.h"
#include "test_util.h"

namespace {

using namespace userblk;
using test::all_zero;
using test::BackendWithQueue;
using test::pattern;

constexpr std::uint64_t kMiB = 1 << 20;

Result<std::unique_ptr<Backend>> make_file(const std::string& path, std::uint64_t size) {
    return find_backend("file")->make(BackendConfig{size, 512, 1, 0, {{"path", path}}});
}

/// The file's bytes at [off, off+len), read directly.
std::vector<std::byte> file_bytes(const std::string& path, std::uint64_t off, std::size_t len) {
    std::vector<std::byte> out(len);
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    ssize_t n = ::pread(fd.get(), out.data(), len, static_cast<off_t>(off));
    out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return out;
}

std::uint64_t file_size(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

/// Allocated bytes of the file (st_blocks is in 512-byte units).
std::uint64_t file_allocated(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_blocks) * 512 : 0;
}

struct FileFixture {
    test::TempDir dir;
    std::string path = dir.file("disk.img");
    BackendWithQueue b;
    explicit FileFixture(std::uint64_t size = 8 * kMiB, std::uint32_t max_io = 64 * 1024)
        : b("file", size, max_io, {{"path", dir.file("disk.img")}}) {}
};

TEST(FileBackend, CreatesASparseFileOfTheDeviceSize) {
    FileFixture f(64 * kMiB);
    ASSERT_TRUE(f.b.queue);
    EXPECT_EQ(file_size(f.path), 64 * kMiB);
    EXPECT_LT(file_allocated(f.path), kMiB) << "the new range should be a hole";
    EXPECT_TRUE(f.b.backend->native_pipe());
}

TEST(FileBackend, ExtendsASmallerFileAndKeepsItsData) {
    test::TempDir dir;
    std::string path = dir.file("small.img");
    auto head = pattern(4096, 1);
    {
        unique_fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
        ASSERT_TRUE(test::write_all(fd.get(), head));
    }
    auto made = make_file(path, 4 * kMiB);
    ASSERT_TRUE(made.ok()) << made.status().message();
    EXPECT_EQ(file_size(path), 4 * kMiB);
    EXPECT_EQ(file_bytes(path, 0, 4096), head);
    EXPECT_TRUE(all_zero(file_bytes(path, 4096, 65536)));
}

TEST(FileBackend, NeverShrinksALargerFile) {
    test::TempDir dir;
    std::string path = dir.file("big.img");
    {
        unique_fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
        ASSERT_EQ(::ftruncate(fd.get(), 16 * kMiB), 0);
    }
    auto made = make_file(path, 4 * kMiB);
    ASSERT_TRUE(made.ok()) << made.status().message();
    EXPECT_EQ(made.value()->size(), 4 * kMiB);
    EXPECT_EQ(file_size(path), 16 * kMiB);
}

TEST(FileBackend, MemoryPathRoundTripLandsInTheFile) {
    FileFixture f;
    ASSERT_TRUE(f.b.queue);
    auto a = pattern(65536, 2);
    auto c = pattern(1536, 3);
    ASSERT_EQ(f.b.backend->write(*f.b.queue, 3 * kMiB, a, 0), 0);
    ASSERT_EQ(f.b.backend->write(*f.b.queue, 3 * kMiB + 512, c, USERBLK_IO_F_FUA), 0);
    auto want = a;
    std::memcpy(want.data() + 512, c.data(), c.size());
    std::vector<std::byte> back(a.size());
    ASSERT_EQ(f.b.backend->read(*f.b.queue, 3 * kMiB, back), 0);
    EXPECT_EQ(back, want);
    EXPECT_EQ(file_bytes(f.path, 3 * kMiB, want.size()), want);
    // The last block of the device.
    ASSERT_EQ(
        f.b.backend->write(*f.b.queue, 8 * kMiB - 512, std::span<const std::byte>(c).first(512), 0),
        0);
    EXPECT_EQ(f.b.backend->flush(*f.b.queue), 0);
}

TEST(FileBackend, PipePathRoundTripNeverCopiesThroughTheDaemon) {
    FileFixture f;
    ASSERT_TRUE(f.b.queue);
    auto data = pattern(32768, 4);
    test::Pipe p;
    ASSERT_TRUE(test::write_all(p.w.get(), data));
    ASSERT_EQ(f.b.backend->write_from_pipe(*f.b.queue, p.r.get(), kMiB + 4096, 32768, 0), 0);
    EXPECT_EQ(file_bytes(f.path, kMiB + 4096, data.size()), data);
    ASSERT_EQ(f.b.backend->read_to_pipe(*f.b.queue, p.w.get(), kMiB + 4096, 32768), 0);
    EXPECT_EQ(test::read_n(p.r.get(), data.size()), data);
    // And across paths: memory write, pipe read; pipe write (FUA), memory read.
    auto more = pattern(4096, 5);
    ASSERT_EQ(f.b.backend->write(*f.b.queue, 0, more, 0), 0);
    ASSERT_EQ(f.b.backend->read_to_pipe(*f.b.queue, p.w.get(), 0, 4096), 0);
    EXPECT_EQ(test::read_n(p.r.get(), 4096), more);
    ASSERT_TRUE(test::write_all(p.w.get(), data));
    ASSERT_EQ(
        f.b.backend->write_from_pipe(*f.b.queue, p.r.get(), 2 * kMiB, 32768, USERBLK_IO_F_FUA), 0);
    std::vector<std::byte> back(data.size());
    ASSERT_EQ(f.b.backend->read(*f.b.queue, 2 * kMiB, back), 0);
    EXPECT_EQ(back, data);

    StatsSnapshot s = f.b.stats.snapshot();
    EXPECT_EQ(s.adapter_copied_bytes, 0U);
    EXPECT_EQ(s.user_data_bytes, 0U);
}

TEST(FileBackend, PipePathWaitsOnANonBlockingPipe) {
    constexpr std::uint32_t kLen = 1 << 20; // 16 times a pipe's default capacity
    FileFixture f(8 * kMiB, 4096);          // an adapter buffer this small could not do it
    ASSERT_TRUE(f.b.queue);
    auto data = pattern(kLen, 6);
    test::Pipe p(O_NONBLOCK);
    std::jthread writer([&] {
        int flags = ::fcntl(p.w.get(), F_GETFL);
        ::fcntl(p.w.get(), F_SETFL, flags & ~O_NONBLOCK);
        test::write_all(p.w.get(), data);
    });
    ASSERT_EQ(f.b.backend->write_from_pipe(*f.b.queue, p.r.get(), 0, kLen, 0), 0);
    writer.join();
    std::vector<std::byte> got;
    std::jthread reader([&] {
        int flags = ::fcntl(p.r.get(), F_GETFL);
        ::fcntl(p.r.get(), F_SETFL, flags & ~O_NONBLOCK);
        got = test::read_n(p.r.get(), kLen);
    });
    ASSERT_EQ(f.b.backend->read_to_pipe(*f.b.queue, p.w.get(), 0, kLen), 0);
    reader.join();
    EXPECT_EQ(got, data);
    EXPECT_EQ(f.b.stats.adapter_copied_bytes.get(), 0U);
}

TEST(FileBackend, ShortPipeIsAnIoError) {
    FileFixture f;
    ASSERT_TRUE(f.b.queue);
    test::Pipe p;
    auto data = pattern(1000, 7);
    ASSERT_TRUE(test::write_all(p.w.get(), data));
    p.w.reset(); // end of file after 1000 bytes
    EXPECT_EQ(f.b.backend->write_from_pipe(*f.b.queue, p.r.get(), 0, 4096, 0), -EIO);
}

TEST(FileBackend, PipePathChecksTheRange) {
    FileFixture f;
    ASSERT_TRUE(f.b.queue);
    test::Pipe p;
    EXPECT_EQ(f.b.backend->read_to_pipe(*f.b.queue, p.w.get(), 8 * kMiB - 512, 1024), -EINVAL);
    EXPECT_EQ(f.b.backend->write_from_pipe(*f.b.queue, p.r.get(), 8 * kMiB, 512, 0), -EINVAL);
    EXPECT_EQ(f.b.backend->read_to_pipe(*f.b.queue, p.w.get(), 8 * kMiB, 0), 0);
}

/// Fills [0, 256K) with a pattern, zeroes [off, off+len) with op, and checks exactly that range
/// reads as zero, through the backend and in the file.
void check_zero_range(bool discard, std::uint64_t off, std::uint64_t len) {
    FileFixture f;
    ASSERT_TRUE(f.b.queue);
    auto data = pattern(256 * 1024, 9);
    ASSERT_EQ(f.b.backend->write(*f.b.queue, 0, data, 0), 0);
    ASSERT_EQ(f.b.backend->flush(*f.b.queue), 0);
    int r = discard ? f.b.backend->discard(*f.b.queue, off, len)
                    : f.b.backend->write_zeroes(*f.b.queue, off, len);
    if (r == -EOPNOTSUPP && discard) {
        GTEST_SKIP() << "the file system under " << f.dir.path() << " cannot punch holes";
    }
    ASSERT_EQ(r, 0);
    std::vector<std::byte> back(data.size());
    ASSERT_EQ(f.b.backend->read(*f.b.queue, 0, back), 0);
    for (std::size_t i = 0; i < back.size(); ++i) {
        std::byte want = (i >= off && i < off + len) ? std::byte{0} : data[i];
        ASSERT_EQ(back[i], want) << "byte " << i << " after zeroing [" << off << ", " << off + len
                                 << ")";
    }
    EXPECT_EQ(file_bytes(f.path, off, len), std::vector<std::byte>(len));
}

TEST(FileBackend, DiscardZeroesAndFreesTheRange) {
    check_zero_range(true, 65536, 131072);
}
TEST(FileBackend, DiscardOfPartialBlocks) {
    check_zero_range(true, 512, 3 * 4096 + 1024);
}
TEST(FileBackend, WriteZeroesZeroesTheRange) {
    check_zero_range(false, 1536, 100000);
}

TEST(FileBackend, DiscardReturnsSpace) {
    FileFixture f;
    ASSERT_TRUE(f.b.queue);
    auto data = pattern(kMiB, 10);
    ASSERT_EQ(f.b.backend->write(*f.b.queue, 0, data, 0), 0);
    ASSERT_EQ(f.b.backend->flush(*f.b.queue), 0);
    std::uint64_t before = file_allocated(f.path);
    int r = f.b.backend->discard(*f.b.queue, 0, kMiB);
    if (r == -EOPNOTSUPP) {
        GTEST_SKIP() << "the file system under " << f.dir.path() << " cannot punch holes";
    }
    ASSERT_EQ(r, 0);
    EXPECT_LT(file_allocated(f.path) + kMiB / 2, before);
    EXPECT_EQ(file_size(f.path), 8 * kMiB) << "KEEP_SIZE";
}

TEST(FileBackend, ServesACacheAndDiscardWhereTheFileSystemPunchesHoles) {
    FileFixture f;
    ASSERT_TRUE(f.b.queue);
    BackendServes s = f.b.backend->serves();
    EXPECT_TRUE(s.write);
    EXPECT_TRUE(s.cache) << "the page cache is volatile: flush and FUA are fdatasync()";
    EXPECT_TRUE(s.write_zeroes);
    // The probe past the end of the file agrees with a discard inside it.
    int r = f.b.backend->discard(*f.b.queue, 0, 4096);
    EXPECT_EQ(s.discard, r != -EOPNOTSUPP) << "discard() gave " << r;
    EXPECT_EQ(file_size(f.path), 8 * kMiB) << "the probe changed the file's size";
}

TEST(FileBackend, ProbeLeavesALargerFilesTailAlone) {
    test::TempDir dir;
    std::string path = dir.file("disk.img");
    auto data = pattern(8192, 14);
    {
        unique_fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
        ASSERT_TRUE(fd.valid());
        ASSERT_EQ(::pwrite(fd.get(), data.data(), data.size(), 2 * kMiB),
                  static_cast<ssize_t>(data.size()));
    }
    auto made = make_file(path, kMiB); // the file is larger than the device
    ASSERT_TRUE(made.ok()) << made.status().message();
    EXPECT_EQ(file_bytes(path, 2 * kMiB, data.size()), data);
    EXPECT_EQ(file_size(path), 2 * kMiB + data.size());
}

TEST(FileBackend, ZeroOpsCheckTheRange) {
    FileFixture f;
    ASSERT_TRUE(f.b.queue);
    EXPECT_EQ(f.b.backend->discard(*f.b.queue, 8 * kMiB - 512, 1024), -EINVAL);
    EXPECT_EQ(f.b.backend->write_zeroes(*f.b.queue, UINT64_MAX, 2), -EINVAL);
    EXPECT_EQ(f.b.backend->discard(*f.b.queue, 8 * kMiB, 0), 0);
}

TEST(FileBackend, ConcurrentQueuesShareTheFile) {
    test::TempDir dir;
    constexpr unsigned kQueues = 3;
    auto made = find_backend("file")->make(
        BackendConfig{kQueues * kMiB, 512, kQueues, 0, {{"path", dir.file("q.img")}}});
    ASSERT_TRUE(made.ok()) << made.status().message();
    std::unique_ptr<Backend> file = std::move(made).value();
    DeviceStats stats(kQueues);
    std::vector<BackendQueue> queues;
    for (unsigned i = 0; i < kQueues; ++i) {
        auto q = BackendQueue::open(*file, i, 4096, stats.queue(i));
        ASSERT_TRUE(q.ok());
        queues.push_back(std::move(q).value());
    }
    std::atomic<unsigned> failures{0};
    {
        std::vector<std::jthread> threads;
        for (unsigned i = 0; i < kQueues; ++i) {
            threads.emplace_back([&, i] {
                test::Pipe p;
                for (unsigned round = 0; round < 64; ++round) {
                    std::uint64_t off = i * kMiB + round * std::uint64_t{8192};
                    auto data = pattern(8192, i * 100 + round);
                    bool ok = test::write_all(p.w.get(), data) &&
                              file->write_from_pipe(queues[i], p.r.get(), off, 8192, 0) == 0 &&
                              file->read_to_pipe(queues[i], p.w.get(), off, 8192) == 0 &&
                              test::read_n(p.r.get(), 8192) == data;
                    if (!ok) {
                        failures.fetch_add(1);
                    }
                }
            });
        }
    }
    EXPECT_EQ(failures.load(), 0U);
}

// --- what it refuses ----------------------------------------------------------------------------

TEST(FileBackend, PathIsRequired) {
    auto made = find_backend("file")->make(BackendConfig{kMiB, 512, 1, 0, {}});
    ASSERT_FALSE(made.ok());
    EXPECT_EQ(made.status().message(),
              "file: no path: Invalid argument (give the backing file as --backend "
              "file:path=FILE)");
    auto empty = make_file("", kMiB);
    ASSERT_FALSE(empty.ok());
    EXPECT_EQ(empty.status().message(), made.status().message());
}

TEST(FileBackend, PathMustBeAbsolute) {
    auto made = make_file("disk.img", kMiB);
    ASSERT_FALSE(made.ok());
    EXPECT_EQ(made.status().message(), "file: path= must be absolute: Invalid argument (got "
                                       "'disk.img'; the daemon runs in /)");
    EXPECT_FALSE(std::filesystem::exists("disk.img"));
}

TEST(FileBackend, RefusesADirectory) {
    test::TempDir dir;
    auto made = make_file(dir.path(), kMiB);
    ASSERT_FALSE(made.ok());
    EXPECT_EQ(made.status().error_number(), EISDIR);
    EXPECT_EQ(made.status().message(), "file: cannot use " + dir.path() +
                                           ": Is a directory (path= must name a regular file)");
}

TEST(FileBackend, RefusesACharacterDevice) {
    auto made = make_file("/dev/null", kMiB);
    ASSERT_FALSE(made.ok());
    EXPECT_EQ(made.status().message(), "file: cannot use /dev/null: Invalid argument (it is a "
                                       "character device; path= must name a regular file)");
}

TEST(FileBackend, RefusesABlockDevice) {
    std::string block;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/dev", ec)) {
        if (e.is_block_file(ec)) {
            block = e.path().string();
            break;
        }
    }
    if (block.empty()) {
        GTEST_SKIP() << "no block device in /dev";
    }
    auto made = make_file(block, kMiB);
    ASSERT_FALSE(made.ok());
    EXPECT_EQ(made.status().message(), "file: cannot use " + block +
                                           ": Invalid argument (it is a block device; path= must "
                                           "name a regular file)");
}

TEST(FileBackend, MissingDirectoryIsAnOpenError) {
    test::TempDir dir;
    std::string path = dir.file("no/such/disk.img");
    auto made = make_file(path, kMiB);
    ASSERT_FALSE(made.ok());
    EXPECT_EQ(made.status().message(), "file: cannot open " + path + ": No such file or directory");
}

} // namespace

namespace {

// direct=1 (O_DIRECT): both paths round-trip, an unaligned buffer (copy's inline data) is
// bounced, and the bytes are on the file without the page cache (read back with O_DIRECT).
TEST(FileBackendDirect, BothPathsRoundTripAndUnalignedBuffersAreBounced) {
    test::TempDir dir;
    const std::string path = dir.file("direct.img");
    {
        auto probe = find_backend("file")->make(
            BackendConfig{kMiB, 512, 1, 0, {{"path", dir.file("probe.img")}, {"direct", "1"}}});
        if (!probe.ok()) {
            GTEST_SKIP() << "no direct I/O where the test's temporary files live: "
                         << probe.status().message();
        }
    }
    BackendWithQueue b("file", 8 * kMiB, 64 * 1024, {{"path", path}, {"direct", "1"}});
    ASSERT_TRUE(b.queue);
    auto data = pattern(65536, 7);
    ASSERT_EQ(b.backend->write(*b.queue, kMiB, data, 0), 0);
    // An unaligned buffer: 24 bytes into a larger one, as copy's data after its descriptor.
    std::vector<std::byte> odd(4096 + 24);
    auto small = pattern(4096, 8);
    std::memcpy(odd.data() + 24, small.data(), 4096);
    ASSERT_EQ(b.backend->write(*b.queue, 2 * kMiB, std::span<const std::byte>(odd).subspan(24), 0),
              0);
    std::fill(odd.begin(), odd.end(), std::byte{0});
    ASSERT_EQ(b.backend->read(*b.queue, 2 * kMiB, std::span<std::byte>(odd).subspan(24)), 0);
    EXPECT_EQ(std::vector<std::byte>(odd.begin() + 24, odd.end()), small);
    test::Pipe p;
    ASSERT_TRUE(test::write_all(p.w.get(), data));
    ASSERT_EQ(b.backend->write_from_pipe(*b.queue, p.r.get(), 3 * kMiB, 65536, USERBLK_IO_F_FUA),
              0);
    ASSERT_EQ(b.backend->read_to_pipe(*b.queue, p.w.get(), kMiB, 65536), 0);
    EXPECT_EQ(test::read_n(p.r.get(), data.size()), data);
    EXPECT_EQ(file_bytes(path, 3 * kMiB, data.size()), data);
    EXPECT_EQ(b.stats.snapshot().adapter_copied_bytes, 0U);
}

TEST(FileBackendDirect, AFileSystemWithoutDirectIoIsRefusedWithTheReason) {
    if (!std::filesystem::is_directory("/dev/shm")) {
        GTEST_SKIP() << "no /dev/shm (tmpfs) here";
    }
    std::string shm = "/dev/shm/userblk-test-XXXXXX";
    ASSERT_NE(::mkdtemp(shm.data()), nullptr);
    auto made = find_backend("file")->make(
        BackendConfig{kMiB, 512, 1, 0, {{"path", shm + "/x.img"}, {"direct", "1"}}});
    std::error_code ec;
    std::filesystem::remove_all(shm, ec);
    if (made.ok()) {
        GTEST_SKIP() << "this kernel's tmpfs takes O_DIRECT (Linux 6.6 and later; 6.1's refuses)";
    }
    EXPECT_NE(made.status().message().find("does not take direct I/O"), std::string::npos)
        << made.status().message();
}

TEST(FileBackendDirect, DirectTakesOnlyZeroOrOne) {
    test::TempDir dir;
    auto made = find_backend("file")->make(
        BackendConfig{kMiB, 512, 1, 0, {{"path", dir.file("x.img")}, {"direct", "2"}}});
    ASSERT_FALSE(made.ok());
    EXPECT_NE(made.status().message().find("direct"), std::string::npos) << made.status().message();
}

} // namespace
