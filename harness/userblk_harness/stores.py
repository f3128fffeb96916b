"""Where a device's data lives, for the backends whose store the harness provides.

`userblk add --backend SPEC` takes a backend name and its options (NAME[:KEY=VALUE,...]).
Most backends keep their data themselves (`null`, `ram`); two need something outside the
daemon, which the benchmark runner (one store per cell) and the kernel suite (one per
device) make and remove:

- `file`: a backing file, created empty in a scratch folder (on the guest's tmpfs); the
  backend extends it to the device size. Spec `file:path=FILE`.
- `file:direct=1`: the same opened O_DIRECT. The guest's tmpfs refuses O_DIRECT on 6.1, so
  the file lives on an ext4 file system made for it in an image in the scratch folder,
  mounted through a loop device. Spec `file:path=FILE,direct=1`.

A backend named with options (`file:direct=1`, `null:fill=none`) is a variant: its own rows
in the results, its options added to the store's spec. A backend that keeps its data itself
takes its options as they are (the daemon checks them); of the stores the harness makes,
only `file:direct=1` has a variant.
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
DIRECT_FS_SLACK = 64 << 20  # file:direct=1: the ext4 image's room beyond the device's bytes
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


class DirectFileStore(FileStore):
    """file:direct=1: an empty backing file on an ext4 file system of its own (an image in
    the scratch folder on a loop device), since tmpfs takes no O_DIRECT on Linux 6.1."""

    def __init__(self, backend, size, scratch, log_dir=None):
        Store.__init__(self, backend, size, scratch, log_dir)
        self.mnt = tempfile.mkdtemp(prefix="direct-", dir=scratch)
        self.image = self.mnt + ".ext4"
        # The device's size plus room for ext4's own blocks; sparse, so only written data
        # takes memory.
        with open(self.image, "wb") as f:
            f.truncate(parse_size(size) + DIRECT_FS_SLACK)
        # The loop driver is a module in Debian's kernel: mount -o loop fails with EPERM
        # until it is loaded.
        subprocess.run(["modprobe", "loop"], capture_output=True)
        for argv in (["mkfs.ext4", "-q", "-F", "-E", "nodiscard", self.image],
                     ["mount", "-o", "loop", self.image, self.mnt]):
            r = subprocess.run(argv, capture_output=True, text=True)
            if r.returncode != 0:
                self._undo()
                raise StoreError(f"file:direct=1: {' '.join(argv)} failed: "
                                 f"{(r.stderr or r.stdout).strip()}")
        self.mounted = True
        self.path = os.path.join(self.mnt, "backing.img")
        open(self.path, "wb").close()
        self.spec = f"file:path={self.path},direct=1"

    def _undo(self):
        shutil.rmtree(self.mnt, ignore_errors=True)
        try:
            os.unlink(self.image)
        except FileNotFoundError:
            pass

    def close(self):
        super().close()
        if getattr(self, "mounted", False):
            subprocess.run(["umount", self.mnt], capture_output=True)
            self.mounted = False
        self._undo()


def parse_size(text):
    """Bytes of a size as `userblk add --size` takes it: digits with an optional K/M/G/T."""
    text = str(text).strip().upper()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def split_backend(name):
    """"file:direct=1" -> ("file", {"direct": "1"}); "ram" -> ("ram", {})."""
    base, _, rest = name.partition(":")
    options = {}
    for o in filter(None, rest.split(",")):
        key, eq, value = o.partition("=")
        if not eq or not key or not value:
            raise StoreError(f"backend variant {name!r}: options are NAME:KEY=VALUE[,...], "
                             "e.g. file:direct=1")
        options[key] = value
    return base, options


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
    base, options = split_backend(backend)
    if base == "file" and options == {"direct": "1"}:
        return DirectFileStore(backend, size, scratch, log_dir)
    if options and base in KINDS:
        raise StoreError(f"backend variant {backend!r}: the harness makes no store for it "
                         "(variants it knows: file:direct=1)")
    if options:
        return Store(backend, size, scratch, log_dir)   # null:fill=none: the spec as it is
    if backend == "forward":
        return ForwardStore(backend, size, scratch, log_dir, cli)
    return KINDS.get(backend, Store)(backend, size, scratch, log_dir)
