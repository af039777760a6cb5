#!/usr/bin/env bash
# One prepared accelerator benchmark, for a GPU/TPU box or a bare, offline accelerator image.
#
#   bash tools/device_bench.sh [plan] [extra overrides...]
#     h200  (default) gemma3_4b text and image, gemma3_1b, gemma3_12b on topology=h200: engines
#           fused and sampler at batch 1, 8, 32, stream at batch 1; 128 and 1024 new tokens;
#           runs 1/5/1; one warm-cache profiled gemma3_4b job (XLA trace); 450 s deadline
#     smoke the same sweeps, 2 benchmark runs, batch 1 and 32, a 200 s deadline
#     cpu   the same sweeps on model=tiny topology=cpu (32 and 128 tokens, batch 1 and 8):
#           proves the bare path on a CPU
#     one   one sweep of the extra overrides alone (topology=h200 unless overridden)
#
# Python: $PY, else .venv/bin/python, else python3. Where gemma is not importable and .whl/
# holds wheels (tools/device_wheels.sh), they are installed with --no-deps into a scratch
# dir on PYTHONPATH, beside the image's own JAX. wandb stays off (wandb.mode=disabled).
# Each sweep runs under the plan's deadline (DEADLINE_S, seconds from start): a sweep that
# would start too late is skipped and one that overruns is interrupted (its finished jobs keep
# their records). Records land in multirun/device_bench/<stamp>/<sweep>/ ($DEVICE_BENCH_DIR), the
# summary in benchmarks/device_bench.md ($DEVICE_BENCH_REPORT); with $OUT set (the device tool)
# a tarball of both goes there too, and one of the profiles.
set -uo pipefail
cd "$(dirname "$0")/.."
PLAN=${1:-h200}
shift || true
EXTRA=("$@")
START=$(date +%s)

if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c 'import gemma, hydra' 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "gemma is not importable and .whl/ is empty: run tools/device_wheels.sh" >&2; exit 1; }
  SITE=${DEVICE_SITE:-/tmp/device-site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || exit 1
  export PYTHONPATH="$PYTHONPATH:$SITE"
fi
"$PY" - <<'PYEOF' || exit 1
import sys, jax
print(f"python {sys.version.split()[0]}, jax {jax.__version__}, devices: {jax.devices()}")
PYEOF

RUNS="runs.warmup=1 runs.benchmark=5 runs.final=1"
COMMON="wandb.mode=disabled merge.on_end=false"
case "$PLAN" in
  h200)  TOPOLOGY=h200; DEADLINE_S=${DEADLINE_S:-450}; BATCHES=1,8,32; TOKENS=128,1024
         MID=gemma3_4b SMALL=gemma3_1b LARGE=gemma3_12b ;;
  smoke) TOPOLOGY=h200; DEADLINE_S=${DEADLINE_S:-200}; BATCHES=1,32; TOKENS=128,1024
         MID=gemma3_4b SMALL=gemma3_1b LARGE=gemma3_12b
         RUNS="runs.warmup=1 runs.benchmark=2 runs.final=1" ;;
  cpu)   TOPOLOGY=cpu; DEADLINE_S=${DEADLINE_S:-900}; BATCHES=1,8; TOKENS=32,128
         MID=tiny SMALL=tiny LARGE=tiny ;;
  one)   TOPOLOGY=h200; DEADLINE_S=${DEADLINE_S:-450}; BATCHES=1; TOKENS=128; MID=x SMALL=x LARGE=x ;;
  *) echo "unknown plan $PLAN (h200 | smoke | cpu | one)" >&2; exit 2 ;;
