"""Loading the pipeline configuration (configs/pipeline.yaml).

A user's config file only needs the keys it changes: it is merged over the
bundled default. Relative paths inside a config resolve against that file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "pipeline.yaml"


class ConfigError(ValueError):
    pass


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """The default config, with `path`'s settings merged over it."""
    config = _read_yaml(DEFAULT_CONFIG)
    config["_dir"] = str(CONFIG_DIR)
    if path is not None:
        user = Path(path).resolve()
        config = _merge(config, _read_yaml(user))
        config["_dir"] = str(user.parent)
        config["_user_file"] = str(user)
    return config


def config_path(config: dict, relative: str) -> Path:
    """Resolve a path from the config against the folder of the file that set it."""
    candidate = Path(config["_dir"]) / relative
    if candidate.exists():
        return candidate
    return CONFIG_DIR / relative  # a user config may rely on a bundled file
