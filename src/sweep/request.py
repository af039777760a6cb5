"""The request every phase sends: the chat-formatted prompt (the mode's, or a synthetic one of
exactly `prompt_tokens` tokens), the images, the token count, and the KV cache length it needs.

Built on the host from the model's module and tokenizer alone (a `models.ModelSpec`), before
any weight exists, so a prompt + tokens that cannot fit fails before the model is built.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from sweep.models import ModelSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class Request:
    """One request, prepared on the host. `prompts` are full chat-formatted strings."""

    prompts: tuple[str, ...]
    images: np.ndarray | None  # uint8 [B, N, H, W, C], or None for text
    max_new_tokens: int
    # Per sequence, image soft tokens included (what every engine's Generation reports).
    prompt_tokens: int = 0
    # The KV cache length the engine is built with (`resolve_cache_length`); 0 = not sized.
    cache_length: int = 0
    # Gemma 4 image mode: the soft-token budget of each image (`mode.image_tokens`, or the
    # model's own); None otherwise. The engines preprocess the images under it.
    image_tokens: int | None = None
    # Audio mode (Gemma 4 E2B/E4B): one mono 16 kHz clip per sequence, float32 [B, samples];
    # None otherwise. Each clip's `<|audio|>` becomes `audio_soft_tokens` soft tokens.
    audio: np.ndarray | None = None
    audio_soft_tokens: int = 0

    @property
    def batch_size(self) -> int:
        return len(self.prompts)


def prompt_tokens_with_images(
    model: ModelSpec,
    token_ids: list[int],
    num_images: int,
    image_shape: tuple[int, ...] | None = None,
    budget: int | None = None,
) -> int:
    """Prompt length after the model expands each image placeholder (`image_shape` and
    `budget` size a Gemma 4 image's soft tokens; Gemma 3's are fixed)."""
    if not num_images:
        return len(token_ids)
    return len(token_ids) + num_images * model.image_soft_tokens(image_shape, budget)


# Gemma 3 (and the tiny models of its family): the mode prompts are written with its image
# placeholder, which a Gemma 4 prompt replaces with its own (`chat_format`).
CHAT_TEMPLATE = "<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n"
IMAGE_PLACEHOLDER = "<start_of_image>"
AUDIO_PLACEHOLDER = "<start_of_audio>"  # sweep.config.AUDIO_PLACEHOLDER
GEMMA4_AUDIO_PLACEHOLDER = "<|audio|>"
GEMMA4_CHAT_TEMPLATE = "<|turn>user\n{prompt}<turn|>\n<|turn>model\n"
GEMMA4_IMAGE_PLACEHOLDER = "<|image|>"


def chat_format(model: ModelSpec) -> tuple[str, str]:
    """(chat template, image placeholder) of the model's family: Gemma 4's own for a Gemma 4
    architecture, Gemma 3's otherwise."""
    from sweep.gemma4 import is_gemma4

    if is_gemma4(model.model):
        return GEMMA4_CHAT_TEMPLATE, GEMMA4_IMAGE_PLACEHOLDER
    return CHAT_TEMPLATE, IMAGE_PLACEHOLDER


# `engine.cache_length: null` (auto): the smallest power of two that holds prompt + tokens,
# at least this, so that a default token sweep shares one compiled program.
MIN_AUTO_CACHE_LENGTH = 2048

# The words a `prompt_tokens=N` prompt is drawn from (by `seed`), in this order. Only those the
# tokenizer encodes as one token after a space are used (`_filler_words`), so that N words are
# N tokens; the count is checked on the full prompt anyway (`synthetic_prompt`).
_VOCABULARY = (
    "the a one two three four model token image text benchmark final jax tpu gemma fast slow "
    "cat house tree river blue red green world describe picture write about short who learns "
    "language models time day year way man thing woman life child school state family group "
    "country problem hand part place case week company system program question work number "
    "night point home water room mother area money story fact month lot right study book eye "
    "job word business issue side kind head service friend father power hour game line end "
    "city community name president team minute idea kid body information back parent face "
    "others level office door health person art war history party result change morning "
    "reason research girl guy moment air teacher force education"
).split()


def auto_cache_length(needed: int) -> int:
    """The auto KV cache length: the smallest power of two >= `needed`, at least 2048."""
    return max(MIN_AUTO_CACHE_LENGTH, 1 << max(needed - 1, 0).bit_length())


