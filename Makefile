# SPDX-License-Identifier: MIT
# mailboxfs. `make` builds out/mailboxfs, out/mbx, libmailbox (.a and .so) and out/libmailbox_core.a;
# `make test` installs what is missing (as root), builds and runs every test;
# `make demo` mounts a filesystem and shows it working.
# Switches: DEBUG=1 (no optimisation), ASAN=1, UBSAN=1, TSAN=1.

CXX ?= g++
OUT ?= out
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/mailboxfs
VERSION := 0.1.0
# The ABI version: bump it when a public symbol changes incompatibly.
SOVERSION := 0
SONAME := libmailbox.so.$(SOVERSION)

CXXFLAGS ?= -O2
CXXFLAGS += -std=c++20 -g -Wall -Wextra -pthread -MMD -MP -Ilib -Ilib/include
LDFLAGS += -pthread
ifeq ($(DEBUG),1)
  CXXFLAGS += -O0
endif
ifeq ($(ASAN),1)
  CXXFLAGS += -fsanitize=address -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=address
endif
ifeq ($(UBSAN),1)
  CXXFLAGS += -fsanitize=undefined -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=undefined
endif
ifeq ($(TSAN),1)
  CXXFLAGS += -fsanitize=thread
  LDFLAGS += -fsanitize=thread
endif

FUSE_CFLAGS = $(shell pkg-config --cflags fuse3)
FUSE_LIBS = $(shell pkg-config --libs fuse3)
# The Redis backend's client (lib/redis), linked wherever the core is.
HIREDIS_LIBS = $(shell pkg-config --libs hiredis 2>/dev/null || echo -lhiredis)
GTEST_LIBS = $(shell pkg-config --libs gtest_main 2>/dev/null || echo -lgtest_main -lgtest)

