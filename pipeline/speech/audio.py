"""Reading a call recording into 16 kHz float32 arrays, one row per channel.

WAV (PCM, float, G.711 mu-law/A-law) and FLAC are read by libsndfile; anything
else (mp3, m4a, amr, ...) is decoded by the ffmpeg binary that the
`imageio-ffmpeg` package ships. Telephone audio (8 kHz) is resampled to the
16 kHz that Whisper and the VAD expect. Files that cannot be used (unreadable,
empty, silent, truncated) raise `AudioError` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

SAMPLE_RATE = 16000
SILENT_PEAK = 1e-3  # a recording whose loudest sample stays below this holds no speech
READ_BLOCK_SECONDS = 600  # resample long recordings block by block


class AudioError(ValueError):
    pass


@dataclass
class Audio:
    path: str
    samples: np.ndarray  # float32, shape (channels, frames), at SAMPLE_RATE
    source_sample_rate: int
    sha256: str
    codec: str  # e.g. "PCM_16", "ULAW", "mp3"

    @property
    def channels(self) -> int:
        return self.samples.shape[0]

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / SAMPLE_RATE


def load_audio(path: str | Path) -> Audio:
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    _check_wav_not_truncated(path)
    try:
        info = soundfile.info(str(path))
        samples, codec = _read_soundfile(path, info.samplerate), info.subtype
        source_rate = info.samplerate
    except soundfile.LibsndfileError:
        samples, source_rate, codec = _read_with_ffmpeg(path)
    if samples.shape[1] == 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    if float(np.abs(samples).max()) < SILENT_PEAK:
        raise AudioError(f"{path}: the recording is silent (peak level {np.abs(samples).max():.1e})")
    return Audio(str(path), samples, source_rate, _sha256(path), codec)


def resample(samples: np.ndarray, source_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling along the last axis."""
    if source_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    divisor = gcd(source_rate, target_rate)
    return resample_poly(samples, target_rate // divisor, source_rate // divisor, axis=-1).astype(np.float32)


def _read_soundfile(path: Path, source_rate: int) -> np.ndarray:
    # Blocks keep peak memory near one block of float64 even for calls of hours.
    blocks = []
    block_frames = READ_BLOCK_SECONDS * source_rate
    for block in soundfile.blocks(str(path), blocksize=block_frames, dtype="float32", always_2d=True):
        blocks.append(resample(block.T, source_rate))
    if not blocks:
        return np.zeros((1, 0), dtype=np.float32)
    return np.concatenate(blocks, axis=1)


def _read_with_ffmpeg(path: Path) -> tuple[np.ndarray, int, str]:
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "decoded.wav"
        # -xerror: stop on the first decoding error, so a damaged file is reported.
        result = subprocess.run(
            [ffmpeg, "-nostdin", "-hide_banner", "-xerror", "-i", str(path), "-vn", "-c:a", "pcm_f32le", str(wav)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 or not wav.exists():
            reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "unknown error"
            raise AudioError(f"{path}: not a readable audio file ({reason})")
        info = soundfile.info(str(wav))
        codec = _ffmpeg_codec(result.stderr)
        return _read_soundfile(wav, info.samplerate), info.samplerate, codec


def _ffmpeg_codec(stderr: str) -> str:
    for line in stderr.splitlines():
        if "Audio:" in line:
            return line.split("Audio:")[1].split(",")[0].strip().split(" ")[0]
    return "unknown"


def _check_wav_not_truncated(path: Path) -> None:
    """A WAV whose data chunk is shorter than its header declares was cut off in transfer."""
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        file_size = path.stat().st_size
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                raise AudioError(f"{path}: truncated WAV (no data chunk)")
            chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"data":
                available = file_size - f.tell()
                # 0 and 0xFFFFFFFF are "size unknown" (written by streaming encoders).
                if chunk_size not in (0, 0xFFFFFFFF) and available < chunk_size:
                    raise AudioError(
                        f"{path}: truncated WAV: header declares {chunk_size} bytes of audio, file holds {available}"
                    )
                return
            f.seek(chunk_size + (chunk_size & 1), 1)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
