#!/bin/sh
# /init of the userblk VM (busybox sh). Mounts the host root read-only over
# virtio-9p, prepares it as a system, runs one command in a chroot of it (or a
# shell), records the exit status in the results share and powers off.
# The kernel command line passes USERBLK_MODE (run|shell), USERBLK_OUT (the
# results share, mounted at the same path as on the host) and
# USERBLK_HUNG_TASK_S to this script's environment, and USERBLK_KEEP: host
# folders (colon-separated) that must stay visible although they lie under a
# folder the guest mounts its own tmpfs on (a checkout in /tmp, say).
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "vm-init: $*" >/dev/ttyS0; }
halt_now() { sync; poweroff -f; echo o >/proc/sysrq-trigger; sleep 10; }
die() { say "$*"; halt_now; }

while read -r m; do
	insmod "/lib/boot-modules/$m" || die "cannot load $m"
done </lib/boot-modules/order

R=/host
P9=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$P9,ro,cache=loose" hostroot $R || die "cannot mount the host root over 9p"
mount -t proc proc $R/proc || die "cannot mount proc"
mount -t sysfs sysfs $R/sys || die "cannot mount sysfs"
mount -t configfs configfs $R/sys/kernel/config 2>/dev/null
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
mount -t devtmpfs devtmpfs $R/dev || die "cannot mount devtmpfs"
# A kernel whose modules are not in the host's /lib/modules (the debug kernel,
# docs/debug-kernel.md): USERBLK_MODULES is the host folder that has them.
if [ -n "$USERBLK_MODULES" ]; then
	mount --bind "$R$USERBLK_MODULES" $R/lib/modules || die "cannot mount $USERBLK_MODULES"
fi
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
ln -sf /proc/self/fd $R/dev/fd
ln -sf /proc/self/fd/0 $R/dev/stdin
ln -sf /proc/self/fd/1 $R/dev/stdout
ln -sf /proc/self/fd/2 $R/dev/stderr
n=0
for p in $(echo "$USERBLK_KEEP" | tr ':' ' '); do
	mkdir -p /keep/$n && mount --bind "$R$p" /keep/$n || die "cannot keep $p"
	n=$((n + 1))
done
for d in dev/shm run tmp var/tmp; do
	mount -t tmpfs -o mode=1777 tmpfs $R/$d 2>/dev/null
done
n=0
for p in $(echo "$USERBLK_KEEP" | tr ':' ' '); do
	mkdir -p "$R$p" && mount --bind /keep/$n "$R$p" || die "cannot keep $p"
	n=$((n + 1))
done
mkdir -p $R/run/userblk/kmod
cp /lib/userblk-kmod/* $R/run/userblk/kmod/ 2>/dev/null

[ -n "$USERBLK_OUT" ] || die "USERBLK_OUT not set on the kernel command line"
mkdir -p "$R$USERBLK_OUT" 2>/dev/null
mount -t 9p -o "$P9,cache=none" results "$R$USERBLK_OUT" || die "cannot mount the results share"
OUT=$R$USERBLK_OUT

echo "${USERBLK_HUNG_TASK_S:-30}" >/proc/sys/kernel/hung_task_timeout_secs
# The kernel's module requests (mount -t ext4, ...) run modprobe in the
# initramfs root: send them to the host root's modprobe and modules.
printf '#!/bin/sh\nexec chroot %s /sbin/modprobe "$@"\n' "$R" >/bin/host-modprobe
chmod 755 /bin/host-modprobe
echo /bin/host-modprobe >/proc/sys/kernel/modprobe
hostname userblk-vm
# The loopback interface: the forward backend talks NBD over TCP to a server on 127.0.0.1.
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up || say "cannot bring up lo"
{
	echo "release=$(uname -r)"
	echo "cmdline=$(cat /proc/cmdline)"
	echo "clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
	echo "nproc=$(nproc)"
	echo "memtotal_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
} >"$OUT/guest-info"

# USERBLK_KMEMLEAK=1 (the debug kernel): forget what boot leaves, scan after the command.
KMEMLEAK=$R/sys/kernel/debug/kmemleak
if [ "$USERBLK_KMEMLEAK" = 1 ] && [ -w $KMEMLEAK ]; then
	echo scan >$KMEMLEAK && echo clear >$KMEMLEAK
fi

GUEST_ENV="HOME=/root LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
if [ "$USERBLK_MODE" = shell ]; then
	# shellcheck disable=SC2086
	setsid -c chroot $R /usr/bin/env -i $GUEST_ENV TERM="${USERBLK_TERM:-vt100}" \
		USERBLK_KMOD_DIR=/run/userblk/kmod USERBLK_PLATFORM=vm /bin/bash -l \
		</dev/ttyS0 >/dev/ttyS0 2>&1
else
	stty -F /dev/ttyS0 -opost 2>/dev/null
	# shellcheck disable=SC2086
	chroot $R /usr/bin/env -i $GUEST_ENV /bin/sh "$USERBLK_OUT/cmd.sh" \
		</dev/null >/dev/ttyS0 2>&1
	echo $? >"$OUT/status"
	if [ "$USERBLK_KMEMLEAK" = 1 ] && [ -w $KMEMLEAK ]; then
		sleep 5 # kmemleak reports no object younger than 5 s
		echo scan >$KMEMLEAK && cat $KMEMLEAK >"$OUT/kmemleak"
	fi
fi
sync
umount "$OUT"
halt_now
