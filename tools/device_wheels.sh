#!/usr/bin/env bash
# Wheels a bare accelerator image needs beside its own JAX/flax/numpy/pandas to run the sweep
# (tools/device_bench.sh installs them from .whl/ with --no-deps): gemma and the parts of
# kauldron its inference path imports, Hydra and OmegaConf, and their small pure-Python needs.
# Not tensorflow (sweep/gemma_lib.py: gemma imports without it) and not wandb (wandb.mode=auto is
# disabled where it is missing). Fails when the checkout plus the wheels pass the 64 MiB that
# may travel to the machine. Usage: bash tools/device_wheels.sh [dir]   (default .whl)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || sh tools/find_python.sh )}
BUDGET_BYTES=$((64 * 1024 * 1024))
# Pinned like pyproject.toml; the last six are what gemma/kauldron import on the inference path
# and the image lacks (found with `python -X importtime` in a venv of the image's packages).
WHEELS=(
  gemma==4.0.1 kauldron==1.4.4 hydra-core==1.3.8 omegaconf==2.3.1
  clu==0.0.12 dialog==1.1.0 immutabledict==4.3.1 lark==1.3.1 ml_collections==1.1.0
  typeguard==4.6.1
)
rm -rf "$DIR" && mkdir -p "$DIR"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 -d "$DIR" "${WHEELS[@]}"
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) is published as an sdist only.
"$PY" -m pip wheel --quiet --no-deps -w "$DIR" antlr4-python3-runtime==4.9.3
# What travels: tracked files, untracked files git does not ignore, and the wheels.
checkout=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } |
  xargs -0 du -cb 2>/dev/null | awk 'END {print $1}')
wheels=$(du -cb "$DIR"/*.whl | awk 'END {print $1}')
total=$((checkout + wheels))
printf 'wheels: %d files, %.1f MiB; checkout %.1f MiB; together %.1f of 64 MiB\n' \
  "$(ls "$DIR"/*.whl | wc -l)" "$(echo "$wheels / 1048576" | bc -l)" \
  "$(echo "$checkout / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)"
if [ "$total" -gt "$BUDGET_BYTES" ]; then
  echo "error: the checkout and the wheels are over the 64 MiB that may travel" >&2
  exit 1
fi
