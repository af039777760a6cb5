"""The one config schema: dataclasses registered in Hydra's ConfigStore.

Values live in conf/*.yaml; these classes give them types and check them. Type errors
(`tokens=abc`) fail when Hydra composes; range and cross-field checks run in
`__post_init__`, which `OmegaConf.to_object` triggers at job start (see `validate`),
before any model is built.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

ASSETS_DIR = Path(__file__).parent / "assets"

MODEL_ARCHS = (
    "tiny",
    "tiny_gemma4",
    "Gemma3_270M",
    "Gemma3_1B",
    "Gemma3_4B",
    "Gemma3_12B",
    "Gemma3_27B",
    "Gemma4_E2B",
    "Gemma4_E4B",
    "Gemma4_26B_A4B",
    "Gemma4_31B",
    "Gemma3n_E2B",
    "Gemma3n_E4B",
)
DTYPES = ("bfloat16", "float32")
ENGINES = ("fused", "sampler", "stream")
MODES = ("text", "image", "audio")
# The image soft-token budgets Gemma 4 supports ("70, 140, 280, 560 or 1120 tokens",
# ai.google.dev/gemma/docs/capabilities/vision; gemma's code only has the defaults 280 and
# 1120). The budget sets the resize (at most 9 x budget patches of 16 px) and the vision
# encoder's pooled output length (`sweep.gemma4.with_image_budget`).
GEMMA4_IMAGE_BUDGETS = (70, 140, 280, 560, 1120)
# Where the clip goes in an audio-mode prompt (Gemma 4's <|audio|> replaces it, sweep.request).
AUDIO_PLACEHOLDER = "<start_of_audio>"
PLATFORMS = ("cpu", "gpu", "tpu")
QUANTS = ("none", "int8", "int4")
WANDB_MODES = ("auto", "online", "offline", "disabled")


class ConfigError(ValueError):
    """A config value is wrong. The message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid config: {key}={value!r}: {allowed}")


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, value, f"must be one of {', '.join(allowed)}")


def _check_min(key: str, value: int | float | None, minimum: int | float) -> None:
    if value is not None and value < minimum:
        raise ConfigError(key, value, f"must be >= {minimum}")


@dataclass
class ModelConfig:
    name: str = MISSING
    # "tiny" = the embedded random-init model; otherwise a gemma.gm.nn class name.
    arch: str = MISSING
    # Local orbax checkpoint dir; null = random init from `seed` (same timing, noise outputs).
    checkpoint: str | None = None
    # Local sentencepiece file; null = the Gemma-3-compatible tokenizer built locally.
    tokenizer: str | None = None
    dtype: str = "bfloat16"
    text_only: bool = False

    def __post_init__(self) -> None:
        _check_choice("model.arch", self.arch, MODEL_ARCHS)
        _check_choice("model.dtype", self.dtype, DTYPES)


@dataclass
class MeshConfig:
    shape: list[int] = field(default_factory=lambda: [1])
    axes: list[str] = field(default_factory=lambda: ["data"])


@dataclass
class TopologyConfig:
    name: str = MISSING
    platform: str = "cpu"
    # Substring of jax's `device_kind` the devices must show; null = any.
    device_kind: str | None = None
    num_devices: int = 1
    num_hosts: int = 1
    mesh: MeshConfig = field(default_factory=MeshConfig)
    # Per-chip peaks for MBU/MFU and the fit check; null = unknown (cpu: probed at run time).
    peak_hbm_bytes_per_s: float | None = None
    peak_bf16_flops: float | None = None
    hbm_bytes: float | None = None

    def __post_init__(self) -> None:
        _check_choice("topology.platform", self.platform, PLATFORMS)
        _check_min("topology.num_devices", self.num_devices, 1)
        _check_min("topology.num_hosts", self.num_hosts, 1)
        for key in ("peak_hbm_bytes_per_s", "peak_bf16_flops", "hbm_bytes"):
            _check_min(f"topology.{key}", getattr(self, key), 1)
        if len(self.mesh.shape) != len(self.mesh.axes):
            raise ConfigError(
                "topology.mesh",
                {"shape": self.mesh.shape, "axes": self.mesh.axes},
                "shape and axes must have the same length",
            )
        size = 1
        for n in self.mesh.shape:
            size *= n
        if size != self.num_devices:
            raise ConfigError(
                "topology.mesh.shape",
                self.mesh.shape,
                f"its product must equal topology.num_devices={self.num_devices}",
            )


