"""Audio clips for `mode=audio`: a WAV file as the float waveform Gemma 4's audio encoder takes
(mono, float32 in [-1, 1], 16 kHz: its mel filterbank's rate).

Read with the standard library's `wave` (PCM, 8/16/32-bit) and resampled with scipy's
polyphase filter when the file's rate differs; nothing is downloaded. The clip shipped in
sweep/assets (`default_audio.wav`) is `synthetic_clip()` written as 16-bit PCM: a test checks
that the file still is.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np

from sweep.config import ConfigError

SAMPLE_RATE = 16_000  # Hz: gemma's Gemma 4 audio encoder (GemaxMelFilterbank, Gemma4Sampler)
_MAX_SECONDS = 30.0  # Gemma4Sampler keeps at most 750 soft tokens (~30 s at 40 ms a token)


class AudioError(ConfigError):
    """`mode.audio` cannot be used; the message names the key, the path and why."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__("mode.audio", str(path), reason)


def synthetic_clip(seconds: float = 1.0) -> np.ndarray:
    """A deterministic speech-like clip: a 140 Hz voice with harmonics under a syllable-rate
    envelope and a formant sweep, float32 in [-1, 1] at SAMPLE_RATE."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = 0.5 * (1 - np.cos(2 * math.pi * 4.0 * t))  # four syllables a second
    formant = 500 + 1500 * t / max(seconds, 1e-9)
    voice = sum(
        np.sin(2 * math.pi * 140 * k * t) / k * np.exp(-(((140 * k - formant) / 400) ** 2))
        for k in range(1, 20)
    )
    clip = envelope * voice
    return (0.8 * clip / np.max(np.abs(clip))).astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """float samples in [-1, 1] as a mono 16-bit PCM WAV file."""
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def load_wav(path: str | Path) -> np.ndarray:
    """The clip at `path` as mono float32 at SAMPLE_RATE. Raises AudioError (a ConfigError
    naming `mode.audio`) for a missing, unreadable, empty, non-PCM or over-long file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AudioError(path, "no such file (a PCM WAV file is expected)")
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            frames = f.readframes(f.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise AudioError(path, f"not a readable PCM WAV file ({exc})") from exc
    dtypes = {1: np.uint8, 2: np.dtype("<i2"), 4: np.dtype("<i4")}
    if width not in dtypes:
        raise AudioError(path, f"{8 * width}-bit samples; 8, 16 or 32-bit PCM is supported")
    data = np.frombuffer(frames, dtypes[width]).astype(np.float32)
    if width == 1:
        data = (data - 128.0) / 128.0
    else:
        data /= float(2 ** (8 * width - 1))
    if data.size < channels or rate <= 0:
        raise AudioError(path, "the file holds no samples")
    samples = data[: data.size - data.size % channels].reshape(-1, channels).mean(axis=1)
    if samples.size / rate > _MAX_SECONDS:
        raise AudioError(
            path, f"{samples.size / rate:.1f} s long; at most {_MAX_SECONDS:.0f} s is used"
        )
    if rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = math.gcd(rate, SAMPLE_RATE)
        samples = resample_poly(samples, SAMPLE_RATE // g, rate // g)
    return np.asarray(samples, np.float32)
