# Two commands do all set-up on a fresh machine:
#   make sweep   - create .venv (Python >= 3.12), install pinned deps, run the default sweep,
#                  merge every record into BENCHMARKS.md
#   make test    - same set-up, then the fast test suite (make test-slow: the long tests)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SWEEP  ?= tokens=128,256,512,1024 mode=text,image
ACCEL  ?=

.PHONY: sweep test test-slow lint merge install clean

install: $(STAMP)
# make install ACCEL=tpu|cuda|cuda12: also the accelerator's JAX plugin (pyproject extras), then
# fail unless JAX sees that accelerator's devices.
ifneq ($(ACCEL),)
	$(PY) -m pip install --quiet -e '.[dev,$(ACCEL)]'
	$(PY) tools/check_accelerator.py $(ACCEL)
endif

# Reinstall whenever the pinned dependencies change.
$(STAMP): pyproject.toml
	@python=$$(sh tools/find_python.sh) || exit 1; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then \
		echo "creating $(VENV) with $$python"; rm -rf $(VENV); "$$python" -m venv $(VENV) || exit 1; \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# The sweep merges its records into benchmarks/metrics.json and BENCHMARKS.md when it ends
# (Hydra callback), also when some jobs failed; the exit status says whether any did.
sweep: $(STAMP)
	$(PY) -m sweep.run -m $(SWEEP)

# Re-merge every record under multirun/ and outputs/ (e.g. after copying sweeps from a TPU VM).
merge: $(STAMP)
	$(PY) tools/merge_benchmarks.py

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest

# The long tests, with the launcher extras (Ray, submitit, joblib) they exercise.
test-slow: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,ray,slurm,joblib]'
	$(PY) -m pytest -m slow

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
