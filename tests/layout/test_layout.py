"""The layout's rules (docs/layout.md), checked on the includes of every C++ file.

Rooms sit on floors; a file may include from its own room and from the rooms its room stands on,
never from a room beside or above it. A transport never includes a sibling transport's header.
"""

import os
import re
import subprocess
import unittest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
# Files the build writes, which no checkout holds: (the including file, the name).
GENERATED = {("cli/registry.cpp", "registry_entries.inc")}

# Room -> the rooms it may include from (besides itself). The uapi header (kmod/include) is
# open to every room.
BELOW = {
    "core": set(),
    "nbd": {"core"},
    "backends": {"core", "nbd"},
    "transports/kmod": {"core"},
    "transports/desc": {"core", "transports/kmod"},
    "transports/copy": {"core", "transports/kmod", "transports/desc"},
    "transports/ring": {"core", "transports/kmod"},
    "transports/pipe": {"core", "transports/kmod", "transports/desc"},
    "transports/splice": {"core", "transports/kmod", "transports/desc"},
    "baselines/ublk": {"core"},
    "baselines/nbd": {"core", "nbd"},
    "references": {"core", "nbd"},
    "cli": {"core", "nbd", "backends", "transports/kmod", "transports/desc", "transports/copy",
            "transports/ring", "transports/pipe", "transports/splice", "baselines/ublk",
            "baselines/nbd", "references"},
    "micro": {"core", "transports/kmod", "transports/desc", "transports/ring"},
}


def room_of(path):
    """The room of a file or of an include path: the longest key of BELOW it lies in."""
    best = None
    for room in BELOW:
        if path == room or path.startswith(room + "/"):
            if best is None or len(room) > len(best):
                best = room
    return best


def sources():
    out = subprocess.run(["git", "-C", TOP, "ls-files", "*.cpp", "*.h"], capture_output=True,
                         text=True, check=True).stdout.split()
    return [f for f in out if room_of(f) is not None]


def target(src, name):
    """What `#include "name"` in src names, as a path from the top (same folder first)."""
    local = os.path.normpath(os.path.join(os.path.dirname(src), name))
    if os.path.exists(os.path.join(TOP, local)):
        return local
    return os.path.normpath(name)


class LayoutTest(unittest.TestCase):
    def test_every_include_goes_to_the_same_room_or_below(self):
        bad = []
        files = sources()
        self.assertGreater(len(files), 50, "the C++ sources were not found")
        for src in files:
            room = room_of(src)
            with open(os.path.join(TOP, src)) as f:
                text = f.read()
            for name in INCLUDE.findall(text):
                path = target(src, name)
                if (path.startswith("kmod/include/") or name.startswith("uapi/")
                        or (src, name) in GENERATED):
                    continue
                if not os.path.exists(os.path.join(TOP, path)):
                    bad.append(f"{src}: #include \"{name}\" names no file of the tree")
                    continue
                to = room_of(path)
                if to != room and to not in BELOW[room]:
                    bad.append(f"{src} ({room}) includes {path} ({to})")
        self.assertEqual(bad, [], "\n" + "\n".join(bad))

    def test_every_room_exists(self):
        for room in BELOW:
            self.assertTrue(os.path.isdir(os.path.join(TOP, room)), room)

    def test_a_rule_that_is_broken_is_caught(self):
        # The check itself: a transport including its sibling is outside its rooms.
        self.assertNotIn(room_of("transports/ring/ring.h"), BELOW["transports/pipe"])
        self.assertEqual(room_of("transports/desc/queue_loop.h"), "transports/desc")


if __name__ == "__main__":
    unittest.main()
