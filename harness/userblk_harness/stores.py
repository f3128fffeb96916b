"""Where a device's data lives, for the backends whose store the harness provides.

`userblk add --backend SPEC` takes a backend name and its options (NAME[:KEY=VALUE,...]).
Most backends keep their data themselves (`null`, `ram`); two need something outside the
daemon, which the benchmark runner (one store per cell) and the kernel suite (one per
device) make and remove:

- `file`: a backing file, created empty in a scratch folder (on the guest's tmpfs); the
  backend extends it to the device size. Spec `file:path=FILE`.
- `forward`: an NBD server on 127.0.0.1, nbdkit's memory plugin as large as the device,
  started by `userblk nbdkit` (the project's one nbdkit launcher: a fresh port by socket
  activation, nbdkit dies with it, and it with us). Spec `forward:host=127.0.0.1,port=PORT`.
  nbdkit's pid is `server_pid`: the runner accounts its CPU apart (cpu_server_us_per_io).

A store outlives the daemons that serve it until close(): a new daemon on the same store
sees the data (`outlives_daemon`), except for backends whose data is the daemon's memory.
"""

import os
import select
import shutil
import socket
import subprocess
import tempfile
import time

NBDKIT = "nbdkit"
NBDKIT_READY_S = 30      # `userblk nbdkit` must say where it listens within this
NBDKIT_STOP_S = 10
TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_cli():
    """The userblk binary of USERBLK_BUILD (default: the checkout's build/)."""
    return os.path.join(os.environ.get("USERBLK_BUILD", os.path.join(TOP, "build")), "userblk")


class StoreError(Exception):
    """The store cannot be made; the message says why and what to do."""


class Store:
    """The data of a backend that keeps it itself: the spec is the backend's name."""
    outlives_daemon = False
    server_pid = None     # a process serving the data (forward: nbdkit), or None
    server_argv = None

    def __init__(self, backend, size, scratch, log_dir=None):
        self.backend = backend
        self.size = str(size)
        self.scratch = scratch
        self.log_dir = log_dir
        self.spec = backend

    def alive(self):
        """Whether its server (if any) still runs."""
        return True

    def log_tail(self, n=5):
        """The last lines its server printed."""
        return ""

    def describe(self):
        """What to record about the store (cell.json device.store)."""
        return {"backend": self.backend, "spec": self.spec, "server_pid": self.server_pid,
                "server_argv": self.server_argv}

    def close(self):
        """Removes the store (stops its server). Idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FileStore(Store):
    """An empty backing file in the scratch folder."""
    outlives_daemon = True

    def __init__(self, backend, size, scratch, log_dir=None):
        super().__init__(backend, size, scratch, log_dir)
        fd, self.path = tempfile.mkstemp(prefix="backing-", suffix=".img", dir=scratch)
        os.close(fd)
        self.spec = f"file:path={self.path}"

    def describe(self):
        return dict(super().describe(), path=self.path)

    def close(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def free_port(host="127.0.0.1"):
    """A TCP port on host that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ForwardStore(Store):
    """nbdkit's memory plugin as large as the device, on a fresh port of 127.0.0.1."""
    outlives_daemon = True
    host = "127.0.0.1"

    def __init__(self, backend, size, scratch, log_dir=None, cli=None):
        super().__init__(backend, size, scratch, log_dir)
        cli = cli or default_cli()
        if shutil.which(NBDKIT) is None:
            raise StoreError("nbdkit not found: the forward backend needs an NBD server "
                             "(Debian package nbdkit; make deps)")
        if not os.access(cli, os.X_OK):
            raise StoreError(f"{cli} not found: build userblk first (make build)")
        self.log_path = (os.path.join(log_dir, "server.log") if log_dir
                         else os.path.join(scratch, f"nbdkit-{os.getpid()}-{id(self)}.log"))
        self.server_argv = [cli, "nbdkit", "--", "memory", self.size]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(self.server_argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=log)
        # One line, "127.0.0.1:PORT PID", as soon as the port accepts connections.
        ready, _, _ = select.select([self.proc.stdout], [], [], NBDKIT_READY_S)
        line = self.proc.stdout.readline().decode(errors="replace").split() if ready else []
        self.proc.stdout.close()
        if len(line) != 2 or ":" not in line[0] or not line[1].isdigit():
            self.close()
            raise StoreError(f"{' '.join(self.server_argv)} did not start serving within "
                             f"{NBDKIT_READY_S} s: {self.log_tail()}")
        self.port = int(line[0].rsplit(":", 1)[1])
        self.server_pid = int(line[1])
        self.spec = f"forward:host={self.host},port={self.port}"

    def log_tail(self, n=5):
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [x.strip() for x in f if x.strip()]
        except OSError:
            lines = []
        return " | ".join(lines[-n:]) or "no output"

    def alive(self):
        return self.proc.poll() is None

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=NBDKIT_STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


KINDS = {"file": FileStore, "forward": ForwardStore}


def make(backend, size, scratch, log_dir=None, cli=None):
    """The store for a device of size (a string with K/M/G suffix, as `userblk add --size`)
    served by backend, with its files in scratch and its server's output in
    log_dir/server.log (default: a log in scratch). cli: the userblk binary that starts a
    server (default: USERBLK_BUILD's)."""
    if backend == "forward":
        return ForwardStore(backend, size, scratch, log_dir, cli)
    return KINDS.get(backend, Store)(backend, size, scratch, log_dir)
