"""Gemma 4 and Gemma 3n on the shape path: every conf/model/*.yaml composes, and the fit check's
shape pass (params by `jax.eval_shape`, KV cache bytes) gives the published sizes on the CPU,
with no weight built and nothing downloaded."""

from __future__ import annotations

import functools
import json

import jax
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from sweep.config import ConfigError, validate
from sweep.gemma4 import gemma4_vision_input
from sweep.memory import kv_cache_bytes, weight_bytes
from sweep.models import module_for, param_shapes, tree_bytes
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
    "tiny_gemma4": (0.0260, 0.0265),
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
    # The audio conformer: its norms one, its clipped einsums unclipped (gemma's +-inf).
    layer = params["audio_encoder"]["conformer/stacked_layers_0"]
    assert np.all(np.asarray(layer["final_ln"]["scale"]) == 1)
    query = layer["trans_atten"]["self_atten"]["query"]
    assert float(query["clip_input_min"]) == -np.inf and float(query["clip_output_max"]) == np.inf


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


def test_gemma4_local_tokenizer_has_gemma4s_special_ids():
    """With `model.tokenizer: null` a Gemma 4 arch gets the local Gemma 4 variant, loaded as
    gm.text.Gemma4Tokenizer, its pieces at the ids of Gemma4Tokenizer.special_tokens; the
    Gemma 3 one keeps its pieces."""
    from gemma import gm

    from sweep.cache import MODELS as CACHE

    g4 = CACHE.spec(composed("model=tiny_gemma4").model).tokenizer
    assert isinstance(g4, gm.text.Gemma4Tokenizer)
    special = gm.text.Gemma4Tokenizer.special_tokens
    pieces = {
        "<|turn>": special.START_OF_TURN,
        "<turn|>": special.END_OF_TURN,
        "<|image>": special.START_OF_IMAGE,
        "<|image|>": special.IMAGE_PLACEHOLDER,
        "<image|>": special.END_OF_IMAGE,
        "<|audio>": special.START_OF_AUDIO,
        "<|audio|>": special.AUDIO_PLACEHOLDER,
        "<audio|>": special.END_OF_AUDIO,
    }
    for piece, want in pieces.items():
        assert g4._sp.piece_to_id(piece) == int(want), piece
    g3 = CACHE.spec(composed("model=tiny").model).tokenizer
    assert isinstance(g3, gm.text.Gemma3Tokenizer) and not isinstance(g3, gm.text.Gemma4Tokenizer)
    assert g3._sp.piece_to_id("<start_of_turn>") == 105
    assert g3._sp.piece_to_id("<start_of_image>") == 255999


def _image_request(*overrides: str):
    from sweep import preflight
    from sweep.cache import MODELS as CACHE
    from sweep.request import build_request

    config = composed("model=tiny_gemma4", "mode=image", *overrides)
    spec = CACHE.spec(config.model)
    return spec, build_request(config, spec, preflight.load_image(config.mode.image))


def test_gemma4_image_request_uses_its_template_placeholder_and_soft_tokens():
    """Gemma 4's chat template and <|image|>; prompt_tokens = its tokens + the soft tokens
    gemma predicts for this image under the budget + 3 framing tokens (\\n\\n, <|image>,
    <image|>, \\n\\n replace the placeholder)."""
    from gemma.gm.nn.gemma4.vision import _preprocessing

    spec, request = _image_request()
    prompt = request.prompts[0]
    assert prompt.startswith("<|turn>user\n") and prompt.endswith("<turn|>\n<|turn>model\n")
    assert "<|image|>" in prompt and "<start_of_image>" not in prompt
    ids = spec.tokenizer.encode(prompt, add_bos=True)
    assert ids.count(258880) == 1
    encoder = spec.config.vision_encoder
    h, w = request.images.shape[2:4]
    soft = _preprocessing.predict_soft_token_count(
        h, w, patch_size=16, max_soft_tokens=encoder.num_mm_tokens_per_image
    )
    assert soft > 0 and request.image_tokens == encoder.num_mm_tokens_per_image
    assert request.prompt_tokens == len(ids) + soft + 3


