# sdx — top-level build.  GNU make, -j safe, every object under build/.
#
#   make            build build/lib/libsdx.so, build/bin/sdx, the man pages
#   make test       build everything and run every test suite
#   make deps       install the Debian packages the project needs (idempotent)
#   make bench      run the micro-benchmarks (JSON under build/bench/)
#   make install    install under $(PREFIX) (default /usr/local)

SHELL      := /bin/bash
.DEFAULT_GOAL := all

B          := build
CXX        ?= g++
PREFIX     ?= /usr/local
VERSION    := $(shell cat VERSION)

# Install missing Debian packages before anything is built (cheap when all are present).
ifeq ($(filter deps clean distclean,$(MAKECMDGOALS)),)
ifneq ($(SKIP_DEPS),1)
DEPS_STATUS := $(shell scripts/deps.sh --check >/dev/null 2>&1 && echo ok)
ifneq ($(DEPS_STATUS),ok)
$(info sdx: some Debian packages are missing; running scripts/deps.sh)
DEPS_RESULT := $(shell scripts/deps.sh >&2 && echo ok)
ifneq ($(DEPS_RESULT),ok)
$(error scripts/deps.sh failed: install the packages it names, then run make again)
endif
endif
endif
endif

WARN       := -Wall -Wextra -Werror -Wshadow -Wnon-virtual-dtor -Wformat=2 -Wno-missing-field-initializers
CPPFLAGS   := -I. -U_FORTIFY_SOURCE -DSDX_VERSION='"$(VERSION)"' -DFMT_HEADER_ONLY -D_GNU_SOURCE -MMD -MP
CXXFLAGS   := -std=c++20 -O2 -g $(WARN) -fPIC -fvisibility=hidden -fvisibility-inlines-hidden \
              -fno-plt -fstack-protector-strong
# The shim lives inside other programs: no dependency on the host's libstdc++/libfmt versions,
# no exported C++ symbols, no lazy binding surprises.
SHLIB_LDFLAGS := -shared -Wl,--version-script=$(B)/gen/libsdx.map -Wl,-z,now -Wl,-z,relro \
                 -Wl,--no-undefined -static-libstdc++ -static-libgcc
BIN_LDFLAGS   := -Wl,-z,now -Wl,-z,relro -static-libstdc++ -static-libgcc