esac
SHORT=${TOKENS%%,*} LONG=${TOKENS##*,}
# The sweeps in order, most telling first (a deadline drops the tail): the mid model's short
# requests, its warm-cache profiled job (a new process on the compile cache the first sweep
# filled: its warmup is a cold start without compiling; one untimed request is traced), its
# long ones, then the small model, the mid model with an image, the large model, the rest.
SWEEPS=(
  "$MID-text-$SHORT|model=$MID mode=text engine=fused,sampler tokens=$SHORT batch_size=$BATCHES"
  "$MID-text-warm-profile|model=$MID mode=text engine=fused tokens=$SHORT batch_size=1 profile=true"
  "$MID-text-$LONG|model=$MID mode=text engine=fused tokens=$LONG batch_size=$BATCHES"
  "$MID-text-stream|model=$MID mode=text engine=stream tokens=$TOKENS batch_size=1"
  "$SMALL-text|model=$SMALL mode=text engine=fused,sampler tokens=$TOKENS batch_size=$BATCHES"
  "$MID-image-$SHORT|model=$MID mode=image engine=fused,sampler tokens=$SHORT batch_size=$BATCHES"
  "$LARGE-text-$SHORT|model=$LARGE mode=text engine=fused,sampler tokens=$SHORT batch_size=$BATCHES"
  "$LARGE-text-$LONG|model=$LARGE mode=text engine=fused tokens=$LONG batch_size=$BATCHES"
  "$SMALL-text-stream|model=$SMALL mode=text engine=stream tokens=$TOKENS batch_size=1"
  "$MID-text-$LONG-sampler|model=$MID mode=text engine=sampler tokens=$LONG batch_size=$BATCHES"
  "$MID-image-$LONG|model=$MID mode=image engine=fused,sampler tokens=$LONG batch_size=$BATCHES"
  "$MID-image-stream|model=$MID mode=image engine=stream tokens=$TOKENS batch_size=1"
  "$LARGE-text-$LONG-sampler|model=$LARGE mode=text engine=sampler tokens=$LONG batch_size=$BATCHES"
  "$LARGE-text-stream|model=$LARGE mode=text engine=stream tokens=$TOKENS batch_size=1"
)
# `one`: a single sweep of the extra overrides alone (an experiment on one shape).
[ "$PLAN" = one ] && SWEEPS=("one|")
ROOT=${DEVICE_BENCH_DIR:-multirun/device_bench}/$(date -u +%Y-%m-%d_%H-%M-%S)-$PLAN
REPORT=${DEVICE_BENCH_REPORT:-benchmarks/device_bench.md}
mkdir -p "$ROOT"
log() { echo "[device_bench $(( $(date +%s) - START ))s] $*"; }

sweep() {  # sweep NAME OVERRIDES...: one Hydra multirun into $ROOT/NAME, within the deadline
  local name=$1; shift
  local left=$(( START + DEADLINE_S - $(date +%s) ))
  if [ "$left" -lt 20 ]; then log "skip $name: ${left}s left of ${DEADLINE_S}s"; return; fi
  log "sweep $name ($*), ${left}s left"
  timeout -s INT -k 15 "$left" "$PY" -m sweep.run -m "$@" topology=$TOPOLOGY $RUNS $COMMON \
    "${EXTRA[@]}" hydra.sweep.dir="$ROOT/$name"
  log "sweep $name ended (exit $?)"
}

for i in "${!SWEEPS[@]}"; do
  IFS='|' read -r name overrides <<<"${SWEEPS[$i]}"
  # shellcheck disable=SC2086  # the overrides are words
  sweep "$(printf %02d "$i")-$name" $overrides
done

for trace in "$ROOT"/*/*/profile/plugins/profile/*/perfetto_trace.json.gz; do
  [ -f "$trace" ] && "$PY" tools/trace_summary.py "$trace" | tee "$(dirname "$trace")/summary.md"
done
mkdir -p "$(dirname "$REPORT")"
"$PY" tools/device_report.py "$ROOT" | tee "$REPORT"
if [ -n "${OUT:-}" ]; then  # the device tool brings back files of at most 16 MiB
  tar -czf "$OUT/device_bench.tgz" --exclude=profile "$ROOT" "$REPORT"
  tar -czf "$OUT/profile.tgz" --exclude='*.xplane.pb' "$ROOT"/*/*/profile 2>/dev/null
  ls -la "$OUT"
fi
log "done"
