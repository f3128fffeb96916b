#!/bin/bash
# Loads and unloads userblk.ko: the control node appears and goes, the
# module parameters are range-checked, and the kernel log stays clean.
set -u
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root"
ko=$(kmod_path)
ktest_begin

lsmod | grep -q '^userblk ' && fail "userblk is already loaded"
insmod "$ko" || fail "insmod $ko failed"
[ -c /dev/userblk-control ] || fail "/dev/userblk-control is not a character device"
p=/sys/module/userblk/parameters
[ "$(cat $p/default_timeout_ms)" = 30000 ] || fail "default_timeout_ms is not 30000"
echo 5 >$p/default_timeout_ms 2>/dev/null && fail "default_timeout_ms accepted 5 (below 100)"
echo 2048 >$p/default_max_io_kb 2>/dev/null && fail "default_max_io_kb accepted 2048 (above 1024)"
echo 64 >$p/default_max_io_kb || fail "default_max_io_kb refused 64"
modinfo -F parm "$ko" | grep -q '^default_timeout_ms:.*Default' ||
	fail "modinfo does not describe default_timeout_ms with its default"
rmmod userblk || fail "rmmod userblk failed"
[ -e /dev/userblk-control ] && fail "/dev/userblk-control is still there after rmmod"
insmod "$ko" default_timeout_ms=1000 || fail "insmod with a parameter failed"
rmmod userblk || fail "second rmmod failed"
insmod "$ko" default_timeout_ms=1 2>/dev/null && { rmmod userblk; fail "insmod accepted default_timeout_ms=1"; }
ktest_check_dmesg
echo "PASS: $KTEST_NAME"
