"""Gemma 4 and Gemma 3n on the shape path: every conf/model/*.yaml composes, and the fit check's
shape pass (params by `jax.eval_shape`, KV cache bytes) gives the published sizes on the CPU,
with no weight built and nothing downloaded."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from sweep.config import validate
from sweep.memory import kv_cache_bytes, weight_bytes
from sweep.models import gemma4_vision_input, module_for, param_shapes, tree_bytes
from sweep.preflight import fit_problem
from tests.conftest import REPO

CONF = REPO / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))

# Parameter counts (billions, every param of the class incl. encoders and embedding tables),
# as published for the real models: Gemma 3 (270M, 1B, 4.3B, 12.2B, 27.4B); Gemma 3n E2B/E4B
# (~5B/~8B "raw" with the audio encoder gemma 4.0.1 does not ship: 4.85B/7.25B without);
# Gemma 4 E2B 5.1B and E4B 8B "with embeddings", 26B A4B (25.2B + vision), 31B. A range, wide
# enough for rounding and narrow enough to catch a missing encoder or embedding table.
PARAMS_B = {
    "gemma3_270m": (0.26, 0.28),
    "gemma3_1b": (0.98, 1.02),
    "gemma3_4b": (4.2, 4.4),
    "gemma3_12b": (12.0, 12.4),
    "gemma3_27b": (27.0, 27.8),
    "gemma3n_e2b": (4.75, 4.95),
    "gemma3n_e4b": (7.15, 7.35),
    "gemma4_e2b": (5.05, 5.2),
    "gemma4_e4b": (7.9, 8.1),
    "gemma4_26b_a4b": (25.5, 26.1),
    "gemma4_31b": (31.0, 31.6),
    "tiny": (0.015, 0.02),
    # 2 x 262144 x 64 (embeddings) + 262144 x 4 x 8 (per-layer) + layers and vision (~1M).
    "tiny_gemma4": (0.0255, 0.0275),
}

# KV cache bytes per position of one sequence, bf16: 2 (K and V) x 2 bytes x sum over layers
# of kv heads x head dim, from each architecture's published layout (Gemma 4: global layers
# have 512-wide keys, and 26B/31B fewer global kv heads).
KV_BYTES_PER_POSITION = {
    "gemma3_4b": 2 * 2 * 34 * 4 * 256,
    "gemma3n_e2b": 2 * 2 * 30 * 2 * 256,
    "gemma3n_e4b": 2 * 2 * 35 * 2 * 256,
    # 35 layers: 28 sliding (1 kv head x 256), 7 global (1 x 512).
    "gemma4_e2b": 2 * 2 * (28 * 1 * 256 + 7 * 1 * 512),
    # 42 layers: 35 sliding (2 x 256), 7 global (2 x 512).
    "gemma4_e4b": 2 * 2 * (35 * 2 * 256 + 7 * 2 * 512),
    # 30 layers: 25 sliding (8 x 256), 5 global (2 x 512).
    "gemma4_26b_a4b": 2 * 2 * (25 * 8 * 256 + 5 * 2 * 512),
    # 60 layers: 50 sliding (16 x 256), 10 global (4 x 512).
    "gemma4_31b": 2 * 2 * (50 * 16 * 256 + 10 * 4 * 512),
    # 4 layers: 2 sliding (1 x 32), 2 global (1 x 64).
    "tiny_gemma4": 2 * 2 * (2 * 1 * 32 + 2 * 1 * 64),
}


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return validate(compose(config_name="config", overrides=list(overrides)))


@functools.cache
def shapes_of(name: str):
    """(module, bf16 param shapes) of conf/model/<name>.yaml, once per test session."""
    model_cfg = composed(f"model={name}").model
    module = module_for(model_cfg)
    return module, param_shapes(module, dtype=model_cfg.dtype)


def test_every_shipped_architecture_has_a_config():
    expected = {
        "gemma4_e2b",
        "gemma4_e4b",
        "gemma4_26b_a4b",
        "gemma4_31b",
        "gemma3n_e2b",
        "gemma3n_e4b",
    }
    assert expected <= set(MODELS)
    assert set(MODELS) <= set(PARAMS_B), "a new model config needs its sizes here"


@pytest.mark.parametrize("name", [m for m in MODELS if m in PARAMS_B])
def test_shape_pass_gives_the_published_parameter_count(name):
    config = composed(f"model={name}")
    module, shapes = shapes_of(name)
    params = sum(x.size for x in jax.tree.leaves(shapes))
    low, high = PARAMS_B[name]
    assert low * 1e9 <= params <= high * 1e9, f"{name}: {params / 1e9:.3f}B params"
    # bf16: two bytes a param, and int8 shrinks all but the embedding tables.
    assert weight_bytes(config.model) == tree_bytes(shapes) == 2 * params
    embed = tree_bytes(shapes["embedder"])
    assert weight_bytes(config.model, "int8") == embed + (2 * params - embed) // 2
    # The head of every multimodal config gets its params from the shape pass.
    if module.config.vision_encoder is not None:
        assert "vision_encoder" in shapes
        assert "mm_input_projection" in shapes["embedder"]


@pytest.mark.parametrize("name", sorted(KV_BYTES_PER_POSITION))
def test_kv_cache_bytes_follow_the_architecture(name):
    module, _ = shapes_of(name)
    per_position = KV_BYTES_PER_POSITION[name]
    for batch, length in ((1, 2048), (4, 8192)):
        got = kv_cache_bytes(module, batch_size=batch, cache_length=length, dtype="bfloat16")
        kv = batch * length * per_position
        # On top of K and V: each layer's int32 positions per slot and its end index.
        layers = len(module.config.attention_types)
        assert kv <= got <= kv + layers * batch * (4 * length + 64), (name, got, kv)


def test_gemma4_shapes_include_every_encoder_and_per_layer_embeddings():
    _, shapes = shapes_of("gemma4_e2b")
    embedder = shapes["embedder"]
    # Reached only through an image (not by text-only init): gemma's preprocessed patches.
    assert embedder["mm_input_projection"]["w"].shape == (768, 1536)
    # Reached only through audio.
    assert embedder["audio_input_projection"]["w"].shape == (1536, 1536)
    audio = sum(x.size for x in jax.tree.leaves(shapes["audio_encoder"]))
    assert 0.25e9 < audio < 0.35e9
    assert embedder["per_layer_embeddings"].shape == (262144, 35, 256)


def test_text_only_gemma4_has_no_encoders():
    from sweep.config import ModelConfig

    module = module_for(ModelConfig(name="e2b_text", arch="Gemma4_E2B", text_only=True))
    shapes = param_shapes(module)
    assert "vision_encoder" not in shapes and "audio_encoder" not in shapes
    assert "mm_input_projection" not in shapes["embedder"]
    text = sum(x.size for x in jax.tree.leaves(shapes))
    full = sum(x.size for x in jax.tree.leaves(shapes_of("gemma4_e2b")[1]))
    assert 0.45e9 < full - text < 0.5e9  # vision 167M + audio 305M + projections


def test_gemma4_vision_input_is_gemmas_own_preprocessing():
    """An 800x800 image (the one of the issue) becomes gemma's patches and soft-token count."""
    from gemma.gm.nn.gemma4 import _transformer as gemma4_transformer
    from gemma.gm.nn.gemma4.vision import _preprocessing

    module, _ = shapes_of("gemma4_e2b")
    enc = module.config.vision_encoder
    images = np.zeros((2, 1, 800, 800, 3), np.uint8)  # batch 2, one image each
    vision = gemma4_vision_input(enc, images)
    assert isinstance(vision, gemma4_transformer.PreprocessedVisionInput)
    count = _preprocessing.predict_soft_token_count(
        800,
        800,
        patch_size=enc.patch_size,
        max_soft_tokens=enc.num_mm_tokens_per_image,
        pooling_kernel_size=enc.pooling_kernel_size,
    )
    assert 0 < count <= enc.num_mm_tokens_per_image
    assert vision.soft_token_counts == (count, count)
    patch_dim = enc.patch_size**2 * 3
    assert vision.patches.shape == (1, 2 * enc.max_patches, patch_dim)
    assert vision.positions_xy.shape == (1, 2 * enc.max_patches, 2)
    real = int((np.asarray(vision.positions_xy)[0, : enc.max_patches] >= 0).all(-1).sum())
    assert real == count * enc.pooling_kernel_size**2


