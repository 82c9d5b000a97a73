#!/bin/bash
# Runs the benchmark's `rollcache run` child under heaptrack, for
#   BENCH_CHILD_WRAPPER=scripts/heaptrack-child.sh BENCH_ONLY=scale make bench
# When the harness stops the child (SIGTERM), the child is killed outright instead, so that what
# heaptrack reports as "leaked" is what was live at steady state, not what shutdown left.
# Output: $HEAPTRACK_DIR/rollcache.<pid>.zst (default /tmp); read it with heaptrack_print. The RSS and
# CPU figures such a run prints are this script's, not the child's: use it for the heap only.
set -u
out="${HEAPTRACK_DIR:-/tmp}/rollcache.$$"
heaptrack -o "$out" "$@" >"$out.log" 2>&1 &
tracked=$!
trap 'pkill -KILL -f "^$1 run"; wait "$tracked"; exit 0' TERM
wait "$tracked"
