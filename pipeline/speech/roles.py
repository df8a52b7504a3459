"""Which of the two speakers is the agent, and how sure that is.

Evidence, in the weights of `speech.roles` in configs/speech.yaml: agent wording
(greeting, self-introduction, service phrases) and customer wording in each
speaker's turns, who speaks first, and for stereo calls the configured agent
channel. P(speaker A is the agent) = sigmoid(scale * (evidence for A - evidence for B)).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass
class RoleDecision:
    agent: str  # the speaker label (a cluster id, or "ch0"/"ch1")
    confidence: float  # probability that this assignment is right, 0.5..1
    evidence: dict[str, float]  # per speaker, for the record


def wording_score(texts: list[str], config: dict) -> float:
    """Agent wording minus customer wording found in one speaker's turns."""
    joined = "".join(texts)
    score = sum(w * len(re.findall(p, joined)) for p, w in config["agent_phrases"].items())
    score -= sum(w * len(re.findall(p, joined)) for p, w in config["customer_phrases"].items())
    return score


def decide_agent(
    texts_by_speaker: dict[str, list[str]],
    first_speaker: str,
    config: dict,
    prior: dict[str, float] | None = None,
) -> RoleDecision:
    """The agent among two speakers (a lone speaker, or none, gives confidence 0.5)."""
    evidence = {}
    for speaker, texts in texts_by_speaker.items():
        evidence[speaker] = wording_score(texts, config)
        evidence[speaker] += config["first_speaker_weight"] if speaker == first_speaker else 0.0
        evidence[speaker] += (prior or {}).get(speaker, 0.0)
    ranked = sorted(evidence, key=lambda s: evidence[s], reverse=True)
    if len(ranked) < 2:
        return RoleDecision(ranked[0] if ranked else first_speaker, 0.5, evidence)
    margin = evidence[ranked[0]] - evidence[ranked[1]]
    confidence = 1 / (1 + math.exp(-config["evidence_scale"] * margin))
    return RoleDecision(ranked[0], confidence, evidence)
