#!/usr/bin/python3
"""Self-tests of the VM runner: it must report what the guest did, including failures.

Each test boots the VM once (about 7 s under TCG).
"""

import os
import subprocess
import unittest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VM = os.path.join(TOP, "harness", "vm")


def vm_run(*argv, timeout=None):
    cmd = [VM, "run"]
    if timeout:
        cmd += ["--timeout", str(timeout)]
    return subprocess.run(cmd + ["--", *argv], capture_output=True, text=True)


class VmRunnerTest(unittest.TestCase):
    def test_output_and_exit_status_pass_through(self):
        # One boot for three checks: the guest's kernel and output reach us, and its exit status
        # (non-zero, so a failing command fails the run).
        r = vm_run("sh", "-c", "cat /proc/version; echo out; echo err >&2; exit 7")
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertRegex(r.stdout, r"^Linux version 6\.1\.")
        self.assertTrue(r.stdout.endswith("\nout\nerr\n"), r.stdout)
        self.assertIn("accel", r.stderr)

    def test_bug_in_kernel_log_fails_and_is_quoted(self):
        r = vm_run("sh", "-c", "echo 'BUG: injected by the runner self-test' > /dev/kmsg")
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertIn("BUG: injected by the runner self-test", r.stderr)

    def test_watchdog_kills_a_stuck_guest(self):
        r = vm_run("sleep", "600", timeout=20)
        self.assertEqual(r.returncode, 124, r.stderr)
        self.assertIn("watchdog", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