CONF_SRC    := $(wildcard conf/*.cpp) $(wildcard common/*.cpp)
PROTO_SRC   := $(wildcard protocol/*.cpp)
VERBS_SRC   := $(wildcard verbs/*.cpp)
PRELOAD_SRC := $(wildcard preload/*.cpp)
PRELOAD_ASM := $(wildcard preload/*.S)
CLI_SRC     := $(wildcard cli/*.cpp)
UNIT_SRC    := $(wildcard tests/unit/*.cpp)
SEM_SRC     := $(wildcard tests/semantics/*.cpp)
BENCH_SRC   := $(wildcard bench/*.cpp)
EXAMPLE_SRC := $(wildcard examples/*.cpp)

obj = $(patsubst %.cpp,$(B)/obj/%.o,$(patsubst %.S,$(B)/obj/%.o,$(1)))

CONF_OBJ    := $(call obj,$(CONF_SRC))
PROTO_OBJ   := $(call obj,$(PROTO_SRC))
VERBS_OBJ   := $(call obj,$(VERBS_SRC))
PRELOAD_OBJ := $(call obj,$(PRELOAD_SRC) $(PRELOAD_ASM))
CLI_OBJ     := $(call obj,$(CLI_SRC))
UNIT_OBJ    := $(call obj,$(UNIT_SRC))

LIB         := $(B)/lib/libsdx.so
CONF_LIB    := $(B)/lib/libsdxconf.a
PROTO_LIB   := $(B)/lib/libsdxproto.a
VERBS_LIB   := $(B)/lib/libsdxverbs.a
SDX         := $(B)/bin/sdx
UNIT        := $(B)/tests/unit_tests
SEM_BINS    := $(patsubst tests/semantics/%.cpp,$(B)/tests/semantics/%,$(SEM_SRC))
SEM_FORT    := $(addsuffix .fortify,$(SEM_BINS))
BENCH_BINS  := $(patsubst bench/%.cpp,$(B)/bench/%,$(BENCH_SRC))
EXAMPLE_BINS:= $(patsubst examples/%.cpp,$(B)/bin/%,$(EXAMPLE_SRC))
MAN_PAGES   := man/sdx.1 man/sdx.conf.5 man/sdx.7

.PHONY: all deps demo test unit semantics integration cli-tests bench install clean distclean
all: $(LIB) $(SDX) $(MAN_PAGES) $(EXAMPLE_BINS)

deps:
	scripts/deps.sh

$(B)/obj/%.o: %.cpp
	@mkdir -p $(@D)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

$(B)/obj/%.o: %.S
	@mkdir -p $(@D)
	$(CXX) $(CPPFLAGS) -fPIC -c $< -o $@

$(CONF_LIB): $(CONF_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

# The protocol engine is a library of its own: sans-I/O, unit-tested without the shim.
$(PROTO_LIB): $(PROTO_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

# Transports (verbs/): tested between real processes, linked into the shim.
$(VERBS_LIB): $(VERBS_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

# The export list is generated from the interposed-symbol table, so the two cannot drift.
EXTRA_EXPORTS := execl execlp execle
$(B)/gen/libsdx.map: preload/libc.def Makefile
	@mkdir -p $(@D)
	{ echo '/* generated from preload/libc.def */'; echo '{'; echo '  global:'; \
	  for s in $$(sed -n 's/^SDX_LIBC([^,]*, *\([a-z_0-9]*\),.*/\1/p' $<) $(EXTRA_EXPORTS); do echo "    $$s;"; done; \
	  echo '  local: *;'; echo '};'; } > $@

$(LIB): $(PRELOAD_OBJ) $(VERBS_LIB) $(PROTO_LIB) $(CONF_LIB) $(B)/gen/libsdx.map
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $(SHLIB_LDFLAGS) -o $@ $(PRELOAD_OBJ) $(VERBS_LIB) $(PROTO_LIB) $(CONF_LIB) -ldl -lpthread

$(SDX): $(CLI_OBJ) $(CONF_LIB)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $(BIN_LDFLAGS) -o $@ $(CLI_OBJ) $(CONF_LIB)

# Man pages: the options sections are generated from the option table (conf/options.cpp).
man/%: man/%.in $(SDX)
	$(SDX) internal-man $< > $@.tmp && mv $@.tmp $@

$(UNIT): $(UNIT_OBJ) $(CONF_LIB) $(PROTO_LIB) $(VERBS_LIB) $(B)/obj/preload/socket.o
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) -o $@ $(UNIT_OBJ) $(B)/obj/preload/socket.o $(VERBS_LIB) $(PROTO_LIB) $(CONF_LIB) -lgtest -lgtest_main -lpthread

# Semantics programs: plain build and an -O2 -D_FORTIFY_SOURCE=2 build (glibc's __*_chk entry points).
SEM_FLAGS := -std=c++20 -Wall -Wextra -Werror -g -pthread -Itests/semantics
$(B)/tests/semantics/%: tests/semantics/%.cpp $(wildcard tests/semantics/*.hpp)
	@mkdir -p $(@D)
	$(CXX) $(SEM_FLAGS) -O0 -U_FORTIFY_SOURCE -o $@ $<
$(B)/tests/semantics/%.fortify: tests/semantics/%.cpp $(wildcard tests/semantics/*.hpp)
	@mkdir -p $(@D)
	$(CXX) $(SEM_FLAGS) -O2 -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2 -o $@ $<

$(B)/bench/%: bench/%.cpp
	@mkdir -p $(@D)
	$(CXX) -std=c++20 -O2 $(WARN) -o $@ $< -ldl

# The engine over shared memory, against kernel TCP loopback.
$(B)/bench/shm_engine: bench/shm_engine.cpp $(VERBS_LIB) $(PROTO_LIB)
	@mkdir -p $(@D)
	$(CXX) -std=c++20 -O2 $(WARN) -I. -D_GNU_SOURCE -o $@ $< $(VERBS_LIB) $(PROTO_LIB)

$(B)/bin/%: examples/%.cpp
	@mkdir -p $(@D)
	$(CXX) -std=c++20 -O2 $(WARN) -pthread -o $@ $<

unit: $(UNIT)
	$(UNIT)

semantics: $(LIB) $(SDX) $(SEM_BINS) $(SEM_FORT)
	tests/semantics/run.sh

integration: $(LIB) $(SDX) $(EXAMPLE_BINS)
	tests/integration/run.sh

cli-tests: all
	tests/cli/run.sh

# One driver runs every suite and ends with "N passed, N failed".
test: all $(UNIT) $(SEM_BINS) $(SEM_FORT) $(BENCH_BINS)
	tests/run-all.sh

demo: all
	scripts/demo.sh

bench: all $(BENCH_BINS)
	bench/run.sh

install: all
	install -D -m 0755 $(SDX) $(DESTDIR)$(PREFIX)/bin/sdx
	install -D -m 0755 $(LIB) $(DESTDIR)$(PREFIX)/lib/libsdx.so
	install -D -m 0644 man/sdx.1 $(DESTDIR)$(PREFIX)/share/man/man1/sdx.1
	install -D -m 0644 man/sdx.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/sdx.conf.5
	install -D -m 0644 man/sdx.7 $(DESTDIR)$(PREFIX)/share/man/man7/sdx.7

clean:
	rm -rf $(B) $(MAN_PAGES)

distclean: clean

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
