"""callqa: quality scoring for Chinese call-center conversations.

A call flows through stages, each a module with one job:
readers (file -> Call) -> taggers (utterance tags) -> events (timing) ->
scoring (scorecard) -> report (JSON / CSV / HTML).
"""

__version__ = "0.1.0"
