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

Every engine's greedy tokens are compared with the fused engine's: where they first differ
(`first_divergent_step`, 0 = the prefill's token), the model is run over the shared prefix
(tools/reference_decode.py's `prefix_logits`) to say whether the engines faced a near-tie
there (`near_tie`: the tokens both engines chose within one bf16 ulp of the top logit;
`top2_logits`), which either choice honours, or a real difference. MBU on CPU is against
sweep.env.cpu_read_peak, the same probe the sweep's records use.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

ENGINES = ("fused", "sampler", "stream", "reference")
BF16_MANTISSA_BITS = 7  # stored; 8 significant bits with the implicit one
BF16_MIN_SPACING = 2.0**-133  # between the smallest subnormals


def bf16_ulp(x: float) -> float:
    """The gap from |x| to the next larger bfloat16 (one bf16 step at that magnitude)."""
    x = abs(float(x))
    if not math.isfinite(x) or x == 0:
        return BF16_MIN_SPACING
    _, exp = math.frexp(x)  # x = m * 2**exp, 0.5 <= m < 1
    return max(2.0 ** (exp - 1 - BF16_MANTISSA_BITS), BF16_MIN_SPACING)


def first_divergence(
    expected: Sequence[Sequence[int]], actual: Sequence[Sequence[int]]
) -> tuple[int, int] | None:
    """(step, row) where `actual`'s token ids ([batch][tokens]) first differ from `expected`'s:
    the earliest step over the rows (the lowest row on a draw); a row that ends early differs
    where it ends. None when identical."""
    if len(expected) != len(actual):
        raise ValueError(f"batch {len(actual)} is not the expected {len(expected)}")
    found = None
    for row, (want, got) in enumerate(zip(expected, actual, strict=True)):
        want, got = [int(t) for t in want], [int(t) for t in got]
        common = min(len(want), len(got))
        step = next((i for i in range(common) if want[i] != got[i]), None)
        if step is None and len(want) != len(got):
            step = common
        if step is not None and (found is None or step < found[0]):
            found = (step, row)
    return found


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no infinity


def tie_check(logits: Sequence[float], chosen: dict[str, int]) -> dict:
    """Whether the tokens the engines chose (`chosen`: engine -> token id) were a near-tie in
    `logits` ([vocab], forbidden tokens at -inf): every chosen token's logit within one bf16
    ulp (at the top logit's magnitude) of the top logit. With two engines picking the top-2
    tokens, that is: the top-2 logits within one bf16 step of each other."""
    values = [float(v) for v in logits]
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))[:2]
    top = values[order[0]]
    ulp = bf16_ulp(top)
    chosen_logits = {name: values[token] for name, token in chosen.items()}
    return {
        "near_tie": all(top - v <= ulp for v in chosen_logits.values()),
        "top2_logits": [_finite(values[i]) for i in order],
        "top2_ids": order,
        "chosen_tokens": {name: int(token) for name, token in chosen.items()},
        "chosen_logits": {name: _finite(v) for name, v in chosen_logits.items()},
        "bf16_ulp": ulp,
    }


def divergence(
    name: str,
    fused: Sequence[Sequence[int]],
    tokens: Sequence[Sequence[int]],
    logits_at: Callable[[int, list[int]], Sequence[float]],
) -> dict:
    """The structured comparison of engine `name`'s tokens with the fused engine's:
    first_divergent_step (None: identical), divergent_row, and at that step the tie check
    (near_tie, top2_logits, ...) on `logits_at(row, shared_prefix)`. near_tie is None when
    there is nothing to compare (identical, or one engine stopped there)."""
    found = first_divergence(fused, tokens)
    out = dict.fromkeys(("first_divergent_step", "divergent_row", "near_tie", "top2_logits"))
    if found is None:
        return out
    step, row = found
    out |= {"first_divergent_step": step, "divergent_row": row}
    want, got = list(fused[row]), list(tokens[row])
    if step < len(want) and step < len(got):
        logits = logits_at(row, [int(t) for t in want[:step]])
        out |= tie_check(logits, {"fused": int(want[step]), name: int(got[step])})
    return out


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


def _median(described: dict | None) -> float | None:
    return described["median"] if described else None


def main(argv=None) -> int:
    from sweep.results.markdown import bench_engines_table, divergence_text

    args = parse_args(argv)
    config = build(args)  # a bad value fails here, before any model is built

    from reference_decode import ReferenceEngine, prefix_logits

    from sweep.costs import cost_model
    from sweep.engine import ENGINES as SWEEP_ENGINES
    from sweep.env import collect_env, cpu_read_peak, setup_compile_cache
    from sweep.metrics import describe
    from sweep.models import build_model
    from sweep.phases import generation_metrics
    from sweep.request import build_request

    setup_compile_cache(config.compile_cache_dir)
    env = collect_env()
    t0 = time.perf_counter()
    model = build_model(config.model, seed=config.seed)
    load_s = time.perf_counter() - t0
    request = build_request(config, model, None)
    cost = cost_model(model, config.topology, env, batch_size=config.batch_size)
    if config.topology.platform == "cpu":
        # The sweep's own probe (cached per process and size: cost_model's peak is this one),
        # with its spread over rounds, into the env block the table's intro reads.
        env.update(cpu_read_peak(cost.decode_weight_bytes))
    classes = dict(SWEEP_ENGINES, reference=ReferenceEngine)
    names = [n for n in args.engines.split(",") if n]
    engines = {n: classes[n](model, cache_length=request.cache_length) for n in names}

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
            decode = runs[name][-1]["decode_tokens_per_s"]
            print(
                f"  round {r + 1}/{args.rounds} {name}: first token "
                f"{runs[name][-1]['first_token_s']:.4f} s, decode "
                + (f"{decode:.2f} tok/s" if decode is not None else "undefined"),
                file=log,
            )

    logits_cache: dict[tuple, list[float]] = {}

    def logits_at(row: int, prefix: list[int]) -> list[float]:
        key = (request.prompts[row], tuple(prefix))
        if key not in logits_cache:
            logits_cache[key] = prefix_logits(model, request.prompts[row], prefix).tolist()
        return logits_cache[key]

    figures = {}
    for name, samples in runs.items():
        stat = {
            k: describe([s[k] for s in samples])
            for k in ("first_token_s", "decode_tokens_per_s", "tokens_per_s", "mbu")
        }
        fused = tokens.get("fused", tokens[name])
        diverged = divergence(name, fused, tokens[name], logits_at)
        figures[name] = {
            "first_token_s_median": _median(stat["first_token_s"]),
            "decode_tokens_per_s_median": _median(stat["decode_tokens_per_s"]),
            "tokens_per_s_median": _median(stat["tokens_per_s"]),
            "mbu": _median(stat["mbu"]),
            "first_call_s": compile_s[name],
            "new_tokens": samples[-1]["new_tokens"],
            "samples": samples,
            "same_tokens_as_fused": diverged["first_divergent_step"] is None,
            **diverged,
        }
        if name != "fused" and "fused" in tokens:
            print(f"  {name} vs fused: {divergence_text(figures[name])}", file=log)
    result = {
        "engines": figures,
        "config": {
            "model": config.model.name,
            "tokens": config.tokens,
            "batch_size": config.batch_size,
            "rounds": args.rounds,
            "cache_length": request.cache_length,
            "prompt_tokens": runs[names[0]][0]["prompt_tokens"],
            "dtype": config.model.dtype,
            "num_params": model.num_params,
            "param_bytes": model.param_bytes,
        },
        "env": env,
    }

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
