"""The one owner of what a process keeps between jobs: a model, its engines, their programs.

A sweep's jobs run one after another in one process (Hydra's basic launcher), so a token-count
sweep builds the model once and compiles its programs once. What must never happen is that an
earlier model stays alive: a `model=`/`seed=`/`quant=` sweep would keep every model's params
(and each engine's copies and compiled programs) until the host or the chip runs out. So the
cache holds exactly one model: asking for another releases the old model, every engine built
on it (with their stored programs) and JAX's compiled-program caches, before the new one is
built.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from typing import Any

from sweep.config import ModelConfig

log = logging.getLogger("sweep")


class ModelCache:
    def __init__(self) -> None:
        self._spec_key: tuple | None = None
        self._spec = None  # models.ModelSpec
        self._model_key: tuple | None = None
        self._model = None  # models.LoadedModel
        self._engines: dict[tuple[str, int, int | None], Any] = {}

    def spec(self, cfg: ModelConfig):
        """Module and tokenizer for `cfg` (no weights): what a request is sized with."""
        from sweep.models import make_spec

        key = dataclasses.astuple(cfg)
        if key != self._spec_key:
            self._spec, self._spec_key = make_spec(cfg), key
        return self._spec

    def model(self, cfg: ModelConfig, *, seed: int, quant: str = "none", mesh=None):
        """(the model for these settings, whether it was already loaded). Another model
        releases the one held before it is built."""
        from sweep.models import build_model

        mesh_key = None if mesh is None else (tuple(mesh.shape.items()), tuple(mesh.devices.flat))
        key = (dataclasses.astuple(cfg), seed, quant, mesh_key)
        if key == self._model_key:
            return self._model, True
        self.release()
        self._model = build_model(cfg, seed=seed, quant=quant, mesh=mesh, spec=self.spec(cfg))
        self._model_key = key
        return self._model, False

    def engine(self, name: str, model, *, cache_length: int, image_tokens: int | None = None):
        """(the engine `name` over the held `model`, whether it was reused). Reusing it reuses
        its compiled programs: a sweep over `tokens` compiles once."""
        from sweep.engine import make_engine

        if model is not self._model:
            raise ValueError("engines are only built over the model this cache holds")
        key = (name, cache_length, image_tokens)
        if key in self._engines:
            return self._engines[key], True
        self._engines[key] = engine = make_engine(
            name, model, cache_length=cache_length, image_tokens=image_tokens
        )
        return engine, False

    @property
    def held(self) -> tuple[int, int]:
        """(models held, engines held): at most one model."""
        return int(self._model is not None), len(self._engines)

    @property
    def loaded(self):
        """The model held now (None when none is)."""
        return self._model

    def engines(self) -> list:
        return list(self._engines.values())

    def release(self) -> None:
        """Drop the model, its engines and JAX's compiled programs; free their memory now."""
        if self._model is None and not self._engines:
            return
        import jax

        self._engines.clear()
        self._model = self._model_key = None
        gc.collect()  # engines and jitted functions hold reference cycles
        jax.clear_caches()  # executables specialised to the old model's shapes


MODELS = ModelCache()
