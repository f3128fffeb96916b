"""The VM's initramfs: busybox, the modules that mount the host root, /init.

The base image (busybox + kernel modules + init) is cached by a hash of its
inputs; the project's own modules go into a second, small archive appended at
boot, since the kernel unpacks concatenated cpio archives in order.
"""

import hashlib
import io
import lzma
import os
import stat

from .kernel import module_closure, module_name

BUSYBOX = "/bin/busybox"

# What /init needs to reach the host root and give the guest a usable system.
# The rest (null_blk, nbd, ext4, ...) is loaded with modprobe from the host root.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "configfs")

INIT_SCRIPT = os.path.join(os.path.dirname(__file__), "guest_init.sh")


class Cpio:
    """A minimal writer of the cpio "newc" format the kernel unpacks."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name, mode, data=b"", nlink=1):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08x}"
            for v in (self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name_b), 0)
        )
        self.ino += 1
        self.buf.write(hdr.encode() + name_b)
        self._pad()
        self.buf.write(data)
        self._pad()

    def _pad(self):
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name):
        self._entry(name, stat.S_IFDIR | 0o755, nlink=2)

    def file(self, name, data, mode=0o644):
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name, target):
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def finish(self):
        self._entry("TRAILER!!!", 0)
        self.buf.write(b"\0" * (-self.buf.tell() % 512))
        return self.buf.getvalue()


def _read_module(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        data = lzma.decompress(data)
    elif path.endswith(".zst") or path.endswith(".gz"):
        raise RuntimeError(f"{path}: only .ko and .ko.xz modules are supported")
    return data


def build_base(kernel, cache_dir):
    """Build (or reuse) the base initramfs for kernel; return its path."""
    if not os.access(BUSYBOX, os.X_OK):
        raise RuntimeError(f"{BUSYBOX} missing: run 'make deps' (installs busybox-static)")
    paths = module_closure(kernel, BOOT_MODULES)
    with open(INIT_SCRIPT, "rb") as f:
        init = f.read()
    h = hashlib.sha256()
    h.update(init)
    h.update(kernel.release.encode())
    for p in [BUSYBOX] + [os.path.join(kernel.moddir, p) for p in paths]:
        st = os.stat(p)
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    out = os.path.join(cache_dir, f"initramfs-{kernel.release}-{h.hexdigest()[:12]}.cpio")
    if os.path.exists(out):
        return out

    c = Cpio()
    for d in ("bin", "sbin", "dev", "proc", "sys", "host", "lib", "lib/boot-modules", "tmp"):
        c.dir(d)
    with open(BUSYBOX, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    c.symlink("bin/sh", "busybox")
    order = []
    for p in paths:
        name = module_name(p) + ".ko"
        c.file(f"lib/boot-modules/{name}", _read_module(os.path.join(kernel.moddir, p)))
        order.append(name)
    # empty for a kernel with all of them built in (the debug kernel)
    c.file("lib/boot-modules/order", "".join(n + "\n" for n in order).encode())
    c.file("init", init, 0o755)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(c.finish())
    os.replace(tmp, out)
    for old in os.listdir(cache_dir):
        if old.startswith(f"initramfs-{kernel.release}-") and old != os.path.basename(out):
            os.unlink(os.path.join(cache_dir, old))
    return out


def build_overlay(modules, out):
    """A small archive carrying the project's own modules into /lib/userblk-kmod."""
    c = Cpio()
    c.dir("lib/userblk-kmod")
    for m in modules:
        with open(m, "rb") as f:
            c.file(f"lib/userblk-kmod/{os.path.basename(m)}", f.read())
    with open(out, "wb") as f:
        f.write(c.finish())
    return out
