#!/usr/bin/env bash
# The CI's fuzz phase: replays the seed corpus of every cargo-fuzz target (a
# regression step: every input once), then fuzzes each target for FUZZ_SECONDS
# (default 20). Fails on any crash, naming the target and the input libFuzzer saved
# under fuzz/artifacts/<target>/. Fuzzing writes new inputs to a temporary directory,
# never into the seed corpus in the repository.
#
# Toolchain: the pinned stable one. cargo fuzz passes nightly-only flags
# (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets stable rustc accept them.
# cargo-fuzz itself is installed from crates.io when it is not there already.
set -euo pipefail
cd "$(dirname "$0")"

secs=${FUZZ_SECONDS:-20}
export RUSTC_BOOTSTRAP=1
# Where `cargo install` puts it, whatever PATH says.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi

# cargo fuzz has no --locked: check the lock file is up to date first.
cargo fetch --locked

mapfile -t targets < <(cargo fuzz list)
for t in "${targets[@]}"; do
    if ! compgen -G "corpus/$t/*" >/dev/null; then
        echo "fuzz target $t has no seed inputs: add a few to fuzz/corpus/$t/" >&2
        exit 1
    fi
done

cargo fuzz build

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
    echo "--- $t: replaying $(find "corpus/$t" -type f | wc -l) seed inputs"
    if ! cargo fuzz run "$t" "corpus/$t" -- -runs=0; then
        failed+=("$t (seed corpus)")
        continue
    fi
    echo "--- $t: fuzzing for $secs s"
    mkdir -p "$work/$t"
    if ! cargo fuzz run "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        failed+=("$t")
    fi
done

echo "fuzz: ${#targets[@]} targets, $secs s each, ${#failed[@]} failed"
if [ "${#failed[@]}" -gt 0 ]; then
    printf 'fuzz target failed: %s (input in fuzz/artifacts/)\n' "${failed[@]}" >&2
    exit 1
fi
