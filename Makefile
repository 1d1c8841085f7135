# Mimir build. Everything is discovered by layout, so adding a module, tool, service or
# test needs no edit here:
#   common/<module>/*.c        -> build/lib/libmimir.a (one static library)
#   services/<svc>/*.c         -> build/bin/mimir-<svc>
#   cli/<tool>/*.c             -> build/bin/<tool>
#   tests/lib/*.c              -> build/lib/libmimirtest.a (test helpers, Check main)
#   tests/unit/test_*.c        -> build/tests/test_*      (one Check suite each)
#   tests/integration/itest_*.c-> build/tests/itest_*     (Check suites driving real binaries)
#   bench/<name>.c             -> build/bench/<name>
#   fuzz/fuzz_*.c              -> build/fuzz/fuzz_*       (libFuzzer, clang only)
# Every top-level target runs scripts/deps.sh first (a no-op when all is installed).

BUILD   ?= build
CC      ?= cc
SAN     ?=
OPT     ?= -O2
SHARED  ?= $(abspath ../shared)

PKGS    := libmicrohttpd gnutls libcurl jansson libssl libcrypto libsodium sqlite3
WARN    := -Wall -Wextra -Werror -Wformat=2 -Wvla -Wno-missing-field-initializers
CFLAGS_BASE := -std=gnu11 -g $(OPT) $(WARN) -fstack-protector-strong -fPIE \
               -D_FORTIFY_SOURCE=2 -Icommon -Itests/lib
ifneq ($(SAN),)
CFLAGS_BASE := -std=gnu11 -g -O1 $(WARN) -fno-omit-frame-pointer -fPIE -Icommon -Itests/lib \
               -fsanitize=address,undefined -fno-sanitize-recover=all
LDSAN   := -fsanitize=address,undefined -fno-sanitize-recover=all
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) check 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null)
CFLAGS  += $(CFLAGS_BASE) $(PKG_CFLAGS)
LDFLAGS += -pie -Wl,-z,relro,-z,now -Wl,--as-needed $(LDSAN)
LDLIBS  := $(PKG_LIBS) -lm -lpthread

