# rollcache: `make demo` and `make test` work on a fresh Debian machine (they install what they need).
CARGO ?= cargo
# Test binaries that start a private containerd; run again against containerd 2.x.
CONTAINERD_TESTS ?= $(patsubst tests/%.rs,--test %,$(wildcard tests/node_*.rs tests/daemon_*.rs tests/fault_*.rs))

.PHONY: deps build test test-containerd-2 demo fmt lint bench

deps:
	scripts/install-deps.sh

build: deps
	$(CARGO) build

test: deps
	ROLLCACHE_TEST_CONTAINERD=1.7 $(CARGO) test
	$(MAKE) --no-print-directory test-containerd-2

test-containerd-2: deps
	ROLLCACHE_TEST_CONTAINERD=2 $(CARGO) test $(CONTAINERD_TESTS)

demo: deps
	RUST_LOG=$${RUST_LOG:-warn} $(CARGO) run --quiet -- demo --containerd $${ROLLCACHE_TEST_CONTAINERD:-1.7}

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) clippy --all-targets -- -D warnings

# Benchmarks (release build, a fresh containerd per pull run; ~20 min, BENCH_QUICK=1 for a
# smaller run). Not part of `make test`. Results and how to read them: BENCHMARKS.md.
bench: deps
	$(CARGO) bench --bench rollcache
