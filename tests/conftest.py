from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.model import Call, Turn
from pipeline.normalize import normalize_text
from pipeline.scoring import Scorer

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
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
