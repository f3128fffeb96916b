"""Kernel memory deltas around a device (kmem) and a variant's own geometry."""

import os
import shutil
import tempfile
import unittest

import helpers  # noqa: F401

from userblk_harness import kmem, results, runner

MEMINFO = """MemTotal:        2000000 kB
MemFree:         1500000 kB
Buffers:           10000 kB
Cached:           200000 kB
AnonPages:         50000 kB
Slab:              40000 kB
"""
SLABINFO = """slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables
filp                 1000   1100    256   16    1 : tunables    0    0    0 : slabdata
kmalloc-1k            200    240   1024    8    2 : tunables    0    0    0 : slabdata
"""


class KmemTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_reads_meminfo_and_slabinfo(self):
        m = kmem.meminfo(self.write("meminfo", MEMINFO))
        self.assertEqual(m["MemTotal"], 2000000)
        self.assertEqual(kmem.kernel_kib(m), 2000000 - 1500000 - 10000 - 200000 - 50000)
        s = kmem.slabinfo(self.write("slabinfo", SLABINFO))
        self.assertEqual(s, {"filp": 1000 * 256, "kmalloc-1k": 200 * 1024})
        self.assertEqual(kmem.meminfo(os.path.join(self.dir, "none")), {})
        self.assertEqual(kmem.slabinfo(os.path.join(self.dir, "none")), {})

    def test_delta_is_what_grew(self):
        before = {"meminfo": kmem.meminfo(self.write("a", MEMINFO)),
                  "slabinfo": {"filp": 256000, "kmalloc-1k": 204800, "gone": 64}}
        after_text = MEMINFO.replace("1500000", "1490000").replace("40000", "46000")
        after = {"meminfo": kmem.meminfo(self.write("b", after_text)),
                 "slabinfo": {"filp": 512000, "kmalloc-1k": 204800, "new": 4096}}
        d = kmem.delta(before, after)
        self.assertEqual(d["kernel_kib"], 10000)
        self.assertEqual(d["slab_kib"], 6000)
        self.assertEqual(d["slab_caches_bytes"], {"filp": 256000, "new": 4096, "gone": -64})
        self.assertIsNone(kmem.delta(None, after))
        self.assertIsNone(kmem.delta({"meminfo": {}}, after))


class GeometryTest(unittest.TestCase):
    settings = {"size": "256M", "queues": 2, "depth": 128, "nofile": None}

    def argv(self, options):
        dev = {"transport": "pipe", "base": "pipe", "backend": "ram", "options": options}
        return runner.Device("userblk", dev, self.settings, "/tmp", "/tmp").argv

    def test_the_run_gives_the_geometry_unless_the_variant_does(self):
        plain = self.argv([])
        self.assertEqual(plain[plain.index("--queues") + 1], "2")
        self.assertEqual(plain[plain.index("--depth") + 1], "128")
        own = self.argv(["--queues", "4", "--depth", "256"])
        self.assertEqual(own.count("--queues"), 1)
        self.assertEqual(own.count("--depth"), 1)
        self.assertEqual(own[own.index("--queues") + 1], "4")
        self.assertEqual(own[own.index("--depth") + 1], "256")
        self.assertEqual(results.geometry({"options": ["--depth", "256"]}, self.settings,
                                          "depth"), 256)
        self.assertEqual(results.geometry({"options": ["--depth", "256"]}, self.settings,
                                          "queues"), 2)


if __name__ == "__main__":
    unittest.main()
