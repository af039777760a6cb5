"""Importing gemma where tensorflow is absent (bare accelerator images).

gemma's inference code never runs tensorflow, but two imports on its way reach for it:

1. `kauldron.typing.array_types` does `import tensorflow as tf` only to name `tf.Tensor` in its
   array annotations (`TfArray`, ...) and in an isinstance tuple. The import of `kauldron.typing`
   gets a stand-in module whose `Tensor` class no value is an instance of; the stand-in leaves
   `sys.modules` straight after, so later imports of tensorflow fail as usual. Everything else
   `kauldron.typing` imports is imported first, outside that window: some libraries decide at
   their own import whether tensorflow is loaded (`etils.enp` then reads `tf.dtypes`), and they
   must not see the stand-in.
2. `gemma.gm.ckpts/__init__` imports `_policy` and `_lora`, training-time loaders built on
   `kauldron.train` (tensorflow, grain, tfds). Every model module imports `gemma.gm.ckpts._paths`,
   which runs that `__init__` first. The package is registered without its `__init__` instead;
   it serves the inference names (`load_params`, `save_params`, `CheckpointPath`,
   `LoadCheckpoint`) from their own modules and says why the training ones are missing.

Where tensorflow is installed nothing changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

_CKPTS = "gemma.gm.ckpts"
# What kauldron.typing imports, besides array_types' tensorflow (kauldron 1.4.4).
_KAULDRON_TYPING_NEEDS = (
    "numpy",
    "jax",
    "jaxtyping",
    "etils.epy",
    "etils.enp",
    "clu.data.dataset_iterator",
    "lark",
    "typeguard",
)
# name -> module of gemma.gm.ckpts that defines it, without kauldron.train
_INFERENCE_CKPT_NAMES = {
    "load_params": "_checkpoint",
    "save_params": "_checkpoint",
    "LoadCheckpoint": "_checkpoint",
    "CheckpointPath": "_paths",
}


def tensorflow_installed() -> bool:
    if "tensorflow" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def _tensorflow_standin() -> types.ModuleType:
    module = types.ModuleType("tensorflow", "sweep.gemma_lib stand-in: tensorflow not installed")

    class Tensor:  # never instantiated: isinstance(x, Tensor) is false for every array
        pass

    module.Tensor = Tensor
    return module


def _ckpts_without_training() -> types.ModuleType:
    spec = importlib.util.find_spec(_CKPTS)
    package = types.ModuleType(_CKPTS, "gemma.gm.ckpts without its training-time loaders")
    package.__path__ = list(spec.submodule_search_locations)
    package.__package__ = _CKPTS
    package.__file__ = spec.origin

    def __getattr__(name: str):
        if name in _INFERENCE_CKPT_NAMES:
            module = importlib.import_module(f"{_CKPTS}.{_INFERENCE_CKPT_NAMES[name]}")
            return getattr(module, name)
        raise AttributeError(
            f"gm.ckpts.{name} is not available: tensorflow is not installed, and "
            f"gemma's training-time loaders need it (sweep.gemma_lib serves only "
            f"{sorted(_INFERENCE_CKPT_NAMES)})"
        )

    package.__getattr__ = __getattr__
    return package


def import_gemma() -> None:
    """Import gemma (and kauldron's typing) so that its model, sampler, tokenizer and checkpoint
    loading work with or without tensorflow. Idempotent."""
    if "kauldron.typing" not in sys.modules and not tensorflow_installed():
        for name in _KAULDRON_TYPING_NEEDS:
            importlib.import_module(name)
        sys.modules["tensorflow"] = _tensorflow_standin()
        try:
            import kauldron.typing  # noqa: F401
        finally:
            del sys.modules["tensorflow"]
        if _CKPTS not in sys.modules:
            import gemma.gm

            # What the import system does for a loaded submodule: bind it on its parent
            # (gemma.gm's lazy `ckpts` attribute would otherwise look it up again, forever).
            gemma.gm.ckpts = sys.modules[_CKPTS] = _ckpts_without_training()
    from gemma import gm  # noqa: F401
