"""The debug kernel (make test KERNEL=debug): KASAN, lockdep, kmemleak.

Built from Debian's linux-source-6.1 with x86_64 defconfig plus
harness/kernel/debug.config into a cache outside the tree:

  $USERBLK_KERNEL_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/userblk)/
    linux-source-<debian version>/      the extracted tarball, shared, never written
    kernel-debug-<key>/obj/             O= build tree: bzImage, and the KDIR for modules
    kernel-debug-<key>/modroot/lib/modules/<release>/   modules_install output
    kernel-debug-<key>/kmod-<hash>/     userblk.ko built from a copy of kmod/
    kernel-debug-<key>/done             written last: the release and the build time

<key> hashes the fragment, the source version and the compiler, so a changed
fragment builds a new kernel and an unchanged one is reused.
See docs/debug-kernel.md.
"""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

from .kernel import Kernel, KernelError
from .say import logger

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FRAGMENT = os.path.join(TOP, "harness", "kernel", "debug.config")
SOURCE_TAR = "/usr/src/linux-source-6.1.tar.xz"
SOURCE_PKG = "linux-source-6.1"
NAME = "debug"      # USERBLK_KERNEL=debug selects this kernel


def cache_root():
    root = os.environ.get("USERBLK_KERNEL_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "userblk")
    return root


def source_version():
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", SOURCE_PKG],
                             capture_output=True, text=True, check=True).stdout.strip()
        if out:
            return out
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        st = os.stat(SOURCE_TAR)
    except OSError:
        raise KernelError(f"{SOURCE_TAR} missing: run 'make deps' (installs {SOURCE_PKG})")
    return f"{st.st_size}-{st.st_mtime_ns}"


