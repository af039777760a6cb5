"""Gemma-3- and Gemma-4-compatible sentencepiece tokenizers, trained locally and deterministically.

Real Gemma tokenizers live at gs:// paths, unreachable here. This one has Gemma 3's special
ids (PAD 0, EOS 1, BOS 2, UNK 3, <start_of_turn> 105, <end_of_turn> 106) and is padded to
Gemma 3's 262144 pieces so that the hard-coded image ids 255999/256000 exist. It is built
once (well under a second) and cached by content version; nothing is downloaded.

The Gemma 4 variant (`family="gemma4"`, loaded as `gm.text.Gemma4Tokenizer`) is the same
model with Gemma 4's pieces at Gemma 4's ids: `<|turn>` 105, `<turn|>` 106, `<|image>` 255999,
`<|audio>` 256000, `<|image|>` 258880, `<|audio|>` 258881, `<image|>` 258882, `<audio|>` 258883
(those of `gm.text.Gemma4Tokenizer.special_tokens`).
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

from sweep.record import write_bytes_atomically

# Bump when the training recipe changes: it names the cached file.
TOKENIZER_VERSION = 1
VOCAB_SIZE = 262144
_TRAINED_PIECES = 512
_SPECIAL_IDS = {255999: "<start_of_image>", 256000: "<end_of_image>"}
_TURN_PIECES = ("<start_of_turn>", "<end_of_turn>")  # ids 105, 106
_GEMMA4_SPECIAL_IDS = {
    255999: "<|image>",
    256000: "<|audio>",
    258880: "<|image|>",
    258881: "<|audio|>",
    258882: "<image|>",
    258883: "<audio|>",
}
_GEMMA4_TURN_PIECES = ("<|turn>", "<turn|>")
FAMILIES = ("gemma3", "gemma4")
_WORDS = (
    "the a model token image text benchmark warmup final phase jax tpu gemma fast slow cat "
    "dog house tree river blue red green one two three four five hello world describe this "
    "picture please write story about short who learns language models"
).split()


def cache_dir() -> Path:
    root = os.environ.get("SWEEP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gemma-sweep"
    )
    return Path(root)


def local_tokenizer_path(family: str = "gemma3") -> Path:
    """Path of the local tokenizer of `family` ("gemma3" or "gemma4"), built on first use.
    Safe under concurrent jobs."""
    path = cache_dir() / "tokenizer" / f"{family}_local_v{TOKENIZER_VERSION}.model"
    if not path.exists():
        write_bytes_atomically(path, build_tokenizer_bytes(family))
    return path


def build_tokenizer_bytes(family: str = "gemma3") -> bytes:
    """Serialized sentencepiece model; the same bytes on every call and machine. `family`
    only changes the special pieces (Gemma 3's bytes are those of before the variant)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tokenizer family {family!r} (one of {FAMILIES})")
    turn = _GEMMA4_TURN_PIECES if family == "gemma4" else _TURN_PIECES
    special_ids = _GEMMA4_SPECIAL_IDS if family == "gemma4" else _SPECIAL_IDS
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb2

    rng = random.Random(0)
    sentences = [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 20))) for _ in range(5000)
    ]
    user_symbols = ["<mask>", "[multimodal]"] + [f"<unused{i}>" for i in range(99)] + list(turn)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buf,
        vocab_size=_TRAINED_PIECES,
        model_type="bpe",
        character_coverage=1.0,
        byte_fallback=True,
        num_threads=1,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=user_symbols,
        minloglevel=2,
    )
    proto = pb2.ModelProto()
    proto.ParseFromString(buf.getvalue())
    piece_type = pb2.ModelProto.SentencePiece
    for i in range(len(proto.pieces), VOCAB_SIZE):
        piece = proto.pieces.add()
        piece.piece = special_ids.get(i, f"<pad_unused{i}>")
        piece.score = 0.0
        piece.type = piece_type.USER_DEFINED if i in special_ids else piece_type.UNUSED
    return proto.SerializeToString()
