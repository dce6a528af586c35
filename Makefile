# mailboxfs. `make` builds out/mailboxfs and out/libmailbox_core.a;
# `make test` installs what is missing (as root), builds and runs every test;
# `make demo` mounts a filesystem and shows it working.
# Switches: DEBUG=1 (no optimisation), ASAN=1, UBSAN=1, TSAN=1.

CXX ?= g++
OUT ?= out
PREFIX ?= /usr/local
VERSION := 0.1.0

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
GTEST_LIBS = $(shell pkg-config --libs gtest_main 2>/dev/null || echo -lgtest_main -lgtest)

CORE_SRCS := $(wildcard lib/*.cc)
CORE_OBJS := $(CORE_SRCS:%.cc=$(OUT)/%.o)
FUSE_SRCS := $(wildcard fusefs/*.cc)
FUSE_OBJS := $(FUSE_SRCS:%.cc=$(OUT)/%.o)
UNIT_SRCS := $(wildcard tests/unit/*.cc)
UNIT_OBJS := $(UNIT_SRCS:%.cc=$(OUT)/%.o)
MOUNT_SRCS := $(wildcard tests/mount/*.cc)
MOUNT_OBJS := $(MOUNT_SRCS:%.cc=$(OUT)/%.o)
BENCH_SRCS := $(wildcard tests/bench/*.cc)
BENCH_OBJS := $(BENCH_SRCS:%.cc=$(OUT)/%.o)

.PHONY: all deps test-deps check test build-tests demo examples bench clean format install uninstall

all: $(OUT)/mailboxfs $(OUT)/libmailbox_core.a $(OUT)/libmailbox.a $(OUT)/mailbox.pc

$(OUT)/libmailbox_core.a: $(CORE_OBJS)
	ar rcs $@ $^

# libmailbox, for programs: the client and the segment code it shares with the daemon.
$(OUT)/libmailbox.a: $(OUT)/lib/client.o $(OUT)/lib/file_path.o $(OUT)/lib/segment.o
	ar rcs $@ $^

# In-tree pkg-config file: PKG_CONFIG_PATH=$(OUT) pkg-config --cflags --libs mailbox
$(OUT)/mailbox.pc: Makefile
	@mkdir -p $(OUT)
	@printf '%s\n' 'Name: mailbox' 'Description: libmailbox, the shared-memory fast path to mailboxfs mailboxes' \
	  'Version: $(VERSION)' 'Cflags: -I$(CURDIR)/lib/include' \
	  'Libs: -L$(abspath $(OUT)) -lmailbox -lstdc++ -pthread' > $@

# The examples build as a user's program would, through pkg-config.
examples: $(OUT)/libmailbox.a $(OUT)/mailbox.pc
	@mkdir -p $(OUT)/examples
	$(CXX) -std=c++20 -O2 -o $(OUT)/examples/producer_consumer docs/examples/producer_consumer.cpp \
	  $$(PKG_CONFIG_PATH=$(OUT) pkg-config --cflags --libs mailbox)

$(OUT)/mailboxfs: $(FUSE_OBJS) $(OUT)/libmailbox_core.a
	$(CXX) -o $@ $(FUSE_OBJS) $(OUT)/libmailbox_core.a $(LDFLAGS) $(FUSE_LIBS)

$(OUT)/fusefs/%.o: fusefs/%.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(FUSE_CFLAGS) -c $< -o $@

$(OUT)/%.o: %.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(OUT)/unit_tests: $(UNIT_OBJS) $(OUT)/libmailbox_core.a
	$(CXX) -o $@ $(UNIT_OBJS) $(OUT)/libmailbox_core.a $(LDFLAGS) $(GTEST_LIBS)

$(OUT)/mount_tests: $(MOUNT_OBJS) $(OUT)/libmailbox.a
	$(CXX) -o $@ $(MOUNT_OBJS) $(OUT)/libmailbox.a $(LDFLAGS) $(GTEST_LIBS)

# Boost.Interprocess is header-only; its message_queue needs -lrt -pthread.
$(OUT)/bench: $(BENCH_OBJS) $(OUT)/libmailbox.a
	$(CXX) -o $@ $(BENCH_OBJS) $(OUT)/libmailbox.a $(LDFLAGS) -lrt

# The FUSE floor: a minimal FUSE queue daemon, built only for the benchmark.
$(OUT)/bench-floor: $(OUT)/tests/bench/floor/floor.o
	$(CXX) -o $@ $^ $(LDFLAGS) $(FUSE_LIBS)

$(OUT)/tests/bench/floor/%.o: tests/bench/floor/%.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(FUSE_CFLAGS) -c $< -o $@

build-tests: all examples $(OUT)/unit_tests $(OUT)/mount_tests $(OUT)/bench $(OUT)/bench-floor

deps:
	@scripts/deps.sh run

test-deps:
	@scripts/deps.sh test

# Installs what is missing, builds, runs unit and mount tests; the last line
# is "N passed, N failed, N skipped".
test check: test-deps
	@$(MAKE) --no-print-directory build-tests
	@tests/run.sh $(OUT)

# Every mechanism side by side (see docs/benchmarks.md); QUICK=1 for a smoke run,
# ONLY=libmailbox,ref_ring (and REPS=N) for a partial run written under $(OUT).
# Installs its own peers (Boost, gnuplot) when missing.
bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all $(OUT)/bench $(OUT)/bench-floor
	@tests/bench/run.sh $(OUT) $(if $(filter 1,$(QUICK)),--quick) $(if $(ONLY),--only $(ONLY)) \
	  $(if $(REPS),--reps $(REPS))

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh $(OUT)/mailboxfs

install: all
	install -D -m 0755 $(OUT)/mailboxfs $(DESTDIR)$(PREFIX)/bin/mailboxfs
	install -D -m 0644 docs/mailboxfs.8 $(DESTDIR)$(PREFIX)/share/man/man8/mailboxfs.8
	install -D -m 0644 $(OUT)/libmailbox.a $(DESTDIR)$(PREFIX)/lib/libmailbox.a
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/include/mailbox lib/include/mailbox/*.h lib/include/mailbox/*.hpp
	@mkdir -p $(DESTDIR)$(PREFIX)/lib/pkgconfig
	@printf '%s\n' 'prefix=$(PREFIX)' 'Name: mailbox' \
	  'Description: libmailbox, the shared-memory fast path to mailboxfs mailboxes' 'Version: $(VERSION)' \
	  'Cflags: -I$${prefix}/include' 'Libs: -L$${prefix}/lib -lmailbox -lstdc++ -pthread' \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/mailbox.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/mailboxfs $(DESTDIR)$(PREFIX)/share/man/man8/mailboxfs.8 \
	  $(DESTDIR)$(PREFIX)/lib/libmailbox.a $(DESTDIR)$(PREFIX)/lib/pkgconfig/mailbox.pc
	rm -rf $(DESTDIR)$(PREFIX)/include/mailbox

format:
	clang-format -i lib/*.h lib/*.cc lib/include/mailbox/*.h fusefs/*.cc fusefs/*.h tests/*/*.cc tests/*/*.h

clean:
	rm -rf $(OUT)

-include $(CORE_OBJS:.o=.d) $(FUSE_OBJS:.o=.d) $(UNIT_OBJS:.o=.d) $(MOUNT_OBJS:.o=.d) $(BENCH_OBJS:.o=.d) \
  $(OUT)/tests/bench/floor/floor.d

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

$(FUZZ_OUT)/%_fuzz: tests/fuzz/%_fuzz.cc $(FUZZ_CORE_OBJS)
	$(FUZZ_CXX) $(FUZZ_FLAGS) $(FUSE_CFLAGS) -fsanitize=fuzzer -MMD -MP -MF $@.d $< $(FUZZ_CORE_OBJS) -o $@ $(FUSE_LIBS)

build-fuzz: $(addprefix $(FUZZ_OUT)/,$(FUZZ_TARGETS))

fuzz: build-fuzz
	@scripts/fuzz.sh $(FUZZ_OUT) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke: build-fuzz
	@scripts/fuzz.sh $(FUZZ_OUT) 10 $(FUZZ_TARGETS)

# The unit tests that run threads and processes against each other, alone
# (built with TSan by sanitize-check, which need not build the rest).
CONCURRENCY_SRCS := $(sort $(wildcard tests/unit/*stress*.cc) tests/unit/doorbell_test.cc \
  tests/unit/mailbox_wait_test.cc tests/unit/segment_process_test.cc)
$(OUT)/concurrency_tests: $(CONCURRENCY_SRCS:%.cc=$(OUT)/%.o) $(OUT)/libmailbox_core.a
	$(CXX) -o $@ $^ $(LDFLAGS) $(GTEST_LIBS)

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

.PHONY: build-fuzz fuzz fuzz-smoke sanitize-check soak
-include $(FUZZ_CORE_OBJS:.o=.d) $(addsuffix .d,$(addprefix $(FUZZ_OUT)/,$(FUZZ_TARGETS))) \
  $(OUT)/tests/soak/soak_peer.d