@dataclass
class ModeConfig:
    name: str = MISSING
    # The seed table's Mode column ("Text-Only", "With Image").
    label: str = MISSING
    # The user turn; for image mode it must contain <start_of_image> where the image goes.
    prompt: str = MISSING
    image: str | None = None
    # Audio mode only: a WAV file (mono or not, any rate: read as mono 16 kHz, sweep.audio).
    # The prompt holds <start_of_audio> where the clip goes (Gemma 4's <|audio|>).
    audio: str | None = None
    # Gemma 4 only: the most soft tokens one image becomes (its resize and pooled length);
    # null = the model's own (`num_mm_tokens_per_image`). One of GEMMA4_IMAGE_BUDGETS.
    image_tokens: int | None = None

    def __post_init__(self) -> None:
        _check_choice("mode.name", self.name, MODES)
        if self.image_tokens is not None and (
            isinstance(self.image_tokens, bool) or self.image_tokens not in GEMMA4_IMAGE_BUDGETS
        ):
            raise ConfigError(
                "mode.image_tokens",
                self.image_tokens,
                f"Gemma 4's image soft-token budgets are {list(GEMMA4_IMAGE_BUDGETS)} "
                "(or null: the model's own)",
            )
        if self.name == "image":
            if not self.image:
                raise ConfigError("mode.image", self.image, "image mode needs an image path")
            if "<start_of_image>" not in self.prompt:
                raise ConfigError(
                    "mode.prompt", self.prompt, "image mode needs <start_of_image> in the prompt"
                )
        if self.name == "audio":
            if not self.audio:
                raise ConfigError("mode.audio", self.audio, "audio mode needs a WAV file path")
            if AUDIO_PLACEHOLDER not in self.prompt:
                raise ConfigError(
                    "mode.prompt",
                    self.prompt,
                    f"audio mode needs {AUDIO_PLACEHOLDER} in the prompt",
                )
        elif self.audio is not None:
            raise ConfigError(
                "mode.audio",
                self.audio,
                f"only audio mode reads a clip (this is mode={self.name}): use mode=audio "
                "or leave mode.audio null",
            )


@dataclass
class EngineConfig:
    name: str = MISSING
    # KV cache length (static: one compile serves every token count that fits). null = auto:
    # the smallest power of two >= prompt + tokens, at least 2048 (sweep.request.auto_cache_length).
    cache_length: int | None = None

    def __post_init__(self) -> None:
        _check_choice("engine.name", self.name, ENGINES)
        _check_min("engine.cache_length", self.cache_length, 16)


@dataclass
class RunsConfig:
    warmup: int = 1
    benchmark: int = 10
    final: int = 1

    def __post_init__(self) -> None:
        _check_min("runs.warmup", self.warmup, 1)  # the warmup run is where compilation happens
        _check_min("runs.benchmark", self.benchmark, 1)
        _check_min("runs.final", self.final, 1)


@dataclass
class WandbConfig:
    project: str = "gemma-sweep"
    entity: str | None = None
    # null = the sweep's id (its output dir name), so a sweep's jobs group together.
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    # auto: WANDB_MODE if set; else online when an API key is configured, else offline;
    # disabled where the wandb package is not installed (bare accelerator images).
    mode: str = "auto"
    init_timeout: float = 10.0
    finish_timeout: float = 30.0

    def __post_init__(self) -> None:
        _check_choice("wandb.mode", self.mode, WANDB_MODES)
        if self.mode in ("online", "offline") and importlib.util.find_spec("wandb") is None:
            raise ConfigError(
                "wandb.mode",
                self.mode,
                "the wandb package is not installed here: use disabled or auto (auto disables "
                "tracking where wandb is missing), or install wandb",
            )
        _check_min("wandb.init_timeout", self.init_timeout, 0.1)
        _check_min("wandb.finish_timeout", self.finish_timeout, 0.1)


@dataclass
class MergeConfig:
    # Merge every record into the store and tables when a multirun ends.
    on_end: bool = True
    # Store (metrics.json), runs.csv, phases.csv, plots and index.html. A relative path is
    # relative to the directory the sweep was launched from.
    dir: str = "benchmarks"
    # The markdown tables (relative: to the launch directory).
    markdown: str = "BENCHMARKS.md"

    def __post_init__(self) -> None:
        for key in ("dir", "markdown"):
            if not str(getattr(self, key) or "").strip():
                raise ConfigError(f"merge.{key}", getattr(self, key), "must be a path")


