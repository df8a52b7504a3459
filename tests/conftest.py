"""Shared fixtures: the scorer, sample calls (scored, in a store, with audio), a
throwaway PostgreSQL server, and `callqa review` in a subprocess."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.model import Call, Turn
from pipeline.normalize import normalize_text
from pipeline.scoring import Scorer

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
SAMPLE_CALLS = SAMPLES / "calls"
REAL_DATA = REPO.parent / "shared" / "real"


@pytest.fixture(scope="session")
def config():
    return load_config()


@pytest.fixture(scope="session")
def scorer(config):
    return Scorer(config)


def make_call(*turns, call_id="t") -> Call:
    """turns: (role, text) or (role, text, start, end)."""
    built = []
    for i, spec in enumerate(turns):
        role, text, *times = spec
        start, end = times if times else (None, None)
        built.append(Turn(id=i, role=role, text=normalize_text(text), start=start, end=end))
    return Call(id=call_id, turns=built)


@pytest.fixture(scope="session")
def sample_calls(scorer):
    """Every sample call, scored, with the sha256 of its file."""
    from pipeline.review.store import file_sha256

    out = []
    for path in sorted(SAMPLE_CALLS.iterdir()):
        if path.suffix in (".json", ".txt", ".csv"):
            for call in scorer.read(path):
                out.append((scorer.score(call), file_sha256(path)))
    return out


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server in a temporary folder for this test session; skipped without the binaries."""
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    pytest.importorskip("psycopg")
    folder = tempfile.mkdtemp(prefix="callqa-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(folder, "data"), _free_port()
    subprocess.run(as_user + [initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run(as_user + [pg_ctl, "-D", data, "-w", "-l", os.path.join(folder, "log"),
                              "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
        time.sleep(0.2)
        shutil.rmtree(folder, ignore_errors=True)


def write_call_audio(call, path: Path, rate: int = 8000) -> Path:
    """A real WAV for a timed call: a tone per turn (agent 220 Hz, customer 330 Hz), silence between."""
    import numpy as np
    import soundfile as sf

    samples = np.zeros(int((max(t.end for t in call.turns) + 1.0) * rate))
    for turn in call.turns:
        n = np.arange(int(turn.start * rate), int(turn.end * rate))
        samples[n] += 0.2 * np.sin(2 * np.pi * (220 if turn.role == "agent" else 330) * n / rate)
    sf.write(path, samples, rate, subtype="PCM_16")
    return path


@pytest.fixture
def scored_store(tmp_path):
    """`callqa score` run on the samples into tmp/out/callqa.db, with a WAV for every timed call
    (under tmp/audio). Returns (store path, audio folder)."""
    from pipeline.cli import main
    from pipeline.model import AudioInfo
    from pipeline.review.store import Store

    out, audio = tmp_path / "out", tmp_path / "audio"
    audio.mkdir()
    assert main(["score", str(SAMPLE_CALLS), "--meta", str(REPO / "samples" / "agents.csv"),
                 "--out", str(out), "--quiet"]) == 0
    store = Store(out / "callqa.db")
    for call_id in store.call_ids():
        call = store.get_call(call_id)
        if call.has_times:
            call.audio = AudioInfo(path=str(write_call_audio(call, audio / f"{call_id}.wav")), sample_rate=8000)
            store.save_call(call, "sha-of-input", "cfg")
    store.close()
    return out / "callqa.db", audio


def free_port() -> int:
    return _free_port()


def start_review_server(store_path: Path, audio_root: Path, *extra: str, port: int | None = None):
    """`callqa review` in a subprocess; returns (process, base URL) once it answers."""
    import sys
    import urllib.error
    import urllib.request

    port = port or _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "review", "--store", str(store_path), "--port", str(port),
         "--audio-root", str(audio_root), "--export-dir", str(Path(store_path).parent / "exports"), *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"callqa review exited: {process.stdout.read()}")
        try:
            urllib.request.urlopen(url + "/", timeout=2)
            return process, url
        except urllib.error.HTTPError:  # it answered (e.g. 401 without the token)
            return process, url
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("callqa review did not answer within 60 s")
