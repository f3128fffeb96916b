"""Scanning kernel logs for the signs of a kernel bug."""

import re

# What a kernel test must never leave in the log. "blocked for more than" is
# how the hung-task detector words a hung task; stalls and lockups have their
# own words ("BUG: soft lockup" is already caught by "BUG:").
BAD_PATTERNS = (
    "WARNING:",
    "BUG:",
    "Oops",
    "hung task",
    "blocked for more than",
    "KASAN",
    "Kernel panic",
    "general protection fault",
    "detected stalls",
    "self-detected stall",
    "UBSAN:",
    "kmemleak:",
)

_BAD_RE = re.compile("|".join(re.escape(p) for p in BAD_PATTERNS))

# Lines that match a pattern above but are no problem (the debug kernel's boot).
BENIGN_PATTERNS = (
    "kmemleak: Kernel memory leak detector initialized",
    "kmemleak: Automatic memory scanning thread started",
)
_BENIGN_RE = re.compile("|".join(re.escape(p) for p in BENIGN_PATTERNS))


def bad_lines(text, after_marker=None):
    """Return the lines of a kernel log that show a kernel problem.

    With after_marker, only lines after the last line containing it count.
    """
    lines = text.splitlines()
    if after_marker is not None:
        for i in range(len(lines) - 1, -1, -1):
            if after_marker in lines[i]:
                lines = lines[i + 1:]
                break
    return [line.rstrip("\r") for line in lines
            if _BAD_RE.search(line) and not _BENIGN_RE.search(line)]
