"""The vm platform: qemu boots the Debian kernel with the host root shared read-only.

One boot runs one command (or an interactive shell). The guest's ttyS0 carries
the command's output to our stdout; ttyS1 is the kernel console, written to a
file, so the whole kernel log survives even a guest that hangs or panics.
"""

import json
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

from . import debugkernel, dmesg, initramfs
from .kernel import find_vm_kernel
from .say import logger

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QEMU = "qemu-system-x86_64"

# Exit statuses of a run besides the command's own.
EXIT_KERNEL_PROBLEM = 1    # the command succeeded but the kernel log shows a bug
EXIT_WATCHDOG = 124        # the guest ran past the watchdog and was killed
EXIT_NO_STATUS = 125       # the guest died before reporting a status
EXIT_BOOT_HUNG = -124      # internal: _run_streaming's hung boot (reported as EXIT_WATCHDOG)
# The guest's init writes guest-info once the kernel has booted: a guest without it this long
# after qemu started hangs in boot. Seen under TCG: the debug kernel's RCU self-tests froze at
# 1.5 s, and Debian's kernel once froze at 1.1 s ("Loading compiled-in X.509 certificates",
# qemu spinning on both CPUs), each waiting out the whole watchdog. A debug boot takes about
# 30 s, Debian's well under 20 s.
BOOT_TIMEOUT_S = 600
STOCK_BOOT_TIMEOUT_S = 180
# A hung boot has run nothing of the command (init writes guest-info before it starts), so it
# is booted again, this many times in all, keeping each hung boot's console log.
BOOT_ATTEMPTS = 2


def boot_timeout_for(opts, kernel):
    """The boot deadline: the one asked for, else BOOT_TIMEOUT_S for the debug kernel (slow to
    boot under TCG) and STOCK_BOOT_TIMEOUT_S for a packaged one."""
    if opts.boot_timeout is not None:
        return opts.boot_timeout
    return BOOT_TIMEOUT_S if "debug" in kernel.release else STOCK_BOOT_TIMEOUT_S


def cache_dir():
    return os.environ.get("USERBLK_VM_CACHE", os.path.join(TOP, "build", "vm"))


def default_modules():
    if os.environ.get("USERBLK_KERNEL") == "debug":
        return [debugkernel.build_kmod()]   # userblk.ko built for it, outside kmod/
    ko = os.path.join(TOP, "kmod", "userblk.ko")
    return [ko] if os.path.exists(ko) else []


def qemu_version():
    try:
        out = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"{QEMU} not usable ({e}): run 'make deps' (installs qemu-system-x86)")
    m = re.search(r"version ([\w.+~:-]+)", out)
    return m.group(1) if m else out.strip()


class VmOptions:
    def __init__(self, smp=2, mem_mb=2048, accel="auto", timeout=900, tsc_reliable=True,
                 idle_poll=True, append="", modules=None, env=None, out=None, quiet=False,
                 hung_task_s=30, boot_timeout=None):
        self.smp = smp
        self.mem_mb = mem_mb
        self.accel = accel
        self.timeout = timeout
        self.tsc_reliable = tsc_reliable
        self.idle_poll = idle_poll
        self.append = append
        self.modules = default_modules() if modules is None else modules
        self.env = env or {}
        self.out = out
        self.quiet = quiet
        self.hung_task_s = hung_task_s
        self.boot_timeout = boot_timeout   # None: by the kernel (boot_timeout_for())

    def guest_options(self):
        opts = []
        if self.tsc_reliable:
            opts.append("tsc=reliable")
        if self.idle_poll:
            opts.append("idle=poll")
        if self.append:
            opts.extend(self.append.split())
        return opts


class RunResult:
    def __init__(self, status, problems, out_dir, info):
        self.status = status        # exit status as documented above
        self.problems = problems    # kernel log lines that show a bug
        self.out_dir = out_dir      # the results share (console.log, guest-info, vm.json)
        self.info = info            # what vm.json records


def _new_out_dir():
    runs = os.path.join(cache_dir(), "runs")
    os.makedirs(runs, exist_ok=True)
    # A KVM probe boot and the run after it come from one process within one second: the
    # folder name must still be new.
    path = tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}-",
                            dir=runs)
    # keep the newest 20 run folders
    old = sorted(os.listdir(runs))[:-20]
    for name in old:
        shutil.rmtree(os.path.join(runs, name), ignore_errors=True)
    return path


_say = logger("vm")


def _log(opts, msg):
    if not opts.quiet:
        _say(msg)