# The daemon's core: base utilities, the shared segment protocol and the mailbox logic.
CORE_SRCS := $(wildcard lib/base/*.cc lib/shm/*.cc lib/redis/*.cc lib/core/*.cc)
CORE_OBJS := $(CORE_SRCS:%.cc=$(OUT)/%.o)
FUSE_SRCS := $(wildcard fusefs/*.cc)
FUSE_OBJS := $(FUSE_SRCS:%.cc=$(OUT)/%.o)
UNIT_SRCS := $(wildcard tests/unit/*.cc)
# The unit tests' own objects come from UNIT_OBJ_OUT (this build's by default).
# The sanitizer build links the normal build's (scripts/ci-sanitizers.sh):
# what it checks is the core, which it builds instrumented.
UNIT_OBJ_OUT ?= $(OUT)
UNIT_OBJS := $(UNIT_SRCS:%.cc=$(UNIT_OBJ_OUT)/%.o)
MOUNT_SRCS := $(wildcard tests/mount/*.cc)
MOUNT_OBJS := $(MOUNT_SRCS:%.cc=$(OUT)/%.o)
BENCH_SRCS := $(wildcard tests/bench/*.cc)
BENCH_OBJS := $(BENCH_SRCS:%.cc=$(OUT)/%.o)
# libmailbox, for programs: the client and the segment code it shares with the daemon.
# It includes the mq API (lib/mq, <mailbox/mqueue.h>); libmailbox-mq.so is the same with the preload's mq_*.
LIB_SRCS := $(wildcard lib/client/*.cc) lib/mq/mq.cc lib/mq/prio.cc lib/shm/segment.cc lib/base/log.cc
LIB_PIC_OBJS := $(LIB_SRCS:%.cc=$(OUT)/pic/%.o)
MBX_SRCS := $(wildcard tools/mbx/*.cc)
MBX_OBJS := $(MBX_SRCS:%.cc=$(OUT)/%.o)

.PHONY: all deps test-deps check test build-tests demo examples bench bench-uring clean format format-check install \
  install-python uninstall

all: $(OUT)/mailboxfs $(OUT)/mbx $(OUT)/libmailbox_core.a $(OUT)/libmailbox.a $(OUT)/$(SONAME) $(OUT)/mailbox.pc \
  $(OUT)/libmailbox-mq.so

$(OUT)/libmailbox_core.a: $(CORE_OBJS)
	ar rcs $@ $^

$(OUT)/libmailbox.a: $(LIB_SRCS:%.cc=$(OUT)/%.o)
	ar rcs $@ $^

# The shared library exports the C and C++ API only (lib/client/libmailbox.map);
# libmailbox.so.0 -> libmailbox.so.$(VERSION), and libmailbox.so for the linker.
$(OUT)/libmailbox.so.$(VERSION): $(LIB_PIC_OBJS) lib/client/libmailbox.map
	$(CXX) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=lib/client/libmailbox.map -Wl,-z,defs \
	  -o $@ $(LIB_PIC_OBJS) $(LDFLAGS)
$(OUT)/$(SONAME): $(OUT)/libmailbox.so.$(VERSION)
	ln -sf libmailbox.so.$(VERSION) $@
	ln -sf $(SONAME) $(OUT)/libmailbox.so

# The preload library (mailbox_mq(3)): libmailbox's code, linked in and kept
# local, and the mq_* calls (and close) it interposes, nothing else exported.
$(OUT)/libmailbox-mq.so: $(LIB_PIC_OBJS) $(OUT)/pic/lib/mq/preload.o lib/mq/preload.map
	$(CXX) -shared -Wl,-soname,libmailbox-mq.so -Wl,--version-script=lib/mq/preload.map -Wl,-z,defs \
	  -o $@ $(LIB_PIC_OBJS) $(OUT)/pic/lib/mq/preload.o $(LDFLAGS) -ldl

$(OUT)/pic/%.o: %.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -fPIC -c $< -o $@

# mbx, the command-line tool, links the shared library as any user program would.
$(OUT)/mbx: $(MBX_OBJS) $(OUT)/$(SONAME)
	$(CXX) -o $@ $(MBX_OBJS) -L$(OUT) -Wl,-rpath,'$$ORIGIN:$$ORIGIN/../lib' -lmailbox $(LDFLAGS)

# In-tree pkg-config file: PKG_CONFIG_PATH=$(OUT) pkg-config --cflags --libs mailbox
$(OUT)/mailbox.pc: Makefile
	@mkdir -p $(OUT)
	@printf '%s\n' 'libdir=$(abspath $(OUT))' 'includedir=$(CURDIR)/lib/include' 'Name: mailbox' \
	  'Description: libmailbox, the shared-memory fast path to mailboxfs mailboxes' \
	  'Version: $(VERSION)' 'Cflags: -I$${includedir}' 'Libs: -L$${libdir} -Wl,-rpath,$${libdir} -lmailbox' \
	  'Libs.private: -lstdc++ -pthread' > $@

# The examples build as a user's program would, through pkg-config.
examples: $(OUT)/$(SONAME) $(OUT)/mailbox.pc
	@mkdir -p $(OUT)/examples
	$(CXX) -std=c++20 -O2 -o $(OUT)/examples/producer_consumer docs/examples/producer_consumer.cpp \
	  $$(PKG_CONFIG_PATH=$(OUT) pkg-config --cflags --libs mailbox)

$(OUT)/mailboxfs: $(FUSE_OBJS) $(OUT)/libmailbox_core.a
	$(CXX) -o $@ $(FUSE_OBJS) $(OUT)/libmailbox_core.a $(LDFLAGS) $(FUSE_LIBS) $(HIREDIS_LIBS)

$(OUT)/fusefs/%.o: fusefs/%.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(FUSE_CFLAGS) -c $< -o $@

$(OUT)/%.o: %.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

# The suites' own code at -O0: gtest-heavy files are most of the build, and
# -O0 compiles them in about 60% of -O1's time (45% of -O2's); the tests wait
# on daemons and processes, not on their own code. What they test (the core,
# the daemon, libmailbox) stays at CXXFLAGS; the bench's code too. The suites
# link the code they test first: of an inline function both define, the
# linker keeps the first copy, which must be the optimised (or, in the
# sanitizer builds, instrumented) one.
$(UNIT_OBJS) $(MOUNT_OBJS): CXXFLAGS += -O0

# The unit tests also cover the daemon's command-line parser (fusefs/options.cc, libfuse's fuse_opt).
$(OUT)/unit_tests: $(UNIT_OBJS) $(OUT)/fusefs/options.o $(CORE_OBJS)
	$(CXX) -o $@ $(CORE_OBJS) $(OUT)/fusefs/options.o $(UNIT_OBJS) $(LDFLAGS) $(GTEST_LIBS) $(FUSE_LIBS) $(HIREDIS_LIBS)
$(OUT)/tests/unit/options_test.o: CXXFLAGS += $(FUSE_CFLAGS) -I.

# The ecosystem tests run the Python suite and `make install` from the source tree.
$(OUT)/tests/mount/ecosystem_test.o: CXXFLAGS += -DMAILBOXFS_SRCDIR='"$(CURDIR)"'

# The mount tests run the mq programs below as subprocesses (tests/mount/mq_conformance_test.cc).
$(OUT)/mount_tests: $(MOUNT_OBJS) $(LIB_SRCS:%.cc=$(OUT)/%.o) | $(OUT)/mq_conformance $(OUT)/mq_prodcons
	$(CXX) -o $@ $(LIB_SRCS:%.cc=$(OUT)/%.o) $(MOUNT_OBJS) $(LDFLAGS) $(GTEST_LIBS)

# The mq conformance suite and an unmodified mq program (tests/mq): plain
# <mqueue.h> programs that link nothing of mailboxfs (-lrt only), so the same
# binaries run on the kernel's queues and under LD_PRELOAD=libmailbox-mq.so.
# No sanitizer: a sanitizer runtime must come before any preload.
MQ_CXXFLAGS = $(filter-out -Ilib -Ilib/include -fsanitize=%,$(CXXFLAGS))
MQ_LDFLAGS = $(filter-out -fsanitize=%,$(LDFLAGS))
GTEST_NOMAIN_LIBS = $(shell pkg-config --libs gtest 2>/dev/null || echo -lgtest)
$(OUT)/tests/mq/%.o: tests/mq/%.cc
	@mkdir -p $(dir $@)
	$(CXX) $(MQ_CXXFLAGS) -c $< -o $@
$(OUT)/mq_conformance: $(OUT)/tests/mq/conformance.o
	$(CXX) -o $@ $^ $(MQ_LDFLAGS) $(GTEST_NOMAIN_LIBS) -lrt
$(OUT)/mq_prodcons: tests/mq/prodcons.c
	@mkdir -p $(OUT)
	$(CC) -std=c11 -O2 -g -Wall -Wextra -pthread -MMD -MP -MF $@.d -o $@ $< -pthread -lrt
-include $(OUT)/tests/mq/conformance.d $(OUT)/mq_prodcons.d

# Boost.Interprocess is header-only; its message_queue needs -lrt -pthread.
$(OUT)/bench: $(BENCH_OBJS) $(OUT)/libmailbox.a
	$(CXX) -o $@ $(BENCH_OBJS) $(OUT)/libmailbox.a $(LDFLAGS) -lrt $(HIREDIS_LIBS)

# The FUSE floor: a minimal FUSE queue daemon, built only for the benchmark.
$(OUT)/bench-floor: $(OUT)/tests/bench/floor/floor.o
	$(CXX) -o $@ $^ $(LDFLAGS) $(FUSE_LIBS)

$(OUT)/tests/bench/floor/%.o: tests/bench/floor/%.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(FUSE_CFLAGS) -c $< -o $@

# The FUSE-over-io_uring probe (tests/bench/uring/): its own tiny filesystem, no libfuse,
# raw io_uring syscalls; not part of build-tests or make test.
$(OUT)/bench-uring: $(OUT)/tests/bench/uring/probe.o
	$(CXX) -o $@ $^ $(LDFLAGS)

build-tests: all examples $(OUT)/unit_tests $(OUT)/mount_tests $(OUT)/bench $(OUT)/bench-floor $(OUT)/mq_conformance \
  $(OUT)/mq_prodcons

deps:
	@scripts/deps.sh run

test-deps:
	@scripts/deps.sh test

# Installs what is missing, builds, installs into $(OUT)/destdir (which the
# ecosystem tests use), runs unit and mount tests, then the mount tests again
# under CPU load (one nice-19 busy loop per CPU); the last line is
# "N passed, N failed, N skipped" over all runs. JUnit XML in $(OUT)/test-results/.
test check: test-deps
	@$(MAKE) --no-print-directory build-tests
	@rm -rf $(OUT)/destdir
	@$(MAKE) --no-print-directory -s install install-python DESTDIR=$(abspath $(OUT))/destdir >/dev/null
	@MAILBOXFS_DESTDIR=$(abspath $(OUT))/destdir MAILBOXFS_PREFIX=$(PREFIX) \
	  tests/run.sh $(OUT) --mount-again-under-load

# Every mechanism side by side (see docs/benchmarks.md); QUICK=1 for a smoke run,
# ONLY=libmailbox,ref_ring (and REPS=N) for a partial run written under $(OUT).
# Installs its own peers (Boost, gnuplot) when missing.
bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all $(OUT)/bench $(OUT)/bench-floor
	@tests/bench/run.sh $(OUT) $(if $(filter 1,$(QUICK)),--quick) $(if $(ONLY),--only $(ONLY)) \
	  $(if $(REPS),--reps $(REPS))

# Classic /dev/fuse against FUSE_OVER_IO_URING, interleaved (docs/benchmarks.md);
# needs root: sets /sys/module/fuse/parameters/enable_uring for the run and restores it.
# REPS=N, ARGS='--rtt N --msgs N --modes classic,uring'.
bench-uring: $(OUT)/bench-uring
	@tests/bench/uring/run.sh $(OUT)/bench-uring $(if $(REPS),--reps $(REPS)) $(ARGS)

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh $(OUT)/mailboxfs

# Installs under $(DESTDIR)$(PREFIX). Without DESTDIR, ldconfig refreshes the
# loader's cache; with it, only the soname link is made (packaging convention).
install: all
	install -D -m 0755 $(OUT)/mailboxfs $(DESTDIR)$(BINDIR)/mailboxfs
	install -D -m 0755 $(OUT)/mbx $(DESTDIR)$(BINDIR)/mbx
	install -D -m 0644 docs/mailboxfs.8 $(DESTDIR)$(MANDIR)/man8/mailboxfs.8
	install -D -m 0644 docs/mailboxfs.7 $(DESTDIR)$(MANDIR)/man7/mailboxfs.7
	install -D -m 0644 docs/libmailbox.3 $(DESTDIR)$(MANDIR)/man3/libmailbox.3
	install -D -m 0644 docs/mailbox_mq.3 $(DESTDIR)$(MANDIR)/man3/mailbox_mq.3
	install -D -m 0755 $(OUT)/libmailbox-mq.so $(DESTDIR)$(LIBDIR)/libmailbox-mq.so
	install -D -m 0644 docs/mbx.1 $(DESTDIR)$(MANDIR)/man1/mbx.1
	install -D -m 0644 $(OUT)/libmailbox.a $(DESTDIR)$(LIBDIR)/libmailbox.a
	install -D -m 0755 $(OUT)/libmailbox.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmailbox.so.$(VERSION)
	ln -sf libmailbox.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libmailbox.so
	install -D -m 0644 -t $(DESTDIR)$(INCLUDEDIR)/mailbox lib/include/mailbox/*.h lib/include/mailbox/*.hpp
	install -D -m 0644 -t $(DESTDIR)$(DOCDIR)/systemd docs/systemd/*
	install -D -m 0644 LICENSE $(DESTDIR)$(DOCDIR)/LICENSE
	@mkdir -p $(DESTDIR)$(LIBDIR)/pkgconfig
	@printf '%s\n' 'prefix=$(PREFIX)' 'exec_prefix=$${prefix}' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' \
	  'Name: mailbox' 'Description: libmailbox, the shared-memory fast path to mailboxfs mailboxes' \
	  'Version: $(VERSION)' 'Cflags: -I$${includedir}' 'Libs: -L$${libdir} -lmailbox' \
	  'Libs.private: -lstdc++ -pthread' > $(DESTDIR)$(LIBDIR)/pkgconfig/mailbox.pc
	@if [ -z "$(DESTDIR)" ]; then ldconfig; else ldconfig -n $(DESTDIR)$(LIBDIR); fi

# The Python package (import mailboxfs), into the directory under $(PREFIX) that
# python3 searches (Debian: lib/python3.X/dist-packages); its build backend
# needs only the standard library, so this works offline.
ifeq ($(origin PYTHONDIR),undefined)
# Computed once, on first use (python3 may be slow to start).
PYTHONDIR = $(eval PYTHONDIR := $(shell python3 -c 'import sys, sysconfig; \
  p = [d for d in sys.path if d.startswith("$(PREFIX)/lib/") and d.endswith("-packages")]; \
  print(p[0] if p else sysconfig.get_path("purelib", "posix_prefix", {"base": "$(PREFIX)"}))' 2>/dev/null))$(PYTHONDIR)
endif
install-python:
	cd python && PIP_ROOT_USER_ACTION=ignore python3 -m pip install --no-build-isolation --no-deps --no-index \
	  --no-cache-dir --disable-pip-version-check -q --upgrade --target $(DESTDIR)$(PYTHONDIR) .

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/mailboxfs $(DESTDIR)$(BINDIR)/mbx $(DESTDIR)$(MANDIR)/man8/mailboxfs.8 \
	  $(DESTDIR)$(MANDIR)/man7/mailboxfs.7 $(DESTDIR)$(MANDIR)/man3/libmailbox.3 $(DESTDIR)$(MANDIR)/man1/mbx.1 \
	  $(DESTDIR)$(MANDIR)/man3/mailbox_mq.3 $(DESTDIR)$(LIBDIR)/libmailbox-mq.so \
	  $(DESTDIR)$(LIBDIR)/libmailbox.a $(DESTDIR)$(LIBDIR)/libmailbox.so.$(VERSION) \
	  $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libmailbox.so $(DESTDIR)$(LIBDIR)/pkgconfig/mailbox.pc
	rm -rf $(DESTDIR)$(INCLUDEDIR)/mailbox $(DESTDIR)$(DOCDIR) $(DESTDIR)$(PYTHONDIR)/mailboxfs \
	  $(DESTDIR)$(PYTHONDIR)/mailboxfs-*.dist-info
	@if [ -z "$(DESTDIR)" ]; then ldconfig; fi

# Every C/C++ source and header git knows or would add (scripts/format.sh), with .clang-format.
# format-check changes nothing: it names the files format would change and then fails.
format:
	@scripts/format.sh

format-check:
	@scripts/format.sh --check

clean:
	rm -rf $(OUT)

-include $(CORE_OBJS:.o=.d) $(FUSE_OBJS:.o=.d) $(UNIT_OBJS:.o=.d) $(MOUNT_OBJS:.o=.d) $(BENCH_OBJS:.o=.d) \
  $(LIB_SRCS:%.cc=$(OUT)/%.d) $(LIB_PIC_OBJS:.o=.d) $(MBX_OBJS:.o=.d) $(OUT)/tests/bench/floor/floor.d \
  $(OUT)/tests/bench/uring/probe.d $(OUT)/pic/lib/mq/preload.d

# ---- Reliability: fuzzing, sanitizers, soak (docs/reliability.md) ----------
# libFuzzer targets, built with clang under ASan+UBSan in $(FUZZ_OUT).
# `make fuzz` runs each for FUZZ_SECONDS (default 60), `make fuzz-smoke` for
# 10 s (CI); both start from tests/fuzz/corpus/<target>/ and keep what they
# find in $(FUZZ_OUT)/corpus/<target>/.
FUZZ_CXX ?= clang++
FUZZ_OUT ?= out-fuzz
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -std=c++20 -O1 -g -pthread -Ilib -Ilib/include -fno-omit-frame-pointer \
  -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_TARGETS := $(patsubst tests/fuzz/%.cc,%,$(wildcard tests/fuzz/*_fuzz.cc))
FUZZ_CORE_OBJS := $(CORE_SRCS:%.cc=$(FUZZ_OUT)/%.o)

$(FUZZ_OUT)/lib/%.o: lib/%.cc
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_OUT)/fusefs/%.o: fusefs/%.cc
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) $(FUSE_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_OUT)/%_fuzz: tests/fuzz/%_fuzz.cc $(FUZZ_CORE_OBJS)
	$(FUZZ_CXX) $(FUZZ_FLAGS) $(FUSE_CFLAGS) -fsanitize=fuzzer -MMD -MP -MF $@.d $< $(filter %.o,$^) -o $@ $(FUSE_LIBS) $(HIREDIS_LIBS)

# options_fuzz runs the daemon's own command-line parser.
$(FUZZ_OUT)/options_fuzz: $(FUZZ_OUT)/fusefs/options.o
$(FUZZ_OUT)/options_fuzz: FUZZ_FLAGS += -I.

# The core objects are named only by the pattern rule above, which makes
# them intermediate: without this, make deletes them once the targets are
# linked, and CI's fuzz-smoke compiled them all again after its background build.
.SECONDARY: $(FUZZ_CORE_OBJS)

build-fuzz: $(addprefix $(FUZZ_OUT)/,$(FUZZ_TARGETS))

fuzz: build-fuzz
	@scripts/fuzz.sh $(FUZZ_OUT) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The same seed each time: from a clean out-fuzz (CI's clone) the same input
# sequence, cut wherever the 10 s end; a smoke test, not a search (make fuzz).
fuzz-smoke: build-fuzz
	@FUZZ_SEED=1 scripts/fuzz.sh $(FUZZ_OUT) 10 $(FUZZ_TARGETS)

# The unit tests that run threads and processes against each other, alone
# (built with TSan by sanitize-check, which need not build the rest).
CONCURRENCY_SRCS := $(sort $(wildcard tests/unit/*stress*.cc) tests/unit/doorbell_test.cc \
  tests/unit/mailbox_wait_test.cc tests/unit/segment_process_test.cc)
$(OUT)/concurrency_tests: $(CORE_OBJS) $(CONCURRENCY_SRCS:%.cc=$(OUT)/%.o)
	$(CXX) -o $@ $^ $(LDFLAGS) $(GTEST_LIBS) $(HIREDIS_LIBS)

# The unit and mount suites under ASan+UBSan (out-asan), the concurrency
# tests under TSan (out-tsan); ends with "N passed, N failed, N skipped".
sanitize-check:
	@scripts/ci-sanitizers.sh

# Random traffic over both paths with kills, stops, daemon restarts and
# (CORRUPT=1) a scribbled sacrificial mailbox, (HEAD=1) `head -n 1` readers
# of the line mailbox, for MINUTES (default 1); SEED=N replays a run.
MINUTES ?= 1
soak: all $(OUT)/soak_peer
	@python3 tests/soak/soak.py --bin $(OUT) --minutes $(MINUTES) $(if $(SEED),--seed $(SEED)) \
	  $(if $(filter 1,$(CORRUPT)),--corrupt) $(if $(filter 1,$(HEAD)),--head-readers)

$(OUT)/soak_peer: $(OUT)/tests/soak/soak_peer.o $(OUT)/libmailbox.a
	$(CXX) -o $@ $^ $(LDFLAGS)

# Clang's lock checker over the daemon and the library: every GUARDED_BY
# field is touched with its mutex held, every REQUIRES function called with it.
TSA_CXX ?= clang++
TSA_SRCS := $(CORE_SRCS) $(LIB_SRCS) lib/mq/preload.cc $(FUSE_SRCS)
thread-safety:
	@printf '%s\n' $(TSA_SRCS) | xargs -P "$$(nproc)" -n 4 $(TSA_CXX) -std=c++20 -fsyntax-only -Wthread-safety \
	  -Wthread-safety-beta -Werror -Ilib -Ilib/include $(FUSE_CFLAGS) && \
	  echo "thread-safety: $(words $(TSA_SRCS)) files clean"

.PHONY: build-fuzz fuzz fuzz-smoke sanitize-check soak thread-safety
-include $(FUZZ_CORE_OBJS:.o=.d) $(FUZZ_OUT)/fusefs/options.d $(addsuffix .d,$(addprefix $(FUZZ_OUT)/,$(FUZZ_TARGETS))) \
  $(OUT)/tests/soak/soak_peer.d
