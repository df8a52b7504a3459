"""callqa: quality scoring for Chinese call-center conversations.

The text core sits here, one module per stage: readers (file -> Call) ->
taggers/ (utterance tags) -> events (timing) -> scorecard + rules (scores) ->
report (JSON / CSV / HTML); scoring.Scorer runs them. Around it: speech/
(recordings -> Call), review/ (store, web app, verdicts, clips, privacy),
batch/ (weekly runs) and training/ (the BERT tagger). Imports run downward
only: cli -> batch -> review -> scoring -> speech -> core.
"""

__version__ = "0.1.0"
