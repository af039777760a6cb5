"""sweep/audio.py: WAV files as Gemma 4's audio input (mono float32 at 16 kHz), with clear errors
for what cannot be used."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from sweep.audio import SAMPLE_RATE, AudioError, load_wav, synthetic_clip, write_wav
from sweep.config import ASSETS_DIR, ConfigError


def test_the_shipped_clip_is_the_synthetic_clip():
    shipped = load_wav(ASSETS_DIR / "default_audio.wav")
    expected = synthetic_clip()
    assert shipped.dtype == np.float32 and shipped.shape == (SAMPLE_RATE,)
    assert np.max(np.abs(shipped - expected)) < 2 / 32767  # 16-bit rounding and scaling only


def test_stereo_and_other_rates_become_mono_16k(tmp_path):
    rate = 44_100
    t = np.arange(rate) / rate
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), np.zeros_like(t)
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(rate)
        pcm = np.round(np.stack([left, right], axis=1) * 32767).astype("<i2")
        f.writeframes(pcm.tobytes())
    samples = load_wav(path)
    assert samples.shape == (SAMPLE_RATE,)
    # The mean of the channels (0.25 peak), still a 440 Hz tone after resampling.
    assert 0.23 < np.max(np.abs(samples)) < 0.27
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / samples.size - 440) < 2


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "no such file"),
        (b"RIFF not really a wave file", "not a readable PCM WAV"),
    ],
)
def test_unusable_files_are_config_errors_naming_mode_audio(tmp_path, content, reason):
    path = tmp_path / "clip.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=reason) as err:
        load_wav(path)
    assert isinstance(err.value, AudioError) and err.value.key == "mode.audio"
    assert str(path) in str(err.value)


def test_an_empty_or_overlong_clip_is_refused(tmp_path):
    write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(AudioError, match="no samples"):
        load_wav(tmp_path / "empty.wav")
    write_wav(tmp_path / "long.wav", np.zeros(31 * 8000, np.float32), rate=8000)
    with pytest.raises(AudioError, match=r"31\.0 s long"):
        load_wav(tmp_path / "long.wav")