def resolve_cache_length(config, prompt_tokens: int) -> int:
    """The KV cache length for `config` (a `sweep.config.Config`) and a prompt of
    `prompt_tokens` (image soft tokens included): `engine.cache_length`, or the auto length
    when it is null. ConfigError when an explicit length cannot hold prompt + tokens."""
    from sweep.config import ConfigError

    needed = prompt_tokens + config.tokens
    explicit = config.engine.cache_length
    if explicit is None:
        return auto_cache_length(needed)
    if needed > explicit:
        raise ConfigError(
            "engine.cache_length",
            explicit,
            f"prompt ({prompt_tokens} tokens) + tokens={config.tokens} needs {needed} cache "
            f"positions, more than engine.cache_length={explicit}: raise it, set it to null "
            f"(auto: the smallest power of two >= {needed}, at least {MIN_AUTO_CACHE_LENGTH}) "
            "or lower tokens/prompt_tokens",
        )
    return explicit


def _count(tokenizer, prompt: str) -> int:
    return len(tokenizer.encode(prompt, add_bos=True))


@functools.cache
def _filler_words(tokenizer) -> tuple[str, ...]:
    """The `_VOCABULARY` words `tokenizer` encodes as exactly one token after a space."""
    base = len(tokenizer.encode("a"))
    words = tuple(
        w
        for w in _VOCABULARY
        if len(tokenizer.encode(w)) == 1 and len(tokenizer.encode(f"a {w}")) == base + 1
    )
    if not words:
        raise ValueError("the tokenizer encodes none of the filler words as one token")
    return words


def template_tokens(
    tokenizer,
    *,
    image: bool = False,
    template: str = CHAT_TEMPLATE,
    placeholder: str = IMAGE_PLACEHOLDER,
) -> int:
    """Tokens of a chat prompt with an empty user turn (BOS and the template's own tokens),
    plus the image placeholder's in image mode."""
    return _count(tokenizer, template.format(prompt=placeholder if image else ""))


def synthetic_prompt(
    tokenizer,
    n: int,
    *,
    seed: int,
    image: bool = False,
    template: str = CHAT_TEMPLATE,
    placeholder: str = IMAGE_PLACEHOLDER,
) -> str:
    """A chat-formatted prompt of exactly `n` tokens (BOS and template included), its user
    turn words drawn from a fixed vocabulary with `numpy.random.default_rng(seed)`. Image
    mode: the user turn starts with `<start_of_image>` (counted in `n`; the soft tokens the
    model expands it to are not). Encoding the returned text gives exactly `n` tokens (checked:
    the engines tokenise the text inside the timed window). ValueError below the minimum."""
    minimum = template_tokens(
        tokenizer, image=image, template=template, placeholder=placeholder
    ) + (0 if image else 1)
    if n < minimum:
        raise ValueError(f"needs at least {minimum} tokens")
    vocab = _filler_words(tokenizer)
    rng = np.random.default_rng(seed)
    head = (placeholder,) if image else ()

    def prompt(words) -> str:
        return template.format(prompt=" ".join((*head, *words)))

    # Every filler word is one token, so the count moves one per word: start from the
    # template's count and correct by the difference (a tokenizer that merges across the
    # template's edges converges in a step or two).
    words = [str(w) for w in rng.choice(vocab, size=max(n - minimum + (0 if image else 1), 0))]
    for _ in range(8):
        diff = n - _count(tokenizer, prompt(words))
        if diff == 0:
            return prompt(words)
        if diff > 0:
            words += [str(w) for w in rng.choice(vocab, size=diff)]
        else:
            del words[max(len(words) + diff, 0 if image else 1) :]
    # Off by one after all: try each filler word as the last one.
    for last in vocab:
        text = prompt([*words[:-1], last])
        if _count(tokenizer, text) == n:
            return text
    raise ValueError(f"could not build a prompt of exactly {n} tokens with this tokenizer")


