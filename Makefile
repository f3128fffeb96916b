# userblk: the front door. `make help` lists the targets.
SHELL     := /bin/bash
PY        := /usr/bin/python3
comma     := ,
# SANITIZE=address: the user space with ASan and UBSan, in its own folder (docs/reliability.md).
SANITIZE  ?=
BUILD     ?= $(if $(SANITIZE),build-asan,build)
PLATFORM  ?= auto
JOBS      ?= $(shell nproc)
# The kernel the VM tests boot: debian (Debian's linux-image-amd64) or debug (KASAN,
# lockdep, kmemleak: built from linux-source-6.1 into a cache, docs/debug-kernel.md).
# KERNEL=debug reaches the harness as USERBLK_KERNEL=debug.
KERNEL    ?= debian
ifeq ($(KERNEL),debug)
export USERBLK_KERNEL := debug
KERNEL_DEP := debug-kernel
ifeq ($(PLATFORM),native)
$(error KERNEL=debug runs in the VM: use PLATFORM=vm or auto)
endif
else ifneq ($(KERNEL),debian)
$(error KERNEL must be debian or debug, not '$(KERNEL)')
endif
# The kernel tree kmod/userblk.ko is built against: the VM kernel's headers, or the
# running kernel's when the platform is native. Always Debian's: the debug kernel's
# userblk.ko is built from a copy of kmod/ in its cache, never in kmod/.
KDIR      ?= $(shell $(if $(filter debug,$(USERBLK_KERNEL)),USERBLK_KERNEL=) \
	$(PY) harness/platform info --platform $(PLATFORM) --get kdir)
CMAKE_FLAGS ?= -DUSERBLK_WERROR=$(if $(CI),ON,OFF)
CMAKE_FLAGS += $(if $(SANITIZE),-DUSERBLK_SANITIZE=$(SANITIZE))
CTEST_ARGS ?=
# EXTENDED=1: also the tests labelled extended (the file and forward suites of the transports
# whose kernel side never sees the backend: copy, ring and the baselines).
CTEST_EXCLUDE = $(if $(EXTENDED),,-LE extended)

export PLATFORM

.PHONY: help deps build configure kmod test unit vm-test vm-shell bench checkpatch format clean \
	debug-kernel

help:
	@echo "make deps        install the Debian packages in deps/debian-packages.txt (idempotent)"
	@echo "make build       build the user space (CMake, into $(BUILD)/) and kmod/userblk.ko"
	@echo "make test        deps + build + every test (unit and kernel-in-the-loop), via ctest"
	@echo "                 (EXTENDED=1: also the baselines on the file and forward backends)"
	@echo "make unit        only the user-space unit tests"
	@echo "make vm-test     only the kernel-in-the-loop tests"
	@echo "make vm-shell    an interactive shell in the test VM, userblk.ko in \$$USERBLK_KMOD_DIR"
	@echo "make bench TRANSPORT=<name>   benchmark a transport (see README.md)"
	@echo "make sweep       the runs behind the paper: every transport, paper sets (~80 min)"
	@echo "make slots       a pipe per slot at scale: pipe against splice, queues x depth"
	@echo "make lend        lending against copying: forwarded and O_DIRECT-file writes"
	@echo "make poll        queue depth 1 without a wake-up: ring's polled variants, ublk, null_blk"
	@echo "make compare A=<run> B=<run>   per-cell ratios of two runs"
	@echo "make micro       microbenchmarks of the primitives into results/micro/ (PLATFORM=vm: in the VM)"
	@echo "make figures     every figure of plots/ into paper/figures/, from results/reference/"
	@echo "                 (RESULTS=dir: another results directory or run)"
	@echo "make paper       the figures, the quoted numbers checked, paper/paper.pdf (LaTeX)"
	@echo "make numbers     rewrite paper/numbers.tex from RESULTS (then reread the text)"
	@echo "make reference   publish finished runs as results/reference/ (RUNS=, MICRO=)"
	@echo "make checkpatch  the kernel style check on kmod/"
	@echo "make fuzz ITER=<n> [TRANSPORT=<name>] [SEED=<s>]   fuzz userblk.ko's ioctls and queue fds in the VM (SANITIZE=address: user space under ASan, docs/reliability.md)"
	@echo "make debug-kernel   build (or reuse) the debug kernel of KERNEL=debug (docs/debug-kernel.md)"
	@echo "variables: PLATFORM=auto|vm|native  KDIR=<kernel build tree>  BUILD=<dir>"
	@echo "           KERNEL=debian|debug   the kernel the VM tests boot (debug: KASAN, lockdep, kmemleak)"

