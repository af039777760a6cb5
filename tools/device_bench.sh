#!/usr/bin/env bash
# One prepared device check (run through the `device` tool on a lent GPU machine, or on any
# GPU/TPU box): the fused engine on a random-init gemma3_4b in bf16, batch 1 (then 8 and 32 if
# time allows), 128 new tokens. Writes records under multirun/device_bench/ and a summary
# table to benchmarks/device_bench.md. Usage: bash tools/device_bench.sh [topology] [batches]
set -euo pipefail
cd "$(dirname "$0")/.."
TOPOLOGY=${1:-h200}
BATCHES=${2:-1,8,32}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { make install >/dev/null && PY=.venv/bin/python; }
# The GPU needs jax's CUDA plugin; install it next to the pinned jaxlib when missing.
if ! "$PY" -c 'import jax; assert jax.default_backend() == "gpu"' 2>/dev/null; then
  "$PY" -m pip install --quiet "jax[cuda12]==$("$PY" -c 'import jax; print(jax.__version__)')"
fi
SWEEP_DIR=multirun/device_bench/$(date -u +%Y-%m-%d_%H-%M-%S)
"$PY" -m sweep.run -m model=gemma3_4b mode=text topology="$TOPOLOGY" engine=fused \
  tokens=128 batch_size="$BATCHES" runs.benchmark=5 merge_on_end=false \
  hydra.sweep.dir="$SWEEP_DIR" || true
mkdir -p benchmarks
"$PY" - "$SWEEP_DIR" > benchmarks/device_bench.md <<'PYEOF'
import json, sys
from pathlib import Path
rows = ["| Batch | Status | First Token s (median) | Decode Tokens/s (median) | MBU (median) |",
        "| --- | --- | --- | --- | --- |"]
for path in sorted(Path(sys.argv[1]).glob("*/metrics.json"), key=lambda p: int(p.parent.name)):
    r = json.loads(path.read_text())
    if r["status"] != "ok":
        rows.append(f"| {r['config']['batch_size']} | {r['status']}: {r['error']['message'][:80]} | | | |")
        continue
    s = r["phases"]["benchmark"]["summary"]
    mbu = s["mbu"]["median"] if s["mbu"] else None
    rows.append(f"| {r['config']['batch_size']} | ok | {s['first_token_s']['median']:.4f} | "
                f"{s['decode_tokens_per_s']['median']:.1f} | "
                f"{'' if mbu is None else f'{100 * mbu:.1f}%'} |")
env = r["env"]
print(f"gemma3_4b (random init, bf16), fused engine, 128 new tokens, on {env['device_kind']} "
      f"x{env['device_count']} (topology peaks from conf/topology), jax {env['versions']['jax']}.\n")
print("\n".join(rows))
PYEOF
cat benchmarks/device_bench.md
