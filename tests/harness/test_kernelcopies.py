"""userblk.ko's copy counters (sysfs userblk/*_copied_*_bytes): reading, deltas, per I/O."""

import os
import shutil
import tempfile
import unittest

import helpers  # noqa: F401

from userblk_harness import kernelcopies


class KernelCopiesTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root)

    def disk(self, name, **values):
        d = os.path.join(self.root, name, "userblk")
        os.makedirs(d, exist_ok=True)
        for key, file in kernelcopies.FILES.items():
            with open(os.path.join(d, file), "w") as f:
                f.write(f"{values.get(key, 0)}\n")

    def test_reads_every_counter(self):
        self.disk("userblk3", write_user=4096, read_kernel=8192)
        self.assertEqual(kernelcopies.read("userblk3", self.root),
                         {"write_user": 4096, "read_user": 0, "write_kernel": 0,
                          "read_kernel": 8192, "write_lent": 0, "lent_abandoned": 0})

    def test_a_disk_of_another_driver_has_none(self):
        os.makedirs(os.path.join(self.root, "ublkb0"))
        self.assertIsNone(kernelcopies.read("ublkb0", self.root))
        self.assertIsNone(kernelcopies.read("missing", self.root))

    def test_a_missing_or_broken_file_gives_none(self):
        self.disk("userblk1")
        os.unlink(os.path.join(self.root, "userblk1", "userblk", "read_copied_user_bytes"))
        self.assertIsNone(kernelcopies.read("userblk1", self.root))
        self.disk("userblk2")
        with open(os.path.join(self.root, "userblk2", "userblk", "write_copied_kernel_bytes"),
                  "w") as f:
            f.write("lots\n")
        self.assertIsNone(kernelcopies.read("userblk2", self.root))

    def test_per_io_is_the_share_of_the_data_the_daemon_saw(self):
        before = {"write_user": 100, "read_user": 0, "write_kernel": 0, "read_kernel": 0,
                  "write_lent": 0, "lent_abandoned": 0}
        after = {"write_user": 100, "read_user": 0, "write_kernel": 1 << 20,
                 "read_kernel": 1 << 20, "write_lent": 0, "lent_abandoned": 0}
        d = kernelcopies.delta(before, after)
        # 2 MiB moved in 64 KiB I/Os, every byte copied once into or out of kernel pages.
        got = kernelcopies.per_io(d, 2 << 20, 64 << 10)
        self.assertEqual(got, {"kernel_copy_user_bytes_per_io": 0.0,
                               "kernel_copy_kernel_bytes_per_io": 65536.0,
                               "kernel_lent_bytes_per_io": 0.0})

    def test_lent_writes_are_counted_apart_from_copies(self):
        before = dict.fromkeys(kernelcopies.FILES, 0)
        # 1 MiB written, every byte lent; 1 MiB read, copied once from the pipe's pages.
        after = dict(before, write_lent=1 << 20, read_kernel=1 << 20)
        got = kernelcopies.per_io(kernelcopies.delta(before, after), 2 << 20, 1 << 20)
        self.assertEqual(got, {"kernel_copy_user_bytes_per_io": 0.0,
                               "kernel_copy_kernel_bytes_per_io": 524288.0,
                               "kernel_lent_bytes_per_io": 524288.0})

    def test_unknown_without_both_reads_or_data(self):
        self.assertIsNone(kernelcopies.delta(None, {"write_user": 1}))
        empty = {"kernel_copy_user_bytes_per_io": None, "kernel_copy_kernel_bytes_per_io": None,
                 "kernel_lent_bytes_per_io": None}
        self.assertEqual(kernelcopies.per_io(None, 10, 4096), empty)
        d = dict.fromkeys(kernelcopies.FILES, 0)
        self.assertEqual(kernelcopies.per_io(d, 0, 4096), empty)


if __name__ == "__main__":
    unittest.main()