def choose_accel(opts, kernel):
    """Return (accel, reason). KVM only where a stock kernel actually boots with it."""
    if opts.accel in ("tcg", "kvm"):
        return opts.accel, "chosen with --accel"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "/dev/kvm is not available"
    stamp = os.path.join(cache_dir(), f"kvm-probe-{kernel.release}-{qemu_version()}")
    if not os.path.exists(stamp):
        probe = VmOptions(smp=1, mem_mb=512, accel="kvm", timeout=20, modules=[], quiet=True)
        with open(os.devnull, "w") as sink:
            res = run(["true"], probe, sink=sink)
        verdict = "ok" if res.status == 0 else f"a probe boot with kvm failed (status {res.status})"
        os.makedirs(cache_dir(), exist_ok=True)
        with open(stamp, "w") as f:
            f.write(verdict + "\n")
    with open(stamp) as f:
        verdict = f.read().strip()
    if verdict == "ok":
        return "kvm", "a probe boot with kvm succeeded"
    return "tcg", verdict


# The guest mounts its own tmpfs on these; host folders below them are kept visible.
GUEST_TMPFS = ("/dev/shm", "/run", "/tmp", "/var/tmp")


def _kept_folders():
    """The project and the current folder, where they lie under a guest tmpfs."""
    keep = []
    for path in (TOP, os.getcwd()):
        path = os.path.realpath(path)
        if any(path == t or path.startswith(t + "/") for t in GUEST_TMPFS):
            if any(c.isspace() or c == ":" for c in path):
                raise RuntimeError(f"{path}: the VM cannot share a folder whose name has "
                                   "spaces or colons from under " + ", ".join(GUEST_TMPFS))
            if path not in keep:
                keep.append(path)
    return keep


def _qemu_argv(opts, kernel, accel, initrd, out_dir, interactive):
    keep = _kept_folders()
    cmdline = ["console=ttyS1", "loglevel=7", "panic=-1",
               f"USERBLK_KEEP={':'.join(keep)}" if keep else "",
               *opts.guest_options(),
               f"USERBLK_MODE={'shell' if interactive else 'run'}",
               f"USERBLK_OUT={out_dir}", f"USERBLK_HUNG_TASK_S={opts.hung_task_s}",
               *kernel.cmdline]
    if interactive:
        cmdline.append(f"USERBLK_TERM={os.environ.get('TERM', 'vt100')}")
    argv = [QEMU, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-smp", str(opts.smp), "-m", str(opts.mem_mb),
            "-kernel", kernel.vmlinuz, "-initrd", initrd,
            "-append", " ".join(c for c in cmdline if c)]
    if accel == "kvm":
        argv += ["-accel", "kvm", "-cpu", "host"]
    else:
        argv += ["-accel", "tcg,thread=multi", "-cpu", "max"]
    if interactive:
        argv += ["-serial", "mon:stdio"]
    else:
        argv += ["-chardev", "stdio,id=out,signal=off", "-serial", "chardev:out"]
    argv += ["-chardev", f"file,id=klog,path={out_dir}/console.log", "-serial", "chardev:klog",
             "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                        "multidevs=remap",
             "-virtfs", f"local,path={out_dir},mount_tag=results,security_model=none,"
                        "multidevs=remap"]
    return argv


