# userblk: the front door. `make help` lists the targets.
SHELL     := /bin/bash
PY        := /usr/bin/python3
BUILD     ?= build
PLATFORM  ?= auto
JOBS      ?= $(shell nproc)
# The kernel tree userblk.ko is built against: the VM kernel's headers, or the
# running kernel's when the platform is native.
KDIR      ?= $(shell $(PY) harness/platform info --platform $(PLATFORM) --get kdir)
CMAKE_FLAGS ?= -DUSERBLK_WERROR=$(if $(CI),ON,OFF)
CTEST_ARGS ?=

export PLATFORM

.PHONY: help deps build configure kmod test unit vm-test vm-shell bench checkpatch format clean

help:
	@echo "make deps        install the Debian packages in deps/debian-packages.txt (idempotent)"
	@echo "make build       build the user space (CMake, into $(BUILD)/) and kmod/userblk.ko"
	@echo "make test        deps + build + every test (unit and kernel-in-the-loop), via ctest"
	@echo "make unit        only the user-space unit tests"
	@echo "make vm-test     only the kernel-in-the-loop tests"
	@echo "make vm-shell    an interactive shell in the test VM, userblk.ko in \$$USERBLK_KMOD_DIR"
	@echo "make bench TRANSPORT=<name>   benchmark a transport (see README.md)"
	@echo "make sweep       every transport, the paper workload set"
	@echo "make compare A=<run> B=<run>   per-cell ratios of two runs"
	@echo "make micro       microbenchmarks of the primitives into results/micro/ (PLATFORM=vm: in the VM)"
	@echo "make figures     every figure of plots/ into paper/figures/, from results/"
	@echo "make checkpatch  the kernel style check on kmod/"
	@echo "variables: PLATFORM=auto|vm|native  KDIR=<kernel build tree>  BUILD=<dir>"

deps:
	@harness/deps

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

configure: $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

kmod:
	$(MAKE) -C kmod KDIR="$(KDIR)"

test: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

unit: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) -L unit $(CTEST_ARGS)

vm-test: build
	ctest --test-dir $(BUILD) --output-on-failure -L vm $(CTEST_ARGS)

vm-shell: build
	harness/vm shell

# make bench TRANSPORT=copy [BACKEND=null,ram] [WORKLOADS=quick] [REPS=3] [PLATFORM=auto]
# (RESUME=results/runs/<run-id> finishes an interrupted run). See harness/bench --help.
BENCH_ARGS = --platform "$(PLATFORM)" --build "$(BUILD)" \
	$(if $(BACKEND),--backend "$(BACKEND)") $(if $(WORKLOADS),--workloads "$(WORKLOADS)") \
	$(if $(REPS),--reps "$(REPS)")

bench: deps build
	@harness/bench $(if $(RESUME),--resume "$(RESUME)",--transport "$(TRANSPORT)") $(BENCH_ARGS)

# Every transport, the paper set, 5 repetitions unless REPS says otherwise.
.PHONY: sweep compare
sweep: deps build
	@harness/bench --transport all $(BENCH_ARGS) $(if $(WORKLOADS),,--workloads paper) \
		$(if $(REPS),,--reps 5)

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
	@$(PY) transports/micro/micro-run --platform "$(PLATFORM)" --build "$(BUILD)" $(MICRO_ARGS)

# Every plots/*.py (helpers are plots/_*.py) draws its figure into paper/figures/ from results/
# alone; a script whose results are missing says so and exits 77, and is skipped.
FIGURES ?= $(sort $(filter-out plots/_%,$(wildcard plots/*.py)))
figures:
	@mkdir -p paper/figures
	@for f in $(FIGURES); do \
		$(PY) $$f --out paper/figures; rc=$$?; \
		if [ $$rc -eq 77 ]; then echo "figures: $$f skipped"; \
		elif [ $$rc -ne 0 ]; then echo "figures: $$f failed (status $$rc)"; exit $$rc; fi; \
	done
