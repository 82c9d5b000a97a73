# rollcache: `make demo` and `make test` work on a fresh Debian machine (they install what they need).
CARGO ?= cargo
# Test binaries that start a private containerd; run again against containerd 2.x.
CONTAINERD_TESTS ?= $(patsubst tests/%.rs,--test %,$(wildcard tests/node_*.rs tests/daemon_*.rs tests/fault_*.rs tests/fleet_e2e.rs))

.PHONY: deps build test test-containerd-2 demo fmt lint bench bench-fleet fuzz

deps:
	scripts/install-deps.sh

build: deps
	$(CARGO) build

test: deps
	ROLLCACHE_TEST_CONTAINERD=1.7 $(CARGO) test --workspace
	$(MAKE) --no-print-directory test-containerd-2

test-containerd-2: deps
	ROLLCACHE_TEST_CONTAINERD=2 $(CARGO) test $(CONTAINERD_TESTS)

demo: deps
	RUST_LOG=$${RUST_LOG:-warn} $(CARGO) run --quiet -p rollcache-testbed --bin rollcache-demo -- --containerd $${ROLLCACHE_TEST_CONTAINERD:-1.7}

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Benchmarks (release build, a fresh containerd per pull run; ~20 min, BENCH_QUICK=1 for a
# smaller run). With KUBECONFIG set, the latency and scale sections also run against that API
# server. Not part of `make test`. Results and how to read them: BENCHMARKS.md.
bench: deps
	$(CARGO) bench --bench rollcache

# Fleet mode vs today, side by side (~6 min here; not part of `make bench`, which does not run it):
# one agent's bytes, memory and reaction latency with and without `rollcache index`, and a
# simulated fleet of BENCH_FLEET_AGENTS (50) agents started at once, also against the API server
# KUBECONFIG points at when set (its apiserver and etcd measured by pid). See BENCHMARKS.md.
bench-fleet: deps
	BENCH_ONLY=fleet,fleet-sim $(CARGO) bench --bench rollcache

# cargo-fuzz on every decoder of outside input, FUZZ_SECONDS each (see fuzz/README.md). Stable
# toolchains work: RUSTC_BOOTSTRAP lets cargo-fuzz pass its -Z flags.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= helm_payload helm_secret manifest controller_revision image_ref dockerconfig config_file files_yaml prefetch_request
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t seeds/$$t && \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --sanitizer none $$t corpus/$$t seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=512 -timeout=5 -max_len=262144 \
			-print_final_stats=1 || exit 1; \
	done