@dataclass
class Config:
    model: ModelConfig = MISSING
    topology: TopologyConfig = MISSING
    mode: ModeConfig = MISSING
    engine: EngineConfig = MISSING
    tokens: int = 128  # new tokens generated per request (forced: EOS is not allowed to stop it)
    # Prompt length: null = the mode's prompt; N = a chat prompt of exactly N text tokens (BOS
    # and template included; image soft tokens on top), drawn from `seed` (sweep.request).
    prompt_tokens: int | None = None
    batch_size: int = 1
    runs: RunsConfig = field(default_factory=RunsConfig)
    seed: int = 0
    quant: str = "none"
    # Persistent XLA compilation cache; null disables it.
    compile_cache_dir: str | None = None
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # Where and whether a multirun merges its records when it ends (sweep/results/).
    merge: MergeConfig = field(default_factory=MergeConfig)
    # Rerun a sweep in place: keep jobs whose record is ok for the same config, run the rest
    # (sweep/resume.py). With false, an existing record is kept aside, never overwritten.
    resume: bool = False
    # Run each job's device work in a child process: a native crash becomes a `crashed`
    # record and the sweep goes on (sweep/isolate.py). Each job then builds its model anew.
    isolate: bool = False
    # List each job of the sweep (overrides, the fit check's verdict, estimated weight and KV
    # cache bytes) without building a model or writing a record (sweep/dryrun.py).
    dry_run: bool = False
    # One extra untimed request after the benchmark phase under `jax.profiler.trace`, saved in
    # <job dir>/profile (TensorBoard/XProf, Perfetto); the record names its files.
    profile: bool = False

    def __post_init__(self) -> None:
        _check_min("tokens", self.tokens, 1)
        _check_min("batch_size", self.batch_size, 1)
        _check_min("seed", self.seed, 0)  # else numpy's default_rng fails deep in the build
        _check_choice("quant", self.quant, QUANTS)
        _check_min("prompt_tokens", self.prompt_tokens, 1)  # the template's minimum: build_request
        cache_length = self.engine.cache_length
        if cache_length is not None and self.tokens + (self.prompt_tokens or 0) > cache_length:
            raise ConfigError(
                "tokens",
                self.tokens,
                f"tokens + prompt_tokens must fit engine.cache_length={cache_length} "
                "(raise engine.cache_length, or set it to null: sized to the request)",
            )
        if self.mode.name == "audio" and self.batch_size > 1:
            # gemma 4.0.1: the model's `audio` input is typed [batch, clips, samples], but its
            # `_encode_audio` reads row 0 only and Gemma4Sampler passes [1, clips, samples], so
            # a batch of prompts with audio fails in gemma itself, on every engine.
            raise ConfigError(
                "batch_size",
                self.batch_size,
                "audio mode runs one prompt at a time (gemma's Gemma 4 audio input takes the "
                "clips of one sequence only): use batch_size=1",
            )
        if self.mode.name == "audio" and self.model.text_only:
            why = " (model.text_only=true drops it)" if self.model.arch.startswith("Gemma4") else ""
            raise ConfigError(
                "mode",
                self.mode.name,
                f"model={self.model.name} has no audio encoder: gemma4_e2b and gemma4_e4b have "
                f"one{why}",
            )
        if self.mode.name == "image" and self.model.text_only:
            raise ConfigError(
                "mode", self.mode.name, f"model={self.model.name} is text-only: use mode=text"
            )


def _register() -> None:
    if not OmegaConf.has_resolver("sweep_asset"):
        # ${sweep_asset:name} -> absolute path of a file shipped in sweep/assets.
        OmegaConf.register_new_resolver("sweep_asset", lambda name: str(ASSETS_DIR / name))
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)


_register()


def _unknown_keys(node: DictConfig, schema: type, prefix: str = "") -> list[str]:
    """Keys in `node` that the schema does not define (Hydra lets `+key=value` add them)."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = []
    for key in node:
        path = f"{prefix}{key}"
        if key not in fields:
            unknown.append(path)
            continue
        sub_schema = _dataclass_type(fields[key])
        if sub_schema is not None and isinstance(node[key], DictConfig):
            unknown += _unknown_keys(node[key], sub_schema, prefix=f"{path}.")
    return unknown


def _dataclass_type(f: dataclasses.Field) -> type | None:
    hint = f.type if not isinstance(f.type, str) else globals().get(f.type)
    return hint if dataclasses.is_dataclass(hint) else None


def validate(cfg: DictConfig) -> Config:
    """Typed, checked copy of a composed config (job config, without the `hydra` node).

    Raises ConfigError naming the key, the value and what is allowed.
    """
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    unknown = _unknown_keys(plain, Config)
    if unknown:
        allowed = ", ".join(f.name for f in dataclasses.fields(Config))
        raise ConfigError(
            unknown[0],
            OmegaConf.select(plain, unknown[0]),
            f"unknown key (top-level keys: {allowed})",
        )
    schema = OmegaConf.structured(Config)
    try:
        merged = OmegaConf.merge(schema, plain)
        return OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except Exception as exc:  # OmegaConf's own validation error: keep its key/value wording
        cause = exc.__cause__ if isinstance(exc.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(key, getattr(exc, "value", None), str(exc).splitlines()[0]) from None
