"""The bare-accelerator-image path: gemma without tensorflow, wandb absent, params drawn on the
device. The tensorflow-free import runs in a child process whose import system refuses
tensorflow (and wandb), as on an image that lacks both."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sweep import models
from sweep.config import ConfigError, WandbConfig
from tests.conftest import REPO

# The path finder answers for tensorflow and wandb as where they are not installed.
_REFUSE = """
import importlib.abc, importlib.machinery, sys
class Absent(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in {"tensorflow", "wandb"}:
            return None  # what the path finder answers for a package that is not installed
        return super().find_spec(name, path, target)
sys.meta_path[:] = [Absent if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
class WhileStandIn(importlib.abc.MetaPathFinder):  # notes what is imported under the stand-in
    seen = []
    def find_spec(self, name, path=None, target=None):
        if "tensorflow" in sys.modules:
            self.seen.append(name)
        return None
sys.meta_path.insert(0, WhileStandIn())
"""


def _child(body: str) -> dict:
    code = _REFUSE + textwrap.dedent(body)
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(REPO / "src"), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gemma_runs_its_model_sampler_and_checkpoint_loader_without_tensorflow():
    got = _child(
        """
        import json, sys
        import jax, jax.numpy as jnp
        from sweep.gemma_lib import import_gemma, tensorflow_installed
        assert not tensorflow_installed()
        import_gemma()
        from gemma import gm
        from sweep.models import module_for, random_params
        from sweep.config import ModelConfig
        model = module_for(ModelConfig(name="tiny", arch="tiny"))
        params = random_params(model, seed=0, dtype=jnp.bfloat16)
        out = model.apply({"params": params}, tokens=jnp.asarray([[2, 10, 11]]))
        try:
            gm.ckpts.AnchoredPolicyLoader
            missing = ""
        except AttributeError as exc:
            missing = str(exc)
        print(json.dumps({
            "logits": list(out.logits.shape),
            "finite": bool(jnp.isfinite(out.logits).all()),
            "load_params": callable(gm.ckpts.load_params),
            "sampler": gm.text.Sampler.__name__,
            "missing": missing,
            "tensorflow": "tensorflow" in sys.modules,
            "wandb": "wandb" in sys.modules,
            "under_standin": WhileStandIn.seen,
        }))
        """
    )
    assert got["logits"] == [1, 3, 262144] and got["finite"]
    assert got["load_params"] and got["sampler"] == "Sampler"
    assert "AnchoredPolicyLoader" in got["missing"] and "tensorflow" in got["missing"]
    assert got["tensorflow"] is False and got["wandb"] is False
    # Only kauldron's own typing modules load while the stand-in is in sys.modules: a library
    # that checks for tensorflow at its import (etils.enp) must never see it.
    assert got["under_standin"] and all(
        name.startswith("kauldron") for name in got["under_standin"]
    ), got["under_standin"]


def test_wandb_mode_auto_is_disabled_and_online_or_offline_refused_without_wandb():
    got = _child(
        """
        import json
        from sweep.tracking.mode import resolve_mode
        from sweep.config import ConfigError, WandbConfig
        refused = {}
        for mode in ("online", "offline"):
            try:
                WandbConfig(mode=mode)
            except ConfigError as exc:
                refused[mode] = str(exc)
        WandbConfig(mode="disabled")
        print(json.dumps({"auto": resolve_mode("auto"), "refused": refused}))
        """
    )
    assert got["auto"][:2] == ["disabled", "disabled"] and "not installed" in got["auto"][2]
    for mode in ("online", "offline"):
        assert f"wandb.mode='{mode}'" in got["refused"][mode]
        assert "not installed" in got["refused"][mode]


def test_with_wandb_installed_offline_is_accepted():
    pytest.importorskip("wandb")
    WandbConfig(mode="offline")  # no ConfigError
    with pytest.raises(ConfigError, match=r"wandb\.mode='nope'"):
        WandbConfig(mode="nope")


def test_device_fill_draws_the_model_shapes_with_neutral_norms_and_few_programs():
    model = models.module_for(models.ModelConfig(name="tiny", arch="tiny"))
    shapes = models.param_shapes(model, dtype=jnp.bfloat16)
    models._fill_program.cache_clear()
    params = models._device_fill(
        models.param_shapes(model), seed=3, dtype=jnp.dtype(jnp.bfloat16), mesh=None
    )
    assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == jax.tree.map(
        lambda s: (s.shape, s.dtype), shapes
    )
    flat = dict(
        (jax.tree_util.keystr(p), np.asarray(x, np.float32))
        for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
    )
    norms = [v for k, v in flat.items() if k.endswith("['scale']") and "siglip" not in k]
    assert norms and all((v == 0).all() for v in norms)
    embedding = flat["['embedder']['input_embedding']"]
    assert abs(embedding.std() - 0.02) < 0.002 and abs(embedding.mean()) < 0.002
    # Layers share shapes: far fewer programs than leaves.
    assert models._fill_program.cache_info().currsize < len(flat) / 2
    again = models._device_fill(
        models.param_shapes(model), seed=3, dtype=jnp.dtype(jnp.bfloat16), mesh=None
    )
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again), strict=True)
    )
