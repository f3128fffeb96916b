"""The harness's one logger: a line, flushed at once, prefixed with the part that speaks
("bench: ...", "vm: ...", "debug-kernel: ..."). Progress goes to stderr, except in the guest's
runner, whose stdout is the console the host follows."""

import sys


def logger(prefix, stdout=False, quiet=None):
    """A function msg -> None that prints "PREFIX: msg". stdout: print there instead of stderr
    (the stream is looked up at each call); quiet: a callable that, when it returns true,
    silences it."""
    def say(msg):
        if quiet is not None and quiet():
            return
        print(f"{prefix}: {msg}", file=sys.stdout if stdout else sys.stderr, flush=True)
    return say
