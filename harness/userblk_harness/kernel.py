"""Finding the kernel the VM boots, its modules and its headers."""

import os
import re
from dataclasses import dataclass


def _version_key(release):
    return [int(x) if x.isdigit() else x for x in re.split(r"[.-]", release)]


@dataclass
class Kernel:
    release: str          # e.g. 6.1.0-56-amd64
    vmlinuz: str          # /boot/vmlinuz-<release>
    moddir: str           # /lib/modules/<release>
    cmdline: tuple = ()   # guest kernel options this kernel needs (the debug kernel's)

    @property
    def kdir(self):
        """The Kbuild tree for out-of-tree modules, or '' when the headers are missing."""
        build = os.path.join(self.moddir, "build")
        return build if os.path.isfile(os.path.join(build, "Makefile")) else ""


class KernelError(Exception):
    pass


def find_vm_kernel(release=None):
    """The Debian kernel the VM boots: the newest /boot/vmlinuz-*-amd64 with modules.

    USERBLK_KERNEL (a release name) overrides the choice; USERBLK_KERNEL=debug
    is the debug kernel built by harness/kernel/build (docs/debug-kernel.md).
    The ABI number moves with Debian updates, so it is discovered, never written down.
    """
    release = release or os.environ.get("USERBLK_KERNEL")
    if release == "debug":
        from . import debugkernel
        return debugkernel.find()
    candidates = []
    try:
        names = os.listdir("/boot")
    except OSError:
        names = []
    for name in names:
        if not name.startswith("vmlinuz-"):
            continue
        rel = name[len("vmlinuz-"):]
        if release and rel != release:
            continue
        moddir = os.path.join("/lib/modules", rel)
        if os.path.isfile(os.path.join(moddir, "modules.dep")):
            candidates.append(Kernel(rel, os.path.join("/boot", name), moddir))
    if not candidates:
        want = f"release {release}" if release else "a Debian kernel"
        raise KernelError(
            f"no bootable kernel found for {want}: need /boot/vmlinuz-<release> and "
            "/lib/modules/<release>/modules.dep; run 'make deps' (installs linux-image-amd64)")
    candidates.sort(key=lambda k: _version_key(k.release))
    return candidates[-1]


def modules_dep(kernel):
    """Parse modules.dep: module name -> (path relative to moddir, [dependency paths])."""
    deps = {}
    with open(os.path.join(kernel.moddir, "modules.dep")) as f:
        for line in f:
            path, _, rest = line.partition(":")
            path = path.strip()
            if not path:
                continue
            deps[module_name(path)] = (path, rest.split())
    return deps


def module_name(path):
    base = os.path.basename(path)
    for ext in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base.replace("-", "_")


def module_closure(kernel, names):
    """Paths of the named modules and everything they need, dependencies first.

    A name that is built into the kernel (listed in modules.builtin) is skipped;
    an unknown name is an error.
    """
    deps = modules_dep(kernel)
    builtin = set()
    try:
        with open(os.path.join(kernel.moddir, "modules.builtin")) as f:
            builtin = {module_name(line.strip()) for line in f if line.strip()}
    except OSError:
        pass
    by_path = {path: name for name, (path, _) in deps.items()}
    order, seen = [], set()

    def visit(path):
        if path in seen:
            return
        seen.add(path)
        for dep in deps[by_path[path]][1]:
            visit(dep)
        order.append(path)

    for name in names:
        key = name.replace("-", "_")
        if key in deps:
            visit(deps[key][0])
        elif key not in builtin:
            raise KernelError(f"module {name} is neither in modules.dep nor built into {kernel.release}")
    return order
