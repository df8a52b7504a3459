"""Running the stages in order: file -> Call -> tags -> events -> scores.

`Scorer` holds what is expensive to build (the tagger, the scorecard) so a
batch builds it once; `Scorer.score(call)` runs the stages on one call.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline import __version__
from pipeline.config import config_path, load_config
from pipeline.events import detect_events
from pipeline.model import Call
from pipeline.readers import RoleMap, read_calls
from pipeline.scorecard import Scorecard, load_scorecard, score_call
from pipeline.taggers import Tagger, load_tagger, tag_call


class Scorer:
    def __init__(self, config: dict | None = None, tagger: Tagger | None = None,
                 scorecard: Scorecard | None = None):
        self.config = config if config is not None else load_config()
        self.scorecard = scorecard or load_scorecard(config_path(self.config, self.config["scorecard"]))
        self.tagger = tagger or load_tagger(self.config)
        self.roles = RoleMap(self.config["roles"])
        pattern = self.config.get("agent_id_from_filename")
        self.agent_pattern = re.compile(pattern) if pattern else None

    def read(self, path: str | Path) -> list[Call]:
        calls = read_calls(path, self.roles)
        for call in calls:
            if call.agent_id is None and self.agent_pattern is not None:
                match = self.agent_pattern.search(Path(path).name)
                if match:
                    call.agent_id = match.group("agent")
        return calls

    def score(self, call: Call) -> Call:
        tag_call(call, self.tagger)
        detect_events(call, self.config)
        score_call(call, self.scorecard)
        call.versions["callqa"] = __version__
        return call
