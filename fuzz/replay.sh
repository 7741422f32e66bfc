#!/usr/bin/env bash
# Builds the fuzz targets and runs each one once over every input in its
# checked-in corpus (fuzz/corpus/<target>/): a regression test for every input
# that once crashed or found new code. CI runs this; it needs only the nightly
# toolchain, not cargo-fuzz (libfuzzer-sys builds and links libFuzzer itself;
# coverage instrumentation is only needed to fuzz, not to replay).
#
# Fails on the first input that panics, aborts, times out or runs out of
# memory; the input is then in fuzz/target/replay-artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

# A target dir of its own: never fuzz/../target, which the workspace (and
# other builds running at the same time) use.
cargo +nightly build --locked --release --bins --target-dir target

status=0
for src in fuzz_targets/*.rs; do
  target=$(basename "$src" .rs)
  corpus="corpus/$target"
  if [[ -z "$(ls -A "$corpus" 2>/dev/null)" ]]; then
    echo "FAIL: fuzz target $target has no seed corpus in fuzz/$corpus" >&2
    status=1
    continue
  fi
  artifacts="target/replay-artifacts/$target/"
  rm -rf "$artifacts" && mkdir -p "$artifacts"
  log="target/replay-artifacts/$target.log"
  # -runs=0: replay the corpus, generate nothing. -timeout: seconds per input.
  if "target/release/$target" -runs=0 -timeout=20 -artifact_prefix="$artifacts" "$corpus" >"$log" 2>&1; then
    echo "ok: fuzz target $target replayed $(ls "$corpus" | wc -l) inputs"
  else
    echo "FAIL: fuzz target $target crashed on its corpus; libFuzzer's report:" >&2
    tail -n 60 "$log" >&2
    echo "the input: fuzz/$artifacts$(ls "$artifacts" | head -n 1)" >&2
    status=1
  fi
done
exit "$status"
