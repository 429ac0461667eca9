"""Sound files for fake microphones: speech made with espeak-ng and silence made with sox."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import pytest

SENTENCE = "The quick brown fox jumps over the lazy dog, and we talk on the call. " * 2


@pytest.fixture(scope="module")
def voice_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A speech WAV (over 10 s, 48 kHz mono 16-bit) and one of 20 s of silence."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.skip(f"no {tool}: 'apt-get install espeak-ng sox'")
    folder = tmp_path_factory.mktemp("voice")
    spoken, speech, silence = folder / "spoken.wav", folder / "speech.wav", folder / "silence.wav"
    subprocess.run(["espeak-ng", "-w", str(spoken), SENTENCE], check=True)
    subprocess.run(
        ["sox", str(spoken), "-r", "48000", "-c", "1", "-b", "16", str(speech), "repeat", "2"],
        check=True,
    )
    subprocess.run(
        ["sox", "-n", "-r", "48000", "-c", "1", "-b", "16", str(silence), "trim", "0", "20"],
        check=True,
    )
    with wave.open(str(speech)) as made:
        assert (made.getframerate(), made.getnchannels()) == (48000, 1)
        assert made.getnframes() / made.getframerate() >= 10
    return speech, silence
