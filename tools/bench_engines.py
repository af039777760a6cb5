"""Time every engine on the same params and prompt, in one process, rounds alternating.

    python tools/bench_engines.py [--model gemma3_270m] [--tokens 128] [--rounds 3] [--json]

Engines: `fused` (ours), `sampler` (gm.text.Sampler), `stream` (the per-token loop the seed table
was measured with) and `reference` (tools/reference_decode.py: a bare jitted prefill + lax.scan
decode over `model.apply` as the library defines it, the yardstick). Each engine runs once
untimed (compile), then the rounds alternate engines so drift on a shared machine hits all of
them alike, with a short pause before each timed run: freeing one engine's temporaries (1.7 GB
for the reference on 270M) takes the kernel a few hundred ms, and that must not be charged to
the next engine's first token. Prints a markdown table (or the
figures as JSON with --json) and writes them to benchmarks/bench_engines.json, which
tools/merge_benchmarks.py renders as a section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

ENGINES = ("fused", "sampler", "stream", "reference")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gemma3_270m", help="a conf/model/ name (random init)")
    p.add_argument("--tokens", type=int, default=128, help="new tokens per request")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="timed runs per engine")
    p.add_argument("--prompt", default="Tell me a short story.")
    p.add_argument("--settle-s", type=float, default=1.0, help="pause before each timed run")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--cache-length", type=int, default=None, help="default: the engine config's")
    p.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "bench_engines.json")
    p.add_argument("--no-write", action="store_true", help="do not write --out")
    return p.parse_args(argv)


def build(args):
    from hydra import compose, initialize_config_dir

    from sweep.config import validate

    overrides = [
        f"model={args.model}",
        "mode=text",
        f"mode.prompt={args.prompt}",
        f"tokens={args.tokens}",
        f"batch_size={args.batch}",
    ]
    if args.cache_length:
        overrides.append(f"engine.cache_length={args.cache_length}")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return validate(compose(config_name="config", overrides=overrides))


def main(argv=None) -> int:
    args = parse_args(argv)
    config = build(args)  # a bad value fails here, before any model is built

    from reference_decode import ReferenceEngine

    from sweep import preflight
    from sweep.engine import ENGINES as SWEEP_ENGINES
    from sweep.env import collect_env, setup_compile_cache
    from sweep.metrics import describe
    from sweep.models import load_model
    from sweep.phases import generation_metrics

    setup_compile_cache(config.compile_cache_dir)
    env = collect_env()
    t0 = time.perf_counter()
    model, _ = load_model(config.model, seed=config.seed)
    load_s = time.perf_counter() - t0
    request = preflight.build_request(config, model, None)
    cost = preflight.cost_model(model, config.topology, env)
    classes = dict(SWEEP_ENGINES, reference=ReferenceEngine)
    names = [n for n in args.engines.split(",") if n]
    engines = {n: classes[n](model, cache_length=config.engine.cache_length) for n in names}

    log = sys.stderr
    print(
        f"{config.model.name}: {model.num_params / 1e6:.0f}M params, built in {load_s:.1f} s; "
        f"{config.tokens} tokens, batch {config.batch_size}",
        file=log,
    )
    compile_s = {}
    for name, engine in engines.items():
        start = time.perf_counter()
        engine.generate(request)  # compile + first run, untimed
        compile_s[name] = time.perf_counter() - start
        print(f"  {name}: first call {compile_s[name]:.1f} s", file=log)
    runs = {n: [] for n in engines}
    tokens = {}
    for r in range(args.rounds):
        for name, engine in engines.items():
            time.sleep(args.settle_s)
            gen = engine.generate(request)
            tokens[name] = gen.token_ids.tolist()
            runs[name].append(generation_metrics(gen, request, cost))
            print(
                f"  round {r + 1}/{args.rounds} {name}: first token "
                f"{runs[name][-1]['first_token_s']:.4f} s, decode "
                f"{runs[name][-1]['decode_tokens_per_s']:.2f} tok/s",
                file=log,
            )

    figures = {}
    for name, samples in runs.items():
        stat = {
            k: describe([s[k] for s in samples])
            for k in ("first_token_s", "decode_tokens_per_s", "tokens_per_s", "mbu")
        }
        figures[name] = {
            "first_token_s_median": stat["first_token_s"]["median"],
            "decode_tokens_per_s_median": stat["decode_tokens_per_s"]["median"],
            "tokens_per_s_median": stat["tokens_per_s"]["median"],
            "mbu": stat["mbu"]["median"] if stat["mbu"] else None,
            "first_call_s": compile_s[name],
            "new_tokens": samples[-1]["new_tokens"],
            "samples": samples,
            "same_tokens_as_fused": tokens[name] == tokens.get("fused", tokens[name]),
        }
    result = {
        "engines": figures,
        "config": {
            "model": config.model.name,
            "tokens": config.tokens,
            "batch_size": config.batch_size,
            "rounds": args.rounds,
            "cache_length": config.engine.cache_length,
            "prompt_tokens": runs[names[0]][0]["prompt_tokens"],
            "dtype": config.model.dtype,
            "num_params": model.num_params,
            "param_bytes": model.param_bytes,
        },
        "env": env,
    }
    from sweep.merge import bench_engines_table

    table = "\n".join(bench_engines_table(result))
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(table)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        from sweep.record import write_record

        write_record(args.out, result)
        print(f"wrote {args.out}", file=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
