"""vm._run_streaming's two deadlines, with a stand-in for qemu (no VM is booted)."""

import io
import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "harness"))
from userblk_harness import vm  # noqa: E402


class WatchdogTest(unittest.TestCase):
    def setUp(self):
        self.out = tempfile.mkdtemp()

    def opts(self, timeout, boot_timeout):
        return vm.VmOptions(timeout=timeout, boot_timeout=boot_timeout, modules=[], quiet=True)

    def test_a_guest_that_never_boots_is_killed_at_the_boot_deadline(self):
        t = time.monotonic()
        status = vm._run_streaming(["sleep", "60"], self.opts(60, 1), io.StringIO(), self.out)
        self.assertEqual(status, vm.EXIT_WATCHDOG)
        self.assertLess(time.monotonic() - t, 10)

    def test_a_booted_guest_runs_until_the_watchdog(self):
        with open(os.path.join(self.out, "guest-info"), "w") as f:
            f.write("release=test\n")
        t = time.monotonic()
        status = vm._run_streaming(["sleep", "60"], self.opts(3, 1), io.StringIO(), self.out)
        self.assertEqual(status, vm.EXIT_WATCHDOG)
        self.assertGreaterEqual(time.monotonic() - t, 2.5, "killed by the boot deadline")

    def test_a_guest_that_ends_by_itself_has_no_status_from_the_watchdog(self):
        status = vm._run_streaming(["sh", "-c", "echo hello"], self.opts(30, 10),
                                   io.StringIO(), self.out)
        self.assertIsNone(status)


if __name__ == "__main__":
    unittest.main()
