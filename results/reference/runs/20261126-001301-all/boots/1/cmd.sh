# written by harness/vm: the command the guest runs
export USERBLK_PLATFORM=vm
export USERBLK_KMOD_DIR=/run/userblk/kmod
export USERBLK_OUT=/work/main/results/runs/20261126-001301-all
cd /work/main 2>/dev/null || cd /
exec /usr/bin/python3 /work/main/harness/harness run-cells /work/main/results/runs/20261126-001301-all