deps:
	@harness/deps

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

configure: $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

kmod:
	$(MAKE) -C kmod KDIR="$(KDIR)"

test: deps $(KERNEL_DEP)
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) $(CTEST_EXCLUDE) $(CTEST_ARGS)

unit: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) -L unit $(CTEST_ARGS)

vm-test: build $(KERNEL_DEP)
	ctest --test-dir $(BUILD) --output-on-failure -L vm $(CTEST_EXCLUDE) $(CTEST_ARGS)

vm-shell: build $(KERNEL_DEP)
	harness/vm shell

# The debug kernel and userblk.ko for it, in ${XDG_CACHE_HOME:-~/.cache}/userblk; reused when built.
debug-kernel: deps
	@harness/kernel/build --jobs $(JOBS)

# make bench TRANSPORT=copy [BACKEND=null,ram] [WORKLOADS=quick] [REPS=3] [PLATFORM=auto]
# (RESUME=results/runs/<run-id> finishes an interrupted run). See harness/bench --help.
BENCH_ARGS = --platform "$(PLATFORM)" --build "$(BUILD)" \
	$(if $(BACKEND),--backend "$(BACKEND)") $(if $(WORKLOADS),--workloads "$(WORKLOADS)") \
	$(if $(REPS),--reps "$(REPS)")

bench: deps build
	@harness/bench $(if $(RESUME),--resume "$(RESUME)",--transport "$(TRANSPORT)") $(BENCH_ARGS)

# The runs behind the paper (docs/reproduce.md): every transport and reference on the null
# backend with the paper set, then copy, pipe, splice, nbd and ublk forwarding to an NBD
# server with the paper-forward set, then make poll's matrix (polled QD1, docs/polling.md);
# 3 repetitions unless REPS says otherwise. About 95 minutes under TCG.
# `make reference RUNS="results/runs/<a> results/runs/<b> results/runs/<c>"` then publishes them.
.PHONY: sweep compare
SWEEP_ARGS = --platform "$(PLATFORM)" --build "$(BUILD)" --reps $(or $(REPS),3)
sweep: deps build
	@harness/bench --transport all --backend null --workloads paper $(SWEEP_ARGS)
	@harness/bench --transport copy,pipe,splice,nbd,ublk --backend forward --workloads paper-forward \
		$(SWEEP_ARGS)
	@harness/bench --transport "$(POLL_TRANSPORTS)" --backend "$(POLL_BACKEND)" \
		--workloads "$(POLL_WORKLOADS)" $(SWEEP_ARGS)

# make slots: what a pipe per slot costs at scale against splice's data fd per queue
# (docs/splice-and-pipe.md): both transports at each QUEUES:DEPTH of SLOTS, on ram, 4 KiB
# random reads 64 deep from 2 jobs, 5 repetitions unless REPS says otherwise, in a guest of 4
# CPUs (so that 4 queues are 4: the kernel cuts queues to the CPUs) whose daemons may open
# 65536 files (2 per pipe). plots/slots.py draws it.
.PHONY: slots
SLOTS ?= 1:64 2:128 4:256 4:1024
comma := ,
SLOT_TRANSPORTS = $(subst $(eval) ,$(comma),$(strip $(foreach t,pipe splice,$(foreach g,$(SLOTS),\
	$(t):queues=$(word 1,$(subst :, ,$(g))):depth=$(word 2,$(subst :, ,$(g)))))))