def _prompt(config, model: ModelSpec) -> str:
    """The chat-formatted prompt of `config`: the mode's prompt, or `prompt_tokens` tokens."""
    from sweep.config import ConfigError

    template, placeholder = chat_format(model)
    if config.prompt_tokens is None:
        prompt = config.mode.prompt.replace(IMAGE_PLACEHOLDER, placeholder)
        if config.mode.name == "audio":
            prompt = prompt.replace(AUDIO_PLACEHOLDER, GEMMA4_AUDIO_PLACEHOLDER)
        return template.format(prompt=prompt)
    # A synthetic prompt starts with the mode's placeholder (image or audio), counted in it.
    image = config.mode.name in ("image", "audio")
    if config.mode.name == "audio":
        placeholder = GEMMA4_AUDIO_PLACEHOLDER
    try:
        return synthetic_prompt(
            model.tokenizer,
            config.prompt_tokens,
            seed=config.seed,
            image=image,
            template=template,
            placeholder=placeholder,
        )
    except ValueError as exc:
        what = f" and the {config.mode.name} placeholder" if image else " and one word"
        media = config.mode.name if image else "image"
        raise ConfigError(
            "prompt_tokens",
            config.prompt_tokens,
            f"{exc} (BOS, the chat template's tokens{what}; {media} soft tokens come on top)",
        ) from None


def build_request(
    config, model: ModelSpec, image: np.ndarray | None, audio: np.ndarray | None = None
) -> Request:
    """The request every phase sends (`config`: a `sweep.config.Config`), with its exact
    prompt length and the KV cache length it needs (`resolve_cache_length`, which refuses an
    explicit `engine.cache_length` too small for it). A `ModelSpec` (module + tokenizer) is
    enough, no weights: it runs before any model is built. `image` may be None in image mode
    when only the sizes are wanted (a zero image of the encoder's size stands in). Audio mode:
    `audio` is the clip (mono float32 at 16 kHz), read from `mode.audio` when None; a model
    without an audio encoder is refused (ConfigError naming `mode`) before the clip is read."""
    from sweep.config import GEMMA4_IMAGE_BUDGETS, ConfigError
    from sweep.gemma4 import is_gemma4

    gemma4 = is_gemma4(model.model)
    budget = config.mode.image_tokens
    if budget is not None and not gemma4:
        raise ConfigError(
            "mode.image_tokens",
            budget,
            f"only Gemma 4 models take an image soft-token budget ({list(GEMMA4_IMAGE_BUDGETS)});"
            f" model={config.model.name} is not one: set it to null",
        )
    audio_mode = config.mode.name == "audio"
    if audio_mode and not model.has_audio:
        raise ConfigError(
            "mode",
            "audio",
            f"model={config.model.name} has no audio encoder: gemma4_e2b and gemma4_e4b have one",
        )
    prompt = _prompt(config, model)
    clips = None
    audio_soft_tokens = 0
    if audio_mode:
        if audio is None:
            from sweep.audio import load_wav

            audio = load_wav(config.mode.audio)
        audio = np.asarray(audio, np.float32)
        clips = np.broadcast_to(audio, (config.batch_size, audio.shape[-1])).copy()
        audio_soft_tokens = model.audio_soft_tokens(audio.shape[-1])
    images = None
    image_tokens = None
    if config.mode.name == "image":
        if not model.has_vision:
            raise ConfigError("mode", "image", f"model={config.model.name} has no vision encoder")
        encoder = model.config.vision_encoder
        if gemma4:
            image_tokens = budget or encoder.num_mm_tokens_per_image
        if image is None:
            # Sizes only: Gemma 3's count is fixed; Gemma 4's is that of a square image of
            # the budget's full size.
            side = int((9 * image_tokens) ** 0.5) * encoder.patch_size if gemma4 else 1
            image = np.zeros((side, side, 3), np.uint8)
        images = np.broadcast_to(image, (config.batch_size, 1, *image.shape)).copy()
    ids = model.tokenizer.encode(prompt, add_bos=True)
    num_images = 0 if images is None else images.shape[1]
    shape = None if images is None else images.shape[2:]
    prompt_tokens = prompt_tokens_with_images(model, ids, num_images, shape, image_tokens)
    prompt_tokens += audio_soft_tokens
    return Request(
        prompts=(prompt,) * config.batch_size,
        images=images,
        max_new_tokens=config.tokens,
        prompt_tokens=prompt_tokens,
        cache_length=resolve_cache_length(config, prompt_tokens),
        image_tokens=image_tokens,
        audio=clips,
        audio_soft_tokens=audio_soft_tokens,
    )
