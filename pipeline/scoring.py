"""Running the stages in order: file -> Call -> tags -> events -> outcome -> scores.

`Scorer` holds what is expensive to build (the tagger, the scorecard, and the
speech recogniser once the first recording arrives) so a batch builds it once.
`Scorer.read(path)` turns a transcript or a recording into calls;
`Scorer.score(call)` runs the stages on one call.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

from pipeline import __version__
from pipeline.config import config_path, load_config
from pipeline.events import detect_events
from pipeline.model import Call
from pipeline.outcome import detect_outcome, load_outcome_config
from pipeline.readers import Limits, ReadError, RoleMap, check_call, read_calls
from pipeline.scorecard import Scorecard, load_scorecard, score_call
from pipeline.taggers import Tagger, load_tagger, tag_call

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".amr", ".ogg", ".opus", ".wma")


def is_audio(path: str | Path) -> bool:
    return Path(path).suffix.lower() in AUDIO_SUFFIXES


def config_version(config: dict) -> str:
    """A short fingerprint of the settings, scorecard, lexicon and, when the
    tagger uses it, the BERT model's files: a stored call scored under another
    fingerprint is scored again by a resumed batch (a model retrained in place
    rescores the calls it would tag differently)."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in config.items() if not k.startswith("_")},
                                       sort_keys=True, ensure_ascii=False).encode())
    files = [config_path(config, config["scorecard"]), config_path(config, config["outcome"])]
    lexicon = config_path(config, config["tagger"]["lexicon_dir"])
    if lexicon.is_dir():
        files += sorted(p for p in lexicon.rglob("*") if p.is_file())
    if config["tagger"]["kind"] in ("bert", "ensemble"):
        from pipeline.taggers.bert import MODEL_FILES

        model_dir = config_path(config, config["tagger"]["bert_model"])
        files += [model_dir / name for name in MODEL_FILES if (model_dir / name).is_file()]
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class Scorer:
    def __init__(self, config: dict | None = None, tagger: Tagger | None = None,
                 scorecard: Scorecard | None = None, speech_overrides: dict | None = None):
        self.config = config if config is not None else load_config()
        self.scorecard = scorecard or load_scorecard(config_path(self.config, self.config["scorecard"]))
        self.tagger = tagger or load_tagger(self.config)
        self.outcome_settings = load_outcome_config(str(config_path(self.config, self.config["outcome"])))
        self.roles = RoleMap(self.config["roles"])
        self.limits = Limits.from_config(self.config)
        pattern = self.config.get("agent_id_from_filename")
        self.agent_pattern = re.compile(pattern) if pattern else None
        self.config_version = config_version(self.config)
        # speech settings a caller fixes for this process (cpu_threads, device)
        self.speech_overrides = speech_overrides or {}
        self._recognizer = None

    def speech_config(self) -> dict:
        """configs/speech.yaml with the user config's `speech:` keys and the overrides.
        Importing the speech stage is deferred: text-only work never loads torch."""
        from pipeline.speech.transcribe import load_speech_config

        return {**load_speech_config(self.config.get("_user_file")), **self.speech_overrides}

    def transcribe(self, path: str | Path, agent_channel: int | None = None) -> Call:
        """Stage transcribe: a recording -> a Call with timed, attributed turns."""
        try:
            from pipeline.speech.asr import load_recognizer
            from pipeline.speech.transcribe import transcribe_file
        except ImportError as err:
            raise ReadError(f"{path}: the speech stage is not installed ({err})") from None
        config = self.speech_config()
        if self._recognizer is None:
            self._recognizer = load_recognizer(config)
        return transcribe_file(path, config, self._recognizer, agent_channel=agent_channel)

    def read(self, path: str | Path, agent_channel: int | None = None) -> list[Call]:
        """The calls in one file: a recording is transcribed, a transcript is read.
        Either way each call is checked (`readers.check_call`): a recording in which
        nothing was recognised is an error, never a call that scores well for saying nothing."""
        if is_audio(path):
            calls = [self.transcribe(path, agent_channel)]
            check_call(calls[0], path, self.limits)
        else:
            calls = read_calls(path, self.roles, self.limits)
        for call in calls:
            if call.agent_id is None and self.agent_pattern is not None:
                match = self.agent_pattern.search(Path(path).name)
                if match:
                    call.agent_id = match.group("agent")
        return calls

    def stages(self) -> list[tuple[str, Callable[[Call], Call]]]:
        """The scoring stages in order, by name; a batch runs and times them one by one."""
        return [("tag", lambda call: tag_call(call, self.tagger)),
                ("events", lambda call: detect_events(call, self.config)),
                ("outcome", lambda call: detect_outcome(call, self.outcome_settings)),
                ("score", self._apply_scorecard)]

    def score(self, call: Call) -> Call:
        for _, stage in self.stages():
            stage(call)
        return call

    def _apply_scorecard(self, call: Call) -> Call:
        score_call(call, self.scorecard)
        call.versions["callqa"] = __version__
        return call