def test_image_budget_is_validated_and_grows_the_prompt():
    from sweep.config import ConfigError

    counts = [_image_request(f"mode.image_tokens={b}")[1].prompt_tokens for b in (70, 280, 1120)]
    assert counts[0] < counts[1] < counts[2], counts
    with pytest.raises(ConfigError) as info:
        composed("model=tiny_gemma4", "mode=image", "mode.image_tokens=100")
    assert info.value.key == "mode.image_tokens" and "1120" in str(info.value)
    assert "100" in str(info.value)
    with pytest.raises(ConfigError) as info:  # Gemma 3: its image is a fixed count
        from sweep.cache import MODELS as CACHE
        from sweep.request import build_request

        config = composed("model=tiny", "mode=image", "mode.image_tokens=280")
        build_request(config, CACHE.spec(config.model), None)
    assert info.value.key == "mode.image_tokens" and "model=tiny" in str(info.value)


def test_gemma4_image_sweep_same_tokens_on_every_engine(tmp_path):
    """The acceptance sweep: tiny_gemma4, text and image, on the three engines: every job ok,
    the same tokens across engines per mode, image prompts longer by the soft tokens, and no
    compile in a timed phase."""
    from tests.conftest import records, run_sweep

    proc = run_sweep(
        tmp_path,
        "model=tiny_gemma4",
        "mode=text,image",
        "tokens=8",
        "engine=fused,sampler,stream",
        "runs.benchmark=2",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    recs = records(tmp_path)
    assert len(recs) == 6 and all(r["status"] == "ok" for r in recs)
    by_mode: dict[str, list] = {}
    for r in recs:
        by_mode.setdefault(r["config"]["mode"]["name"], []).append(r)
        for phase in ("benchmark", "final"):
            assert r["phases"][phase]["compiles"] == 0, (r["config"]["engine"], phase)
    for mode, rs in by_mode.items():
        assert len({str(r["generated_token_ids"]) for r in rs}) == 1, mode
        assert len({r["phases"]["final"]["runs"][0]["prompt_tokens"] for r in rs}) == 1, mode
    text = by_mode["text"][0]["phases"]["final"]["runs"][0]["prompt_tokens"]
    image = by_mode["image"][0]["phases"]["final"]["runs"][0]["prompt_tokens"]
    assert (
        image != text
        and by_mode["image"][0]["generated_token_ids"] != by_mode["text"][0]["generated_token_ids"]
    )


# --- What a decode step reads (sweep.costs): encoders, lookup tables, experts, shared K/V ---


def _tiny_moe_module(num_experts=8, top_k=2):
    """A toy Gemma 4 mixture of experts (the 26B A4B's layer: attention, a dense shared `mlp2`
    and a routed MoE `mlp`), 2 layers of width 64, `num_experts` experts of width 16."""
    from gemma.gm.nn.gemma4 import _config, _modules, _transformer

    local, glob = _modules.AttentionType.LOCAL_SLIDING, _modules.AttentionType.GLOBAL
    config = _config.TransformerConfig(
        num_embed=512,
        embed_dim=64,
        hidden_dim=32,
        num_heads=2,
        head_dim=32,
        num_kv_heads=1,
        final_logit_softcap=30.0,
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        attention_types=(local, glob),
        sliding_window_size=64,
        global_rope_proportion=0.25,
        local_rope_proportion=1.0,
        enable_moe=True,
        num_experts=num_experts,
        expert_dim=16,
        top_k_experts=top_k,
        moe_dense_hidden_dim=32,
    )
    return _transformer.Transformer(config=config)


class _Topology:
    platform, num_devices = "gpu", 1
    peak_hbm_bytes_per_s, peak_bf16_flops = 4.8e12, 9.9e14


def _cost(module, shapes, batch_size):
    """`costs.cost_model` on a params shape tree (no weights, no CPU probe)."""
    from types import SimpleNamespace

    from sweep.costs import cost_model

    model = SimpleNamespace(model=module, params=shapes, config=module.config)
    return cost_model(model, _Topology(), {}, batch_size=batch_size)


def test_moe_decode_reads_the_shared_weights_and_the_routed_experts():
    module = _tiny_moe_module(num_experts=8, top_k=2)
    shapes = param_shapes(module, dtype="bfloat16")
    # Independently of sweep.costs: a leaf of a layer's `mlp` with one slice per expert
    # (leading dim 8) is an expert weight; everything else is read whole every step.
    expert = shared = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        name = jax.tree_util.keystr(path)
        if "['mlp']" in name and leaf.shape[0] == 8:
            expert += 2 * leaf.size
        else:
            shared += 2 * leaf.size
    # 2 layers x (gating 8x2x16x64 + linear 8x16x64 + per-expert scales 8), bf16.
    assert expert == 2 * 2 * (8 * 2 * 16 * 64 + 8 * 16 * 64 + 8)
    assert shared > 0
    total = tree_bytes(shapes)
    for batch, rule, experts_read in (
        (1, "moe_top_k", 2),  # exact: top-2 of 8 per layer
        (2, "moe_upper_bound", 4),
        (3, "moe_upper_bound", 6),
        (4, "moe_upper_bound", 8),  # every expert, at most
        (16, "moe_upper_bound", 8),
    ):
        cost = _cost(module, shapes, batch)
        assert cost.decode_weight_bytes == shared + expert * experts_read // 8, batch
        assert cost.decode_bytes_rule == rule
        assert cost.decode_weight_bytes <= total
    # Prefill: a token goes through the shared matmuls (not the input embedding: a lookup)
    # and its top-2 experts.
    embed = shapes["embedder"]["input_embedding"].size
    shared_params, expert_params = shared // 2, expert // 2
    flops = 2 * (shared_params - embed + expert_params * 2 // 8)
    assert _cost(module, shapes, 1).prefill_flops_per_token == flops


def test_cost_model_record_round_trip_and_older_records():
    """The rule travels with the record's cost_model block; a block without it (older
    records) reads back as "dense"; an unknown rule is a bad record."""
    import dataclasses
    import json

    from sweep.record import RecordError
    from sweep.results.jobs import _cost_model

    module = _tiny_moe_module()
    cost = _cost(module, param_shapes(module, dtype="bfloat16"), 2)
    block = json.loads(json.dumps(dataclasses.asdict(cost), allow_nan=False))
    assert block["decode_bytes_rule"] == "moe_upper_bound"
    assert _cost_model({"cost_model": block}) == cost
    old = {k: v for k, v in block.items() if k != "decode_bytes_rule"}
    assert _cost_model({"cost_model": old}).decode_bytes_rule == "dense"
    with pytest.raises(RecordError, match="decode_bytes_rule"):
        _cost_model({"cost_model": block | {"decode_bytes_rule": "guess"}})


def test_gemma4_e2b_decode_skips_encoders_and_per_layer_tables():
    module, shapes = shapes_of("gemma4_e2b")
    embedder = shapes["embedder"]
    table = embedder["per_layer_embeddings"]  # (262144, 35, 256)
    not_read = (
        tree_bytes(shapes["vision_encoder"])
        + tree_bytes(shapes["audio_encoder"])
        + tree_bytes(embedder["mm_input_projection"])
        + tree_bytes(embedder["audio_input_projection"])
        + tree_bytes(table)
    )
    row = 35 * 256 * 2  # one token's per-layer embeddings, bf16
    total = tree_bytes(shapes)
    for batch in (1, 4):
        cost = _cost(module, shapes, batch)
        assert cost.decode_weight_bytes == total - not_read + batch * row
        assert cost.decode_bytes_rule == "dense"
    # Less than half of main's figure (every param but the vision encoder's: 9.9 GB).
    assert _cost(module, shapes, 1).decode_weight_bytes < 0.5 * (
        total - tree_bytes(shapes["vision_encoder"])
    )


@pytest.mark.parametrize("name", ["gemma3_4b", "tiny"])
def test_gemma3_decode_bytes_are_unchanged(name):
    """Gemma 3 keeps main's figures: every param but the vision encoder's, read per step;
    prefill through every decoder param but the input embedding; K/V of every layer."""
    module, shapes = shapes_of(name)
    vision = shapes.get("vision_encoder", {})
    for batch in (1, 8):
        cost = _cost(module, shapes, batch)
        assert cost.decode_weight_bytes == tree_bytes(shapes) - tree_bytes(vision)
        assert cost.decode_bytes_rule == "dense"
    params = sum(x.size for x in jax.tree.leaves(shapes))
    matmul = params - sum(x.size for x in jax.tree.leaves(vision))
    matmul -= shapes["embedder"]["input_embedding"].size
    assert cost.prefill_flops_per_token == 2 * matmul
    if name in KV_BYTES_PER_POSITION:
        kv = cost.kv_bytes_per_position_global + cost.kv_bytes_per_position_local
        assert kv == KV_BYTES_PER_POSITION[name]


@pytest.mark.parametrize(
    ("name", "layers", "kv_global", "kv_local"),
    [
        # Layers 2-3 attend to layers 0-1's K/V: one sliding (1 x 32) and one global (1 x 64).
        ("tiny_gemma4", 4, 2 * 2 * 64, 2 * 2 * 32),
        # The last 20 of 35 layers share: 15 own K/V, 12 sliding (1 x 256), 3 global (1 x 512).
        ("gemma4_e2b", 35, 2 * 2 * 3 * 512, 2 * 2 * 12 * 256),
    ],
)
def test_kv_bytes_per_position_count_shared_kv_once(name, layers, kv_global, kv_local):
    """gemma's `init_cache` still allocates K/V for the layers that reuse an earlier layer's
    (so the memory figures keep them), but a decode step reads each position once: the cost
    model counts the owners only."""
    module, shapes = shapes_of(name)
    cache = jax.eval_shape(
        lambda: module.config.init_cache(batch_size=1, dtype="bfloat16", cache_length=1)
    )
    assert len(cache) == layers  # not omitted by gemma
    cost = _cost(module, shapes, 1)
    assert (cost.kv_bytes_per_position_global, cost.kv_bytes_per_position_local) == (
        kv_global,
        kv_local,
    )
    allocated = sum(layer[k].size * 2 for layer in cache.values() for k in ("k", "v"))
    assert kv_global + kv_local < allocated


@pytest.mark.parametrize("preset", ["gemma4_h200", "gemma4_v6e"])
def test_gemma4_presets_sweep_only_models_that_fit_their_chip(preset):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    models = params["model"].split(",")
    assert all(m.startswith("gemma4_") for m in models) and len(models) >= 2
    assert params["tokens"] == "128,256,512,1024" and params["mode"] == "text,image"
    for model in models:
        config = composed(f"experiment={preset}", f"model={model}")
        assert config.topology.name in ("h200", "v6e-1") and config.batch_size == 1
        assert fit_problem(config, cache_length=2048) is None, (preset, model)


def test_image_budget_sweep_grows_prompt_tokens(tmp_path):
    """`-m mode.image_tokens=70,280,1120` on tiny_gemma4: one job per budget, each ok, its
    prompt (soft tokens included) longer with the budget, no compile in a timed phase."""
    from tests.conftest import records, run_sweep

    proc = run_sweep(
        tmp_path,
        "model=tiny_gemma4",
        "mode=image",
        "mode.image_tokens=70,280,1120",
        "tokens=4",
        "engine=fused",
        "runs.benchmark=1",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    recs = records(tmp_path)
    assert [r["config"]["mode"]["image_tokens"] for r in recs] == [70, 280, 1120]
    assert all(r["status"] == "ok" for r in recs)
    assert all(r["phases"]["benchmark"]["compiles"] == 0 for r in recs)
    prompt = [r["phases"]["final"]["runs"][0]["prompt_tokens"] for r in recs]
    assert prompt[0] < prompt[1] < prompt[2], prompt


# --- mode=audio: Gemma 4's audio encoder (tiny_gemma4's tiny conformer) ---


def test_gemma4_audio_sweep_same_tokens_on_every_engine(tmp_path):
    """`mode=audio` on tiny_gemma4, on the three engines: every job ok, the same tokens on
    each, no compile in a timed phase, and the prompt the text tokens + the shipped 1 s clip's
    25 soft tokens (gemma's Gemma4Sampler count) + <|audio>/<audio|> in place of <|audio|>."""
    from sweep.cache import MODELS as CACHE
    from sweep.gemma4 import gemma4_audio_soft_token_count
    from sweep.request import build_request
    from tests.conftest import records, run_sweep

    proc = run_sweep(
        tmp_path,
        "model=tiny_gemma4",
        "mode=audio",
        "tokens=8",
        "engine=fused,sampler,stream",
        "runs.benchmark=2",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    recs = records(tmp_path)
    assert len(recs) == 3 and all(r["status"] == "ok" for r in recs), [r["status"] for r in recs]
    for r in recs:
        for phase in ("benchmark", "final"):
            assert r["phases"][phase]["compiles"] == 0, (r["config"]["engine"], phase)
    assert len({str(r["generated_token_ids"]) for r in recs}) == 1
    config = composed("model=tiny_gemma4", "mode=audio", "tokens=8")
    spec = CACHE.spec(config.model)
    text = len(spec.tokenizer.encode(build_request(config, spec, None).prompts[0], add_bos=True))
    assert gemma4_audio_soft_token_count(16000) == 25
    for r in recs:
        assert r["phases"]["final"]["runs"][0]["prompt_tokens"] == text + 25 + 1


@pytest.mark.parametrize(
    "overrides",
    [
        ("model=tiny",),
        ("model=gemma3_270m",),
        ("model=gemma4_26b_a4b",),
        ("model=gemma4_31b",),
    ],
)
def test_audio_mode_is_refused_on_models_without_an_audio_encoder(overrides):
    """Refused from the module alone (no weights), naming `mode`, the model and why."""
    from sweep.cache import MODELS as CACHE
    from sweep.request import build_request

    with pytest.raises(ConfigError) as info:  # text-only models (gemma3_270m): at compose time
        config = composed(*overrides, "mode=audio")
        build_request(config, CACHE.spec(config.model), None)
    name = overrides[0].split("=")[1]
    assert info.value.key == "mode"
    assert f"model={name} has no audio encoder: gemma4_e2b and gemma4_e4b have one" in str(
        info.value
    )


def test_audio_mode_config_checks(tmp_path):
    """text_only drops the encoder (refused at compose time); `mode.audio` outside audio mode
    and a bad clip path are refused with the key named; a tiny refusal runs no model."""
    from sweep.audio import AudioError
    from sweep.cache import MODELS as CACHE
    from sweep.request import build_request
    from tests.conftest import records, run_sweep

    with pytest.raises(ConfigError) as info:
        composed("model=gemma4_e2b", "mode=audio", "model.text_only=true")
    assert info.value.key == "mode" and "text_only=true drops it" in str(info.value)
    with pytest.raises(ConfigError) as info:  # gemma encodes one sequence's clips only
        composed("model=tiny_gemma4", "mode=audio", "batch_size=2")
    assert info.value.key == "batch_size" and "batch_size=1" in str(info.value)
    with pytest.raises(ConfigError) as info:
        composed("model=tiny_gemma4", "mode=text", "mode.audio=/x.wav")
    assert info.value.key == "mode.audio"
    config = composed("model=tiny_gemma4", "mode=audio", f"mode.audio={tmp_path}/none.wav")
    with pytest.raises(AudioError) as info:
        build_request(config, CACHE.spec(config.model), None)
    assert info.value.key == "mode.audio"
    proc = run_sweep(tmp_path / "s", "model=tiny", "mode=audio", "tokens=4")
    recs = records(tmp_path / "s")
    assert len(recs) == 1 and recs[0]["status"] != "ok", proc.stderr[-2000:]
    assert "has no audio encoder" in json.dumps(recs[0])
    assert recs[0].get("model") in (None, {}), "refused before the model was built"
