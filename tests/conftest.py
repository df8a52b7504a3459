"""Shared fixtures: a scored sample batch, and a throwaway PostgreSQL server."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "calls"


@pytest.fixture(scope="session")
def scorer():
    from pipeline.scoring import Scorer

    return Scorer()


@pytest.fixture(scope="session")
def sample_calls(scorer):
    """Every sample call, scored, with the sha256 of its file."""
    from pipeline.store import file_sha256

    out = []
    for path in sorted(SAMPLES.iterdir()):
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
