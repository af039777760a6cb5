#!/usr/bin/env python3
"""Check that JAX sees the accelerator an install was for (`make install ACCEL=...`).

    python tools/check_accelerator.py tpu|cuda|cuda12

Exit 0 and one line naming the devices, or exit 1 saying what JAX found instead and what to
check: an install whose plugin cannot reach its devices would otherwise benchmark the CPU.
"""

from __future__ import annotations

import sys

# extra -> (JAX backend it must give, what to check when it does not)
EXPECTED = {
    "tpu": ("tpu", "is this a TPU VM, and is no other process holding the TPU?"),
    "cuda": ("gpu", "is the NVIDIA driver loaded (nvidia-smi) and new enough for CUDA 13?"),
    "cuda12": ("gpu", "is the NVIDIA driver loaded (nvidia-smi)?"),
}


def check(accel: str) -> tuple[bool, str]:
    if accel not in EXPECTED:
        return False, f"ACCEL={accel!r}: expected one of {', '.join(EXPECTED)}"
    want, hint = EXPECTED[accel]
    try:
        import jax

        backend = jax.default_backend()
        devices = jax.devices()
    except Exception as exc:  # a plugin that fails to initialise
        return False, f"ACCEL={accel}: JAX failed to start ({type(exc).__name__}: {exc}); {hint}"
    kinds = sorted({d.device_kind for d in devices})
    found = f"{len(devices)} {backend} device(s): {', '.join(kinds)} (jax {jax.__version__})"
    if backend != want:
        return False, f"ACCEL={accel}: JAX sees only {found}, no {want}; {hint}"
    return True, f"ACCEL={accel}: {found}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    ok, line = check(argv[0])
    print(line, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