def _write_cmd(out_dir, argv, opts):
    cwd = os.getcwd()
    env = {"USERBLK_PLATFORM": "vm", "USERBLK_KMOD_DIR": "/run/userblk/kmod",
           "USERBLK_OUT": out_dir, **opts.env}
    lines = ["# written by harness/vm: the command the guest runs"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines.append(f"cd {shlex.quote(cwd)} 2>/dev/null || cd /")
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    with open(os.path.join(out_dir, "cmd.sh"), "w") as f:
        f.write("\n".join(lines) + "\n")


def run(argv, opts, sink=None, interactive=False):
    """Boot, run argv in the guest (or a shell), return a RunResult."""
    sink = sink or sys.stdout
    kernel = find_vm_kernel()
    accel, why = choose_accel(opts, kernel)
    out_dir = os.path.abspath(opts.out) if opts.out else _new_out_dir()
    os.makedirs(out_dir, exist_ok=True)
    for stale in ("status", "console.log", "guest-info"):
        if os.path.exists(os.path.join(out_dir, stale)):
            os.unlink(os.path.join(out_dir, stale))

    base = initramfs.build_base(kernel, cache_dir())
    for m in opts.modules:
        if not os.path.isfile(m):
            raise RuntimeError(f"module {m} not found: run 'make build'")
    initrd = os.path.join(out_dir, "initramfs.cpio")
    with open(initrd, "wb") as f, open(base, "rb") as b:
        shutil.copyfileobj(b, f)
        f.write(open(initramfs.build_overlay(opts.modules, initrd + ".kmod"), "rb").read())
    os.unlink(initrd + ".kmod")
    if not interactive:
        _write_cmd(out_dir, argv, opts)

    qargv = _qemu_argv(opts, kernel, accel, initrd, out_dir, interactive)
    info = {"platform": "vm", "accel": accel, "accel_reason": why, "kernel": kernel.release,
            "qemu": qemu_version(), "qemu_argv": qargv, "smp": opts.smp, "mem_mb": opts.mem_mb,
            "guest_options": opts.guest_options(), "command": argv,
            "modules": [os.path.abspath(m) for m in opts.modules]}
    _log(opts, f"kernel {kernel.release}, accel {accel} ({why}), smp {opts.smp}, "
               f"{opts.mem_mb} MiB, guest options: {' '.join(opts.guest_options()) or 'none'}")

    start = time.monotonic()
    status = None
    if interactive:
        _log(opts, "interactive guest: exit the shell (or Ctrl-A X) to power off")
        subprocess.run(qargv)
    else:
        status, info["boot_attempts"] = _boot(qargv, opts, sink, out_dir,
                                              boot_timeout_for(opts, kernel))
    info["seconds"] = round(time.monotonic() - start, 3)

    status_file = os.path.join(out_dir, "status")
    if status is None and os.path.exists(status_file):
        with open(status_file) as f:
            status = int(f.read().strip() or EXIT_NO_STATUS)
    elif status is None:
        status = 0 if interactive else EXIT_NO_STATUS
    info["guest"] = _read_kv(os.path.join(out_dir, "guest-info"))

    try:
        with open(os.path.join(out_dir, "console.log"), errors="replace") as f:
            log = f.read()
    except OSError:
        log = ""
    problems = dmesg.bad_lines(log) + debugkernel.kmemleak_problems(out_dir)
    if status == EXIT_NO_STATUS:
        _log(opts, f"the guest stopped without reporting a status; kernel log: {out_dir}/console.log")
        for line in log.splitlines()[-15:]:
            print(f"  | {line.rstrip()}", file=sys.stderr)
    if problems:
        print(f"vm: the kernel log shows a problem ({out_dir}/console.log):", file=sys.stderr)
        for line in problems[:20]:
            print(f"  > {line}", file=sys.stderr)
        if status == 0:
            status = EXIT_KERNEL_PROBLEM
    info["status"] = status
    info["problems"] = problems
    with open(os.path.join(out_dir, "vm.json"), "w") as f:
        json.dump(info, f, indent=2)
    os.unlink(initrd)
    return RunResult(status, problems, out_dir, info)


def _boot(qargv, opts, sink, out_dir, boot_timeout):
    """_run_streaming, booted again while a boot hangs (BOOT_ATTEMPTS in all). Each hung boot's
    kernel log is kept as console-hung-boot-N.log. Returns (status, attempts); a boot that
    hung every time is EXIT_WATCHDOG."""
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        status = _run_streaming(qargv, opts, sink, out_dir, boot_timeout)
        if status != EXIT_BOOT_HUNG:
            return status, attempt
        if attempt < BOOT_ATTEMPTS:
            kept = os.path.join(out_dir, f"console-hung-boot-{attempt}.log")
            try:
                os.replace(os.path.join(out_dir, "console.log"), kept)
            except FileNotFoundError:
                pass
            _log(opts, f"booting again: boot {attempt} hung before the guest's init ran "
                       f"anything (its kernel log: {kept})")
    return EXIT_WATCHDOG, BOOT_ATTEMPTS


def _run_streaming(qargv, opts, sink, out_dir, boot_timeout):
    """Run qemu, copy the guest's ttyS0 to sink, enforce the watchdog and the boot deadline
    (out_dir/guest-info within boot_timeout s). Returns None when qemu ended by itself,
    EXIT_WATCHDOG, or EXIT_BOOT_HUNG when the boot deadline killed it."""
    proc = subprocess.Popen(qargv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        return _stream(proc, opts, sink, out_dir, boot_timeout)
    finally:
        proc.stdout.close()


def _stream(proc, opts, sink, out_dir, boot_timeout):
    start = time.monotonic()
    deadline = start + opts.timeout
    booted = False
    fd = proc.stdout.fileno()
    out = sink.buffer if hasattr(sink, "buffer") else None
    while True:
        now = time.monotonic()
        left = deadline - now
        if left <= 0:
            proc.kill()
            proc.wait()
            _log(opts, f"watchdog: the guest ran past {opts.timeout} s and was killed")
            return EXIT_WATCHDOG
        if not booted:
            booted = os.path.exists(os.path.join(out_dir, "guest-info"))
            if not booted and now - start > boot_timeout:
                proc.kill()
                proc.wait()
                _log(opts, f"watchdog: the kernel did not reach the guest's init within "
                           f"{boot_timeout} s (a hung boot; see {out_dir}/console.log) "
                           "and was killed")
                return EXIT_BOOT_HUNG
        r, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not r:
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        data = data.replace(b"\r\n", b"\n")
        if out is not None:
            out.write(data)
            out.flush()
        else:
            sink.write(data.decode(errors="replace"))
    proc.wait()
    return None


def _read_kv(path):
    kv = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                kv[k] = v
    except OSError:
        pass
    return kv