slots: deps build
	@harness/bench --transport "$(SLOT_TRANSPORTS)" --backend ram --workloads randread-4k-qd64-j2 \
		--smp 4 --nofile 65536 --no-precondition --platform "$(PLATFORM)" --build "$(BUILD)" \
		--reps $(or $(REPS),5)

# make lend: lending against copying (docs/splice-and-pipe.md): 64 KiB and 1 MiB sequential
# writes at QD4 forwarded to nbdkit over TCP and written to an O_DIRECT file, for the copying
# transports, ublk and the two lend variants, 5 repetitions unless REPS says otherwise.
# LEND_BACKENDS and LEND_WORKLOADS (a set or a list of workloads) change what it runs: the
# buffered file against the O_DIRECT one, with READs, is
#   make lend LEND_BACKENDS=file,file:direct=1 LEND_WORKLOADS=write-1m-qd4,read-1m-qd4
.PHONY: lend
LEND_TRANSPORTS ?= copy,ring,pipe,pipe:lend=on,splice,splice:lend=on,ublk
LEND_BACKENDS ?= forward,file:direct=1
LEND_WORKLOADS ?= lend
lend: deps build
	@harness/bench --transport "$(LEND_TRANSPORTS)" --backend "$(LEND_BACKENDS)" \
		--workloads "$(LEND_WORKLOADS)" --runtime 4 --ramp 1 --platform "$(PLATFORM)" \
		--build "$(BUILD)" --reps $(or $(REPS),5)

# make poll: polled completions (docs/polling.md): 4 KiB random I/O at QD1, plain and polled
# (fio hipri), and polled reads at QD32 and QD128, for ring, ring busy-polling (--poll-us),
# ring spinning without system calls (--spin-us), the fully polled ring (poll queues and a
# spinning daemon), ublk and null_blk; 5 repetitions unless REPS says otherwise. The backend
# is null:fill=none, whose reads leave the buffer as it is, as null_blk's do: the rows measure
# the transport, not the zero-fill (7.5 us of a rep stosb per 4 KiB under TCG).
.PHONY: poll
POLL_TRANSPORTS ?= ring,ring:poll-us=50,ring:spin-us=2000,ring:poll-queues=1:spin-us=2000,ublk,null_blk
POLL_WORKLOADS ?= poll
POLL_BACKEND ?= null:fill=none
poll: deps build
	@harness/bench --transport "$(POLL_TRANSPORTS)" --backend "$(POLL_BACKEND)" \
		--workloads "$(POLL_WORKLOADS)" --platform "$(PLATFORM)" \
		--build "$(BUILD)" --reps $(or $(REPS),5)

# make compare A=results/runs/<run-id> B=results/runs/<run-id>
compare:
	@$(PY) harness/harness compare "$(A)" "$(B)"

checkpatch:
	$(MAKE) -C kmod KDIR="$(KDIR)" checkpatch

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp' '*.h' | grep -v '^kmod/')

clean:
	rm -rf $(BUILD)
	-$(MAKE) -C kmod KDIR="$(KDIR)" clean

# make micro [PLATFORM=vm] [MICRO_ARGS="--filter wakeup"]: Google Benchmark microbenchmarks of the
# primitives (docs/micro.md) into results/micro/<run-id>.json; on the host unless PLATFORM=vm.
.PHONY: micro figures
micro: deps configure
	cmake --build $(BUILD) -j $(JOBS) --target userblk_micro
	@$(PY) micro/micro-run --platform "$(PLATFORM)" --build "$(BUILD)" $(MICRO_ARGS)

