# Helpers for kernel-in-the-loop test scripts (sourced; bash).
# Exit codes: 0 pass, 1 fail, 77 skip (a skip always says why).

KTEST_NAME=${KTEST_NAME:-$(basename "$0")}

fail() { echo "FAIL: $KTEST_NAME: $*" >&2; exit 1; }
skip() { echo "SKIP: $KTEST_NAME: $*" >&2; exit 77; }

# ktest_begin: write a unique marker into the kernel log.
ktest_begin() {
	KTEST_MARKER="userblk-test-marker: $KTEST_NAME $$ $(date +%s%N)"
	echo "$KTEST_MARKER" >/dev/kmsg || fail "cannot write to /dev/kmsg"
}

# ktest_check_dmesg: fail if the kernel log after the marker shows a bug.
ktest_check_dmesg() {
	local bad
	bad=$(dmesg | awk -v m="$KTEST_MARKER" 'index($0, m) { found = 1; next } found' |
		grep -E 'WARNING:|BUG:|Oops|hung task|blocked for more than|KASAN|Kernel panic|general protection fault|detected stalls|UBSAN:')
	[ -z "$bad" ] || fail "kernel log after the marker shows a problem:
$bad"
}

# kmod_path: the userblk.ko this platform loads.
kmod_path() {
	local ko=${USERBLK_KMOD_DIR:-}/userblk.ko
	[ -f "$ko" ] || fail "userblk.ko not found in USERBLK_KMOD_DIR='${USERBLK_KMOD_DIR:-}'"
	echo "$ko"
}
