"""vm._run_streaming's two deadlines and vm._boot's second boot after a hung one, with a
stand-in for qemu (no VM is booted)."""

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
        status = vm._run_streaming(["sleep", "60"], self.opts(60, 1), io.StringIO(), self.out, 1)
        self.assertEqual(status, vm.EXIT_BOOT_HUNG)
        self.assertLess(time.monotonic() - t, 10)

    def test_a_booted_guest_runs_until_the_watchdog(self):
        with open(os.path.join(self.out, "guest-info"), "w") as f:
            f.write("release=test\n")
        t = time.monotonic()
        status = vm._run_streaming(["sleep", "60"], self.opts(3, 1), io.StringIO(), self.out, 1)
        self.assertEqual(status, vm.EXIT_WATCHDOG)
        self.assertGreaterEqual(time.monotonic() - t, 2.5, "killed by the boot deadline")

    def test_a_guest_that_ends_by_itself_has_no_status_from_the_watchdog(self):
        status = vm._run_streaming(["sh", "-c", "echo hello"], self.opts(30, 10),
                                   io.StringIO(), self.out, 10)
        self.assertIsNone(status)

    def qemu(self):
        """A stand-in whose first boot hangs and whose second boots and ends: each run counts
        itself in out/boots and writes a console.log of its own."""
        return ["sh", "-c", f"cd {self.out} && echo x >> boots && echo boot$(wc -l < boots) "
                            "> console.log && if [ $(wc -l < boots) -ge 2 ]; then "
                            "echo release=test > guest-info; else sleep 60; fi"]

    def test_a_hung_boot_is_booted_again_and_its_log_kept(self):
        status, attempts = vm._boot(self.qemu(), self.opts(60, 1), io.StringIO(), self.out, 1)
        self.assertIsNone(status)
        self.assertEqual(attempts, 2)
        with open(os.path.join(self.out, "console-hung-boot-1.log")) as f:
            self.assertEqual(f.read().strip(), "boot1")
        with open(os.path.join(self.out, "console.log")) as f:
            self.assertEqual(f.read().strip(), "boot2")

    def test_a_boot_that_hangs_every_time_is_the_watchdog(self):
        t = time.monotonic()
        status, attempts = vm._boot(["sleep", "60"], self.opts(60, 1), io.StringIO(), self.out,
                                    1)
        self.assertEqual((status, attempts), (vm.EXIT_WATCHDOG, vm.BOOT_ATTEMPTS))
        self.assertLess(time.monotonic() - t, 10 * vm.BOOT_ATTEMPTS)

    def test_the_deadline_follows_the_kernel_unless_asked(self):
        class K:
            release = "6.1.0-57-amd64"
        k = K()
        self.assertEqual(vm.boot_timeout_for(self.opts(60, None), k), vm.STOCK_BOOT_TIMEOUT_S)
        k.release = "6.1.192-userblk-debug"
        self.assertEqual(vm.boot_timeout_for(self.opts(60, None), k), vm.BOOT_TIMEOUT_S)
        self.assertEqual(vm.boot_timeout_for(self.opts(60, 7), k), 7)


if __name__ == "__main__":
    unittest.main()