# Every plots/*.py (helpers are plots/_*.py), run as the module plots.NAME from the top of the
# tree, draws its figure into paper/figures/ from a results
# directory alone (RESULTS, default results/reference: the committed runs behind the paper; a
# run of make bench works too); a script whose results are missing says so and exits 77, and is
# skipped. Same input, byte-identical output.
RESULTS ?= results/reference
FIGURES ?= $(sort $(filter-out plots/_%,$(wildcard plots/*.py)))
figures:
	@mkdir -p paper/figures
	@for f in $(FIGURES); do \
		$(PY) -m plots.$$(basename $$f .py) "$(RESULTS)" --out paper/figures; rc=$$?; \
		if [ $$rc -eq 77 ]; then echo "figures: $$f skipped"; \
		elif [ $$rc -ne 0 ]; then echo "figures: $$f failed (status $$rc)"; exit $$rc; fi; \
	done

# make reference RUNS="results/runs/<paper> results/runs/<forward>"
#   [MICRO="results/micro/<host>.json results/micro/<vm>.json"]: publish finished runs as
#   results/reference/ (docs/reproduce.md).
.PHONY: reference paper
reference:
	@test -n "$(RUNS)" || { echo 'usage: make reference RUNS="<run dirs>" [MICRO="<files>"]' >&2; \
		exit 2; }
	@$(PY) harness/harness publish $(RUNS) $(foreach m,$(MICRO),--micro $(m))

# The paper: the figures, then the quoted numbers checked against RESULTS (paper/numbers.tex,
# see docs/reproduce.md; `make numbers` rewrites it from RESULTS), then LaTeX (latexmk,
# pdflatex) in paper/build/; the PDF is paper/paper.pdf.
.PHONY: numbers
numbers:
	@$(PY) -m paper.macros "$(RESULTS)" --write paper/numbers.tex

paper: deps figures
	@$(PY) -m paper.macros "$(RESULTS)" --check paper/numbers.tex || { echo "paper: the \
	numbers of the text do not match $(RESULTS): 'make numbers RESULTS=$(RESULTS)', then reread \
	the sentences quoting the keys above" >&2; exit 1; }
	@cd paper && latexmk -gg -pdf -interaction=nonstopmode -halt-on-error -file-line-error \
		-outdir=build paper.tex > build.log 2>&1 || { tail -40 build.log; \
		echo "paper: LaTeX failed; the whole log is paper/build.log" >&2; exit 1; }
	@cp paper/build/paper.pdf paper/paper.pdf
	@echo "paper: paper/paper.pdf (LaTeX's log: paper/build/paper.log)"

# make fuzz ITER=20000 [TRANSPORT=copy] [SEED=s] [FUZZ_SECONDS=3000] [CONCURRENT=1]: the ioctl
# and queue-fd fuzzer (tests/vm/fuzz.cpp; CONCURRENT=1: the control path from 8 threads at once,
# tests/vm/race_fuzz.cpp, ITER control operations) on the platform, longer than the vm_fuzz and
# vm_race_fuzz tests; every transport of userblk.ko unless TRANSPORT names one. A failure prints the seed
# that reruns it.
.PHONY: fuzz
ITER ?= 20000
FUZZ_SECONDS ?= 3000
fuzz: configure $(KERNEL_DEP)
	cmake --build $(BUILD) -j $(JOBS) --target $(if $(CONCURRENT),userblk_race_fuzz,userblk_fuzz)
	@harness/platform run --quiet --timeout $$(( 4 * ($(FUZZ_SECONDS) + 900) )) \
		--env USERBLK_BUILD=$(abspath $(BUILD)) -- \
		$(PY) tests/vm/fuzz.py $(foreach t,$(subst $(comma), ,$(TRANSPORT)),--transport $(t)) \
		--iterations $(ITER) --seconds $(FUZZ_SECONDS) $(if $(SEED),--seed $(SEED)) \
		$(if $(CONCURRENT),--concurrent)
