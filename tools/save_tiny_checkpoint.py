"""Save the embedded tiny model's params (orbax) and tokenizer to a local directory.

    python tools/save_tiny_checkpoint.py OUT [--seed 0]

Then benchmark it as a "real" checkpoint, loaded through the same path real weights take:

    python -m sweep.run model.checkpoint=OUT/params model.tokenizer=OUT/tokenizer.model
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def save_tiny_checkpoint(out: Path, *, seed: int = 0) -> tuple[Path, Path]:
    from gemma import gm

    from sweep.config import ModelConfig
    from sweep.models import build_model
    from sweep.tokenizer import local_tokenizer_path

    model = build_model(ModelConfig(name="tiny", arch="tiny"), seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    params_dir = out.resolve() / "params"
    if params_dir.exists():
        shutil.rmtree(params_dir)
    gm.ckpts.save_params(model.params, params_dir, wait_until_finished=True)
    tokenizer = out / "tokenizer.model"
    shutil.copyfile(local_tokenizer_path(), tokenizer)
    return params_dir, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="random-init seed (default 0)")
    args = parser.parse_args()
    params, tokenizer = save_tiny_checkpoint(args.out, seed=args.seed)
    print(f"saved {params} and {tokenizer}")
    print(f"use: python -m sweep.run model.checkpoint={params} model.tokenizer={tokenizer}")


if __name__ == "__main__":
    main()