LIB_SRC   := $(sort $(wildcard common/*/*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
TLIB_SRC  := $(sort $(wildcard tests/lib/*.c))
TLIB_OBJ  := $(TLIB_SRC:%.c=$(BUILD)/obj/%.o)
SVC_DIRS  := $(sort $(patsubst %/,%,$(dir $(wildcard services/*/*.c))))
CLI_DIRS  := $(sort $(patsubst %/,%,$(dir $(wildcard cli/*/*.c))))
SVC_BINS  := $(foreach d,$(SVC_DIRS),$(BUILD)/bin/mimir-$(notdir $(d)))
CLI_BINS  := $(foreach d,$(CLI_DIRS),$(BUILD)/bin/$(notdir $(d)))
UNIT_SRC  := $(sort $(wildcard tests/unit/test_*.c))
ITEST_SRC := $(sort $(wildcard tests/integration/itest_*.c))
TEST_BINS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%) $(ITEST_SRC:tests/integration/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCH_BINS:= $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
FUZZ_SRC  := $(sort $(wildcard fuzz/fuzz_*.c))

.PHONY: all deps test test-run test-sanitize demo bench fuzz clean lint
.DEFAULT_GOAL := all

all: deps
	@$(MAKE) --no-print-directory build-all

.PHONY: build-all
build-all: $(BUILD)/lib/libmimir.a $(SVC_BINS) $(CLI_BINS) $(TEST_BINS) $(BENCH_BINS)

deps:
	@bash scripts/deps.sh

# Objects depend on the exact compiler and flags, so `make CC=clang` after `make`
# rebuilds instead of mixing objects.
$(BUILD)/.flags: FORCE
	@mkdir -p $(@D)
	@echo '$(CC) $(CFLAGS) $(LDFLAGS)' | cmp -s - $@ || echo '$(CC) $(CFLAGS) $(LDFLAGS)' > $@
.PHONY: FORCE
FORCE:

$(BUILD)/obj/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/lib/libmimir.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/lib/libmimirtest.a: $(TLIB_OBJ)
	@mkdir -p $(@D)
	@rm -f $@
	ar rcs $@ $^

# One explicit link rule per service and tool (their objects are known only by layout).
define link_rule
$(1): $(addprefix $(BUILD)/obj/,$(patsubst %.c,%.o,$(wildcard $(2)/*.c))) $(BUILD)/lib/libmimir.a
	@mkdir -p $$(@D)
	$$(CC) $$(LDFLAGS) -o $$@ $$(filter %.o,$$^) $(BUILD)/lib/libmimir.a $$(LDLIBS)
endef
$(foreach d,$(SVC_DIRS),$(eval $(call link_rule,$(BUILD)/bin/mimir-$(notdir $(d)),$(d))))
$(foreach d,$(CLI_DIRS),$(eval $(call link_rule,$(BUILD)/bin/$(notdir $(d)),$(d))))

$(BUILD)/tests/test_%: $(BUILD)/obj/tests/unit/test_%.o $(BUILD)/lib/libmimirtest.a $(BUILD)/lib/libmimir.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $< $(BUILD)/lib/libmimirtest.a $(BUILD)/lib/libmimir.a $(CHECK_LIBS) $(LDLIBS)

$(BUILD)/tests/itest_%: $(BUILD)/obj/tests/integration/itest_%.o $(BUILD)/lib/libmimirtest.a $(BUILD)/lib/libmimir.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $< $(BUILD)/lib/libmimirtest.a $(BUILD)/lib/libmimir.a $(CHECK_LIBS) $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/lib/libmimir.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $< $(BUILD)/lib/libmimir.a $(LDLIBS)

# Tests: every Check suite (unit, then integration against the real binaries), with
# Check's own summary line per suite and one closing line; non-zero on any failure.
test: all
	@$(MAKE) --no-print-directory test-run

test-run:
	@MIMIR_BUILD=$(abspath $(BUILD)) MIMIR_SHARED=$(SHARED) bash scripts/run-tests.sh $(TEST_BINS)
	@bash scripts/lint.sh

# Under the sanitizers the secure-generation suites run at quick depth (tu_quick):
# the same code paths on fewer tokens. MIMIR_TEST_DEPTH=full overrides.
test-sanitize: deps
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/san SAN=1 build-all
	@MIMIR_TEST_DEPTH=$${MIMIR_TEST_DEPTH:-quick} $(MAKE) --no-print-directory BUILD=$(BUILD)/san SAN=1 test-run

bench: all
	@for b in $(BENCH_BINS); do echo "== $$b"; MIMIR_BUILD=$(abspath $(BUILD)) MIMIR_SHARED=$(SHARED) $$b || exit 1; done
	@for b in $(sort $(wildcard bench/*.sh)); do echo "== $$b"; MIMIR_BUILD=$(abspath $(BUILD)) MIMIR_SHARED=$(SHARED) bash $$b || exit 1; done

# make demo PROMPT="..." TOKENS=N: the story's prompt and length (exported, so any
# characters pass unquoted).
demo: export DEMO_PROMPT = $(PROMPT)
demo: export DEMO_TOKENS = $(TOKENS)
demo: all
	@MIMIR_BUILD=$(abspath $(BUILD)) MIMIR_SHARED=$(SHARED) bash scripts/demo.sh

# libFuzzer harnesses: built with clang against the library sources, each run for
# FUZZ_SECONDS on its seed corpus (fuzz/corpus/<name>/, plus generated seeds).
FUZZ_SECONDS ?= 20
FUZZ_FLAGS := -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
              -Icommon $(PKG_CFLAGS) -DMIMIR_FUZZ
fuzz: deps
	@mkdir -p $(BUILD)/fuzz
	@set -e; for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  echo "fuzz: building $$n"; \
	  clang $(FUZZ_FLAGS) -o $(BUILD)/fuzz/$$n $$f $(LIB_SRC) $(LDLIBS); done
	@MIMIR_SHARED=$(SHARED) FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh $(BUILD)/fuzz $(FUZZ_SRC)

lint:
	@bash scripts/lint.sh

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