@pytest.mark.parametrize(
    ("name", "topology", "fits"),
    [
        ("gemma4_31b", "h200", True),  # ~58 GiB + 1.7 GiB of cache in 141 GB
        ("gemma4_31b", "v5e-1", False),  # 16 GiB
        ("gemma4_e2b", "v5e-1", True),  # ~9.5 GiB
        ("gemma4_26b_a4b", "v6e-1", False),  # ~48 GiB in 32 GiB
    ],
)
def test_fit_check_on_gemma4(name, topology, fits):
    config = composed(f"model={name}", f"topology={topology}")
    problem = fit_problem(config, cache_length=2048)
    if fits:
        assert problem is None
    else:
        assert problem is not None and f"model={name}" in problem and "GiB" in problem


@pytest.fixture(scope="module")
def tiny_gemma4_f32():
    """tiny_gemma4, random-init in float32 (no bf16 ties between the engines' argmaxes)."""
    from sweep.models import build_model

    config = composed("model=tiny_gemma4", "model.dtype=float32", "tokens=12", "batch_size=2")
    return config, build_model(config.model, seed=0)


def test_tiny_gemma4_random_init_is_not_silent(tiny_gemma4_f32):
    """Gemma 4 norms multiply by `scale` (not 1 + scale): random init sets them to one."""
    _, model = tiny_gemma4_f32
    params = model.params
    assert np.all(np.asarray(params["final_norm"]["scale"]) == 1)
    assert np.all(np.asarray(params["layer_0"]["skip_scale"]) == 1)
    vision_norm = params["vision_encoder"]["transformer"]["stacked_layers"]["block"]
    assert np.all(np.asarray(vision_norm["pre_attention_norm"]["scale"]) == 1)


