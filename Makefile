# sked - one Makefile for everything; `make help` lists the targets.
#
# Release binaries go to bin/, sanitizer (address + undefined) binaries to
# build/asan/bin/; `make test` builds and tests the sanitizer build.

CC      ?= gcc
PKGS    := libzmq libczmq libmongoc-1.0 libbson-1.0 jansson libjwt libh2o-evloop libcurl zlib
# -isystem keeps the libraries' own headers out of -Werror.
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null | sed 's/-I/-isystem /g')
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lssl -lcrypto -lm
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
DEFS    := -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -DH2O_USE_LIBUV=0
BASE_CFLAGS := -std=c11 $(WARN) $(DEFS) -I. $(PKG_CFLAGS) -g -MMD -MP
REL_CFLAGS  := $(BASE_CFLAGS) -O2
SAN_FLAGS   := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
ASAN_CFLAGS := $(BASE_CFLAGS) -O1 $(SAN_FLAGS)

COMMON_SRC  := $(wildcard common/*.c) $(wildcard proto/*.c)
COMMON_SRC  := $(filter-out common/cron_cli.c,$(COMMON_SRC))
GATEWAY_SRC := $(wildcard gateway/*.c)
MASTER_SRC  := $(wildcard master/*.c)
WORKER_SRC  := $(wildcard worker/*.c)
CRON_SRC    := $(wildcard common/cron_cli.c)
UNIT_SRC    := $(wildcard tests/unit/*.c)

PROGS := sked-gateway sked-master sked-worker $(if $(CRON_SRC),sked-cron)

obj = $(patsubst %.c,$(1)/obj/%.o,$(2))

# $(1) = build dir, $(2) = binary dir, $(3) = cflags, $(4) = ldflags
define build_rules
$(1)/obj/%.o: %.c
	@mkdir -p $$(dir $$@)
	@echo "  CC    $$@"
	@$$(CC) $(3) -c $$< -o $$@
$(1)/libsked-common.a: $(call obj,$(1),$(COMMON_SRC))
	@echo "  AR    $$@"
	@rm -f $$@ && ar rcs $$@ $$^
$(2)/sked-%: $(1)/libsked-common.a
	@mkdir -p $$(dir $$@)
	@echo "  LINK  $$@"
	@$$(CC) $(4) -Wl,--as-needed -o $$@ $$(filter %.o,$$^) $(1)/libsked-common.a $$(PKG_LIBS)
$(2)/sked-gateway: $(call obj,$(1),$(GATEWAY_SRC))
$(2)/sked-master: $(call obj,$(1),$(MASTER_SRC))
$(2)/sked-worker: $(call obj,$(1),$(WORKER_SRC))
$(2)/sked-cron: $(call obj,$(1),$(CRON_SRC))
$(2)/unit-tests: $(call obj,$(1),$(UNIT_SRC) $(COMMON_SRC) $(filter-out gateway/main.c,$(GATEWAY_SRC)))
	@mkdir -p $$(dir $$@)
	@echo "  LINK  $$@"
	@$$(CC) $(4) -o $$@ $$^ $$(PKG_LIBS)
endef

$(eval $(call build_rules,build/release,bin,$(REL_CFLAGS),))
$(eval $(call build_rules,build/asan,build/asan/bin,$(ASAN_CFLAGS),$(SAN_FLAGS)))

VENV := .venv
export ASAN_OPTIONS  ?= detect_leaks=1:abort_on_error=0:exitcode=66
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS  ?= suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0

.PHONY: all build asan deps run test unit integration bench bench-deps bench-peer bench-lag check-invariants clean help

all: build

build: $(addprefix bin/,$(PROGS))                        ## release binaries in bin/

asan: $(addprefix build/asan/bin/,$(PROGS) unit-tests)   ## sanitizer binaries in build/asan/bin/

deps:                                                    ## install Debian packages, FerretDB, Python venv
	@deploy/deps.sh

run: deps build                                          ## start a local cluster (store, gateway, 2 masters, 2 workers)
	@deploy/local-cluster.sh

unit: asan                                               ## C unit tests (TAP) under ASan/UBSan
	build/asan/bin/unit-tests

integration: deps asan                                   ## pytest against FerretDB and the real binaries
	SKED_BIN_DIR=$(CURDIR)/build/asan/bin $(VENV)/bin/python -m pytest -v tests/integration

test: deps                                               ## everything `make test` checks: unit + integration + chaos
	$(MAKE) unit
	$(MAKE) integration
	$(MAKE) chaos

bench: bench-cron bench-peer                             ## benchmarks: cron engine, then sked vs Agenda (docs/BENCHMARKS.md)

# Node.js (Agenda, the peer) and matplotlib are needed by the benchmarks
# only; `make test` needs neither.
bench-deps: deps                                         ## Agenda (npm ci in tests/bench/agenda) and matplotlib for the benchmarks
	@command -v node >/dev/null || { echo "bench-deps: Node.js 20 is needed (apt-get install nodejs npm)" >&2; exit 1; }
	cd tests/bench/agenda && npm ci --no-audit --no-fund --loglevel=error
	$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/bench/requirements.txt

BENCH_TIMEOUT ?= 1500
bench-peer: bench-deps build                             ## five workloads, sked vs Agenda on one FerretDB, one table (BENCH_* sizes)
	timeout -s INT -k 30 $(BENCH_TIMEOUT) $(VENV)/bin/python tests/bench/run.py

bench-lag: deps build                                    ## fire lag of N interval triggers (BENCH_TRIGGERS, BENCH_SECONDS)
	$(VENV)/bin/python tests/bench/fire_lag.py

check-invariants: deps                                   ## scan SKED_MONGO_URI's jobs: duplicates, gaps, stuck jobs
	$(VENV)/bin/python tests/tools/check_invariants.py "$${SKED_MONGO_URI:-mongodb://127.0.0.1:27018/sked}"

clean:                                                   ## remove build output
	rm -rf build bin

help:                                                    ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

-include $(shell find build -name '*.d' 2>/dev/null)

# --- cron engine: fuzz and bench ---
# Built straight from the engine's sources (cron.c, tz.c and what they use),
# so neither target depends on the rest of the tree compiling.
FUZZ_SECONDS ?= 60
CRON_ENGINE_SRC := common/cron.c common/tz.c common/err.c common/clock.c

.PHONY: fuzz-cron bench-cron

fuzz-cron:                                               ## libFuzzer on cron_new/cron_next and TZif parsing (FUZZ_SECONDS=60)
	@command -v clang >/dev/null 2>&1 || apt-get install -y clang
	@mkdir -p build/fuzz/cron-corpus build/fuzz/crashes
	@for z in America/New_York Australia/Lord_Howe Europe/Dublin Asia/Tokyo; do \
	    f=build/fuzz/cron-corpus/seed-tzif-$$(echo $$z | tr / -); \
	    [ -f $$f ] || { printf '\300' | cat - /usr/share/zoneinfo/$$z > $$f; } 2>/dev/null || true; \
	done
	@i=0; for e in '*/15 2 * * *' '0 0 13 * 5' '30 1 * * 1-5' '0 */5 1,15 JAN-JUN *' '@weekly'; do \
	    i=$$((i+1)); f=build/fuzz/cron-corpus/seed-cron-$$i; \
	    [ -f $$f ] || printf '\002\000\100\270\224\221\001\000\000%s' "$$e" > $$f; \
	done
	clang -std=c11 -g -O1 $(WARN) $(DEFS) -I. -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=all tests/fuzz/fuzz_cron.c $(CRON_ENGINE_SRC) -o build/fuzz/fuzz-cron
	build/fuzz/fuzz-cron -max_total_time=$(FUZZ_SECONDS) -timeout=10 -max_len=8192 \
	    -artifact_prefix=build/fuzz/crashes/ -print_final_stats=1 \
	    build/fuzz/cron-corpus

bench-cron:                                              ## cron_next() computations per second, -O2, no sanitizers
	@mkdir -p build/bench
	$(CC) -std=c11 -O2 $(WARN) $(DEFS) -I. tests/bench/bench_cron.c $(CRON_ENGINE_SRC) \
	    -o build/bench/bench-cron
	build/bench/bench-cron

# --- multi-host cluster and chaos ---
# A cluster of network namespaces (deploy/netns-cluster.sh, needs root) and
# fault scenarios under a steady load (tests/chaos, docs/CHAOS.md). `make
# test` runs `chaos` last (skipped without root); `soak` is the long one.
# The suite runs `down` itself; the recipe runs it again in case pytest was
# stopped by the timeout.
CHAOS_TIMEOUT ?= 900
SOAK_SECONDS  ?= 1800
CHAOS_DIR     ?= $(CURDIR)/var/chaos
CHAOS_RUN = CHAOS_DIR=$(CHAOS_DIR) SKED_BIN_DIR=$${SKED_BIN_DIR:-$(CURDIR)/build/asan/bin}

.PHONY: chaos soak

chaos: deps asan                                         ## chaos scenarios on a netns cluster (root, ~2.5 min, at most CHAOS_TIMEOUT s)
	@rc=0; $(CHAOS_RUN) timeout -s INT -k 60 $(CHAOS_TIMEOUT) \
	    $(VENV)/bin/python -m pytest -v -p no:cacheprovider tests/chaos/test_chaos.py || rc=$$?; \
	SKED_CLUSTER_DIR=$(CHAOS_DIR) deploy/netns-cluster.sh down >/dev/null 2>&1; \
	echo "table: $(CHAOS_DIR)/report.txt  logs: $(CHAOS_DIR)/log/"; exit $$rc

soak: deps asan                                          ## random chaos scenarios for SOAK_SECONDS (default 1800) on a netns cluster
	@rc=0; $(CHAOS_RUN) SOAK_SECONDS=$(SOAK_SECONDS) timeout -s INT -k 60 $$(( $(SOAK_SECONDS) + 600 )) \
	    $(VENV)/bin/python -m pytest -v -s -p no:cacheprovider tests/chaos/test_soak.py || rc=$$?; \
	SKED_CLUSTER_DIR=$(CHAOS_DIR) deploy/netns-cluster.sh down >/dev/null 2>&1; \
	echo "table: $(CHAOS_DIR)/report.txt  logs: $(CHAOS_DIR)/log/"; exit $$rc