def _compiler():
    try:
        return subprocess.run(["gcc", "--version"], capture_output=True, text=True,
                              check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "?"


def build_dir():
    h = hashlib.sha256()
    with open(FRAGMENT, "rb") as f:
        h.update(f.read())
    h.update(source_version().encode())
    h.update(_compiler().encode())
    return os.path.join(cache_root(), f"kernel-debug-{h.hexdigest()[:12]}")


def _read_done(bdir):
    try:
        with open(os.path.join(bdir, "done")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def find():
    """The built debug kernel as a Kernel, or raise KernelError saying how to build it."""
    bdir = build_dir()
    done = _read_done(bdir)
    if not done:
        raise KernelError(f"the debug kernel is not built ({bdir}): run "
                          "'make debug-kernel' (or harness/kernel/build)")
    rel = done["release"]
    # The guest mounts modroot/lib/modules over its /lib/modules (modprobe nbd, ...)
    # and scans for leaks after the command (guest_init.sh).
    return Kernel(rel, os.path.join(bdir, "obj", "arch", "x86", "boot", "bzImage"),
                  os.path.join(bdir, "modroot", "lib", "modules", rel),
                  cmdline=(f"USERBLK_MODULES={os.path.join(bdir, 'modroot', 'lib', 'modules')}",
                           "USERBLK_KMEMLEAK=1",
                           # ACPI's PCI interrupt routing (_PRT) runs so slowly under
                           # KASAN and lockdep in TCG that it hits the AML loop timeout
                           # (30 s a device, then "no GSI"): route without ACPI.
                           "acpi=noirq"))


_say = logger("debug-kernel")


def _run(argv, **kw):
    _say("$ " + " ".join(argv))
    subprocess.run(argv, check=True, **kw)


class _Lock:
    def __init__(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.f = open(path, "w")

    def __enter__(self):
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def _extract():
    """The extracted source tree (shared by every debug build of this version)."""
    src = os.path.join(cache_root(), f"linux-source-{source_version()}")
    if os.path.isfile(os.path.join(src, ".userblk-extracted")):
        return src
    if not os.path.isfile(SOURCE_TAR):
        raise KernelError(f"{SOURCE_TAR} missing: run 'make deps' (installs {SOURCE_PKG})")
    tmp = src + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    t0 = time.monotonic()
    _run(["tar", "-xJf", SOURCE_TAR, "-C", tmp, "--strip-components=1"])
    open(os.path.join(tmp, ".userblk-extracted"), "w").close()
    shutil.rmtree(src, ignore_errors=True)
    os.rename(tmp, src)
    _say(f"extracted {SOURCE_TAR} in {time.monotonic() - t0:.0f} s")
    return src


def _wanted(fragment):
    """CONFIG_X -> value ('n' for 'is not set') as the fragment asks."""
    want = {}
    with open(fragment) as f:
        for line in f:
            line = line.strip()
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                want[k] = v
            elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
                want[line[2:-len(" is not set")]] = "n"
    return want


def _check_config(obj):
    got = {}
    with open(os.path.join(obj, ".config")) as f:
        for line in f:
            line = line.strip()
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                got[k] = v
    bad = []
    for k, v in _wanted(FRAGMENT).items():
        have = got.get(k, "n")
        if have == v:
            continue
        if v == "n":    # something else selects it: only more to build
            _say(f"note: {k} stays {have} (the fragment turns it off)")
        else:
            bad.append(f"{k}: asked {v}, got {have}")
    return bad


def build(jobs=2, nice=10):
    """Build (or reuse) the debug kernel; return the Kernel."""
    bdir = build_dir()
    with _Lock(bdir + ".lock"):
        if _read_done(bdir):
            _say(f"reusing {bdir}")
            return find()
        src = _extract()
        obj = os.path.join(bdir, "obj")
        os.makedirs(obj, exist_ok=True)
        t0 = time.monotonic()
        mk = ["nice", "-n", str(nice), "make", "-C", src, f"O={obj}", f"-j{jobs}"]
        _run(mk[:-1] + ["defconfig"], stdout=subprocess.DEVNULL)
        _run([os.path.join(src, "scripts", "kconfig", "merge_config.sh"), "-m", "-O", obj,
              os.path.join(obj, ".config"), FRAGMENT], cwd=src, stdout=subprocess.DEVNULL)
        _run(mk[:-1] + ["olddefconfig"], stdout=subprocess.DEVNULL)
        bad = _check_config(obj)
        if bad:
            raise KernelError("the kernel config does not take harness/kernel/debug.config as "
                              "written (a dependency is missing?):\n  " + "\n  ".join(bad))
        _run(mk + ["bzImage", "modules"])
        modroot = os.path.join(bdir, "modroot")
        shutil.rmtree(modroot, ignore_errors=True)
        _run(mk[:-1] + [f"INSTALL_MOD_PATH={modroot}", "INSTALL_MOD_STRIP=1", "DEPMOD=/sbin/depmod",
                        "modules_install"], stdout=subprocess.DEVNULL)
        # The guest mounts modroot/lib/modules over its /lib/modules: keep the tree out of it.
        release = subprocess.run(["make", "-s", "-C", src, f"O={obj}", "kernelrelease"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        moddir = os.path.join(modroot, "lib", "modules", release)
        for link in ("build", "source"):
            if os.path.islink(os.path.join(moddir, link)):
                os.unlink(os.path.join(moddir, link))
        os.symlink(obj, os.path.join(moddir, "build"))
        seconds = round(time.monotonic() - t0)
        done = {"release": release, "build_seconds": seconds, "jobs": jobs,
                "source": f"{SOURCE_PKG} {source_version()}", "compiler": _compiler(),
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with open(os.path.join(bdir, "done.tmp"), "w") as f:
            json.dump(done, f, indent=2)
        os.replace(os.path.join(bdir, "done.tmp"), os.path.join(bdir, "done"))
        _say(f"built {release} in {seconds} s (-j{jobs}) into {bdir}")
        return find()


KMOD_FILES_EXT = (".c", ".h")


def _kmod_sources():
    """Relative paths of what Kbuild needs from kmod/: Kbuild, Makefile, sources, headers."""
    kmod = os.path.join(TOP, "kmod")
    out = []
    for dirpath, _, files in os.walk(kmod):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), kmod)
            if name in ("Kbuild", "Makefile") or (name.endswith(KMOD_FILES_EXT)
                                                  and not name.endswith(".mod.c")):
                out.append(rel)
    return sorted(out)


def build_kmod(kernel=None):
    """userblk.ko for the debug kernel, built from a copy of kmod/ in the cache.

    The in-tree kmod/ is never written: Kbuild runs with M= on the copy.
    """
    kernel = kernel or find()
    kmod = os.path.join(TOP, "kmod")
    files = _kmod_sources()
    h = hashlib.sha256()
    for rel in files:
        h.update(rel.encode() + b"\0")
        with open(os.path.join(kmod, rel), "rb") as f:
            h.update(f.read())
    bdir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(kernel.moddir))))
    out = os.path.join(bdir, f"kmod-{h.hexdigest()[:12]}")
    ko = os.path.join(out, "userblk.ko")
    with _Lock(os.path.join(bdir, "kmod.lock")):
        if os.path.isfile(ko):
            return ko
        tmp = out + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for rel in files:
            os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
            shutil.copy2(os.path.join(kmod, rel), os.path.join(tmp, rel))
        res = subprocess.run(["make", "-C", kernel.kdir, f"M={tmp}", "modules"],
                             capture_output=True, text=True)
        if res.returncode != 0:
            sys.stderr.write(res.stdout + res.stderr)
            raise KernelError(f"building userblk.ko against the debug kernel failed (in {tmp})")
        shutil.rmtree(out, ignore_errors=True)
        os.rename(tmp, out)
        # keep the newest few copies
        olds = sorted((d for d in os.listdir(bdir) if d.startswith("kmod-") and
                       not d.endswith(".tmp") and d != os.path.basename(out)),
                      key=lambda d: os.path.getmtime(os.path.join(bdir, d)))
        for d in olds[:-3]:
            shutil.rmtree(os.path.join(bdir, d), ignore_errors=True)
    return ko


def kmemleak_problems(out_dir):
    """Problem lines for the leaks the guest's last kmemleak scan reported (none if no scan).

    Every unreferenced object fails the run: boot's own are cleared before the command.
    Objects whose allocation trace names userblk, or an unloaded module's bare address
    (userblk.ko is usually unloaded by then), are called out.
    """
    try:
        with open(os.path.join(out_dir, "kmemleak"), errors="replace") as f:
            text = f.read()
    except OSError:
        return []
    objs = [o for o in text.split("unreferenced object ")[1:] if o.strip()]
    if not objs:
        return []
    ours = [o for o in objs if "userblk" in o or _unloaded_module_frame(o)]
    lines = [f"kmemleak: {len(objs)} unreferenced object(s) after the command, {len(ours)} "
             f"allocated by userblk or an unloaded module: see {out_dir}/kmemleak"]
    first = (ours or objs)[0].splitlines()
    lines += ["kmemleak:   unreferenced object " + first[0]]
    lines += ["kmemleak:   " + ln.strip() for ln in first if ln.strip().startswith("[<")][:12]
    return lines


def _unloaded_module_frame(obj):
    # "[<ffffffffc0a1b2c3>] 0xffffffffc0a1b2c3": module space, no symbol left
    for ln in obj.splitlines():
        ln = ln.strip()
        if ln.startswith("[<ffffffffc") and ln.split("] ", 1)[-1].startswith("0xffffffffc"):
            return True
    return False