def test_tiny_gemma4_text_engines_generate_the_same_tokens(tiny_gemma4_f32):
    """Ours (fused prefill + decode loop over a cache that the last two layers share) and
    gemma's Sampler pick the same 12 greedy tokens, batch 2, and they are not degenerate."""
    from sweep.engine import FusedEngine, SamplerEngine
    from sweep.request import build_request

    config, model = tiny_gemma4_f32
    request = build_request(config, model, None)
    fused = FusedEngine(model, cache_length=request.cache_length).generate(request)
    sampler = SamplerEngine(model, cache_length=request.cache_length).generate(request)
    assert fused.new_tokens == sampler.new_tokens == 12
    assert fused.token_ids.tolist() == sampler.token_ids.tolist()
    assert len(set(fused.token_ids[0].tolist())) > 3
    assert fused.prompt_tokens == sampler.prompt_tokens == request.prompt_tokens


def test_image_mode_on_gemma4_is_a_clear_config_error():
    """Until the engines build Gemma 4's image input, image mode stops before any model is
    built (here: the dry run's sizing), naming the key, the value and the model."""
    from sweep.cache import MODELS as CACHE
    from sweep.config import ConfigError
    from sweep.request import build_request

    config = composed("model=tiny_gemma4", "mode=image")
    with pytest.raises(ConfigError) as info:
        build_request(config, CACHE.spec(config.model), None)
    assert info.value.key == "mode"
    assert "model=tiny_gemma4" in str(info.value) and "Gemma 4" in str(info.value)
