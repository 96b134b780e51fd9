#!/usr/bin/env bash
# Browser test for report.html: renders the fake sweep run (report_fixture), loads it in headless
# Chromium and fails when the summary table or the SVG charts are missing from the rendered DOM,
# when the page's script did not run to completion, or when the browser logs a console error.
# Usage: report_chromium.sh REPORT_FIXTURE_BINARY WORK_DIR [LLMOPT_BINARY]
# Leaves WORK_DIR/run/report.html, WORK_DIR/dom.html, WORK_DIR/chromium.log and
# WORK_DIR/screenshot.png for inspection.
# With LLMOPT_BINARY it also runs a real recipe, baseline -> quantize (rtn q4_0) ->
# evaluate(tasks), on stories260K (../shared) and checks that report's task table, its
# quality-vs-size and quality-vs-speed charts and the per-task drill-down in the rendered DOM;
# its screenshot is WORK_DIR/tasks-screenshot.png.
set -euo pipefail

fixture=${1:?usage: report_chromium.sh REPORT_FIXTURE_BINARY WORK_DIR [LLMOPT_BINARY]}
work=${2:?usage: report_chromium.sh REPORT_FIXTURE_BINARY WORK_DIR [LLMOPT_BINARY]}
llmopt=${3:-}
chromium=${LLMOPT_CHROMIUM:-/usr/bin/chromium}

fail() {
  echo "report_chromium: FAIL: $*" >&2
  exit 1
}

if [[ ! -x "$chromium" ]]; then
  fail "$chromium not found; install it with scripts/install-deps.sh (Debian package 'chromium')"
fi

rm -rf "$work"
mkdir -p "$work"
"$fixture" "$work/run" || fail "report_fixture could not render the fake sweep run"
report="$work/run/report.html"
[[ -s "$report" ]] || fail "$report was not written"

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-background-networking
  --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile"
  --enable-logging=stderr --v=0)

# Chromium's own stderr noise (dbus, GPU, crashpad) is kept in the log but only console messages
# from the page count.
timeout 90 "$chromium" "${flags[@]}" --dump-dom "file://$report" >"$work/dom.html" \
  2>"$work/chromium.log" || fail "chromium --dump-dom exited with $? (see $work/chromium.log)"

# Negative control: the same browser on a page with a script error must log it, or the console
# check below would pass vacuously (e.g. if a Chromium update changed its log format).
printf '%s\n' '<!DOCTYPE html><html><body><script>undefined_function_for_the_control();</script></body></html>' \
  >"$work/control.html"
timeout 90 "$chromium" "${flags[@]}" --dump-dom "file://$work/control.html" >/dev/null \
  2>"$work/control.log" || fail "chromium failed on the control page (see $work/control.log)"
grep -q 'CONSOLE.*Uncaught ReferenceError' "$work/control.log" ||
  fail "chromium did not log the control page's script error; console checks would be blind"

dom="$work/dom.html"
require() {
  grep -q -- "$1" "$dom" || fail "rendered DOM lacks $2 ($1)"
}
require 'data-report-script="ok"' "the marker of the page script (a script error stopped it)"
require '<table class="summary">' "the summary table"
require 'class="chart scatter-chart"' "the Pareto scatter charts"
require 'class="pareto-front"' "the Pareto front polyline"
require 'class="chart bar-chart"' "the per-metric bar charts"
require 'bits=4,group_size=128' "the sweep point labels"
[[ $(grep -o 'class="point ' "$dom" | wc -l) -ge 10 ]] ||
  fail "expected 5 points in each of the 2 scatter charts"

if grep -E 'CONSOLE|Uncaught|SyntaxError|ReferenceError|TypeError' "$work/chromium.log" >&2; then
  fail "the browser reported console messages or script errors (above)"
fi

# A screenshot for people to look at; its failure is a browser problem too.
timeout 90 "$chromium" "${flags[@]}" --hide-scrollbars --window-size=1400,2400 \
  --screenshot="$work/screenshot.png" "file://$report" >>"$work/chromium.log" 2>&1 ||
  fail "chromium --screenshot failed (see $work/chromium.log)"
[[ -s "$work/screenshot.png" ]] || fail "no screenshot written"
echo "report_chromium: OK ($report, screenshot $work/screenshot.png)"

[[ -n "$llmopt" ]] || exit 0
# A real run: baseline -> quantize -> evaluate with task scores.
repo=$(cd "$(dirname "$0")/../.." && pwd)
shared=${LLMOPT_SHARED_DIR:-$repo/../shared}
cat >"$work/tasks-recipe.yaml" <<EOF
name: report-tasks
model:
  path: $shared/models/stories260K/stories260K.bin
  tokenizer: $shared/models/stories260K/tok512.bin
data:
  eval: {path: $shared/text/tinystories_val.txt, ctx: 128, max_chunks: 8}
pipeline:
  - {type: evaluate, name: baseline, metrics: [perplexity, tasks, speed], tasks: [arc_easy, piqa, winogrande], task_limit: 60, bench_repetitions: 1}
  - {type: quantize, method: rtn, format: q4_0, skip: [lm_head], fallback: f16}
  - {type: evaluate, name: q4_0, metrics: [perplexity, kld, tasks, speed], tasks: [arc_easy, piqa, winogrande], task_limit: 60, bench_repetitions: 1}
output:
  dir: "$work/tasks-run"
EOF
(cd "$repo" && LLMOPT_TASKS_DIR="$repo/configs/tasks" LLMOPT_SHARED_DIR="$shared" \
  "$llmopt" -q -t 1 run "$work/tasks-recipe.yaml") >"$work/tasks-run.log" 2>&1 ||
  fail "llmopt run of the tasks recipe failed (see $work/tasks-run.log)"
treport="$work/tasks-run/report.html"
[[ -s "$treport" ]] || fail "$treport was not written"
timeout 90 "$chromium" "${flags[@]}" --dump-dom "file://$treport" >"$work/tasks-dom.html" \
  2>"$work/tasks-chromium.log" || fail "chromium --dump-dom exited with $? on the tasks report"
dom="$work/tasks-dom.html"
require 'data-report-script="ok"' "the marker of the page script (tasks report)"
require '<table class="task-table">' "the per-task comparison table"
require 'data-chart="quality-size"' "the task quality vs model size chart"
require 'data-chart="quality-speed"' "the task quality vs speed chart"
require 'id="task-winogrande"' "the per-task drill-down"
require 'class="task-delta' "the deltas vs the baseline"
[[ $(grep -o 'class="chart-card task-chart"' "$dom" | wc -l) -eq 2 ]] || fail "expected the 2 task quality charts"
if grep -E 'CONSOLE|Uncaught|SyntaxError|ReferenceError|TypeError' "$work/tasks-chromium.log" >&2; then
  fail "the browser reported console messages or script errors on the tasks report (above)"
fi
timeout 90 "$chromium" "${flags[@]}" --hide-scrollbars --window-size=1400,3000 \
  --screenshot="$work/tasks-screenshot.png" "file://$treport" >>"$work/tasks-chromium.log" 2>&1 ||
  fail "chromium --screenshot failed on the tasks report"
echo "report_chromium: OK ($treport, screenshot $work/tasks-screenshot.png)"
