"""Reading transcripts into `Call`s.

Accepted inputs:
- JSON: {"id", "turns": [{"role" or "speaker", "text", "start"?, "end"?}], ...}
  or a list of such objects, or a Call written by callqa itself.
- Plain text as QA teams paste it: one `坐席：…` / `客户：…` line per turn
  (also `A:`/`B:`, `agent:`/`customer:`); a line without a label continues the
  turn above it, and a label that is not in the config's `roles` is an error.
- CSV: one row per turn with columns role (or speaker), text and optionally
  call_id, start, end; several calls per file are grouped by call_id.

Text is decoded as UTF-8 (with or without BOM), UTF-16 with BOM, or GB18030
(Windows exports); anything else is a `ReadError` naming the file.
Every utterance is normalised (Simplified characters, punctuation).

Nothing is guessed: a time that is not a finite number of seconds (NaN, inf,
`true`), text that is not a string, duplicate turn ids, a CSV quote left open
and a file over the configured size (`limits:` in configs/pipeline.yaml) are
each a `ReadError` saying what is wrong and where.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from pipeline.model import Call, Turn
from pipeline.normalize import count_spoken_chars, normalize_text, to_simplified

TRANSCRIPT_SUFFIXES = (".json", ".txt", ".csv")
_CJK_OR_ASCII = re.compile(r"[\u3400-\u9fffA-Za-z0-9]")
_LABELLED_LINE = re.compile(r"^\s*([^:：\s][^:：]{0,11}?)\s*[:：]\s*(.*)$")
_TIME_FIELDS = ("start", "end")
_UTF32_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")
_SHOWN_COLUMNS = 10  # a header of 200,000 columns must not become a 2 MB message

# Field sizes are bounded by `limits.max_chars`, checked before parsing; the csv
# module's own 128 KB default would fail on a long utterance with a bare csv.Error.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class ReadError(ValueError):
    """A transcript that cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class Limits:
    """How big one input may be (configs/pipeline.yaml `limits:`), shared by
    `callqa score` and `callqa batch`: tagging time grows with characters and turns."""

    max_transcript_mb: float
    max_chars: int
    max_turns: int

    @classmethod
    def from_config(cls, config: dict) -> "Limits":
        return cls(**{key: config["limits"][key] for key in ("max_transcript_mb", "max_chars", "max_turns")})

    def check_bytes(self, path: Path, size: int) -> None:
        if size > self.max_transcript_mb * 2**20:
            raise ReadError(f"{path}: {size / 2**20:.1f} MB is too large for a transcript "
                            f"(limits.max_transcript_mb: {self.max_transcript_mb} MB)")

    def check_chars(self, where: object, chars: int) -> None:
        if chars > self.max_chars:
            raise ReadError(f"{where}: {chars:,} characters is more than limits.max_chars ({self.max_chars:,})")

    def check_call(self, call: Call, where: object) -> None:
        if len(call.turns) > self.max_turns:
            raise ReadError(f"{where}: call {call.id!r} has {len(call.turns):,} turns, more than "
                            f"limits.max_turns ({self.max_turns:,})")
        self.check_chars(f"{where}: call {call.id!r}", sum(len(t.text) for t in call.turns))


def _looks_like_text(text: str) -> bool:
    # Real Chinese text is mostly letters, digits and CJK; bytes decoded in the
    # wrong encoding (or binary garbage) are not.
    return len(_CJK_OR_ASCII.findall(text)) >= 0.5 * len(text.replace(" ", "").replace("\n", ""))


def decode_text(raw: bytes, path: Path) -> str:
    if not raw.strip():
        raise ReadError(f"{path}: file is empty")
    if raw[:4] in _UTF32_BOMS:
        raise ReadError(f"{path}: UTF-32 text is not supported; save it as UTF-8 (or UTF-16, GB18030)")
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError:
            raise ReadError(f"{path}: starts with a UTF-16 byte-order mark but is not UTF-16 text") from None
    else:
        text = _decode_without_bom(raw, path)
    if "\x00" in text:
        raise ReadError(f"{path}: contains NUL characters: UTF-16/UTF-32 without a byte-order mark, "
                        "or not a text file; save it as UTF-8")
    return text


def _decode_without_bom(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        text = None
    if text is not None and _looks_like_text(text):
        return text
    try:
        if _looks_like_text(raw.decode("big5")):
            raise ReadError(f"{path}: looks like Big5 (Traditional Chinese), which is not a supported "
                            "encoding; save it as UTF-8 (UTF-16 and GB18030 also work)")
    except UnicodeDecodeError:
        pass
    raise ReadError(f"{path}: not UTF-8, UTF-16 or GB18030 text" + (" (looks binary)" if text is not None else ""))


class RoleMap:
    """Maps speaker labels (坐席, B, customer...) to roles, from the config."""

    def __init__(self, roles_config: dict[str, list]):
        self._roles = {
            str(label).strip().lower(): role
            for role, labels in roles_config.items()
            for label in labels
        }

    def role_of(self, label: object) -> str | None:
        return self._roles.get(to_simplified(str(label)).strip().lower())

    def require(self, label: object, where: str) -> str:
        role = self.role_of(label)
        if role is None:
            raise ReadError(
                f"{where}: unknown speaker label {label!r}; add it under `roles:` in the config"
            )
        return role


def read_calls(path: str | Path, roles: RoleMap, limits: Limits | None = None) -> list[Call]:
    """Read one transcript file into one or more calls, each checked by `check_call`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TRANSCRIPT_SUFFIXES:
        raise ReadError(f"{path}: unsupported file type {suffix!r} (expected .json, .txt or .csv)")
    try:
        if limits:
            limits.check_bytes(path, path.stat().st_size)
        raw = path.read_bytes()
    except OSError as err:
        raise ReadError(f"{path}: cannot read: {err.strerror}") from None
    text = decode_text(raw, path)
    if limits:
        limits.check_chars(path, len(text))
    reader = {".json": _read_json, ".txt": _read_dialogue_text, ".csv": _read_csv}[suffix]
    calls = reader(text, path, roles)
    for call in calls:
        call.source = str(path)
        check_call(call, path, limits)
    return calls


def check_call(call: Call, where: object, limits: Limits | None = None) -> None:
    """What every call must be before scoring, however it was made (any reader,
    a callqa JSON, speech recognition): something said, unique turn ids, finite
    ordered times, within the size limits."""
    if not any(count_spoken_chars(t.text) for t in call.turns):
        raise ReadError(f"{where}: call {call.id!r} " + ("has no recognised speech" if call.audio else
                                                          "has no turns with text") + "; nothing to score")
    seen = set()
    for turn in call.turns:
        if turn.id in seen:
            raise ReadError(f"{where}: call {call.id!r} has turn id {turn.id} twice")
        seen.add(turn.id)
        turn_where = f"{where}: call {call.id!r}, turn {turn.id}"
        for name in _TIME_FIELDS:
            _time(getattr(turn, name), turn_where)
        if turn.start is not None and turn.end is not None and turn.end < turn.start:
            raise ReadError(f"{turn_where}: turn ends ({turn.end}) before it starts ({turn.start})")
    if limits:
        limits.check_call(call, where)


def _time(value: object, where: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ReadError(f"{where}: time {_shorten(value)} is not a number of seconds")
    try:
        seconds = float(value)
    except ValueError:
        raise ReadError(f"{where}: time {_shorten(value)} is not a number of seconds") from None
    if not math.isfinite(seconds):
        raise ReadError(f"{where}: time {_shorten(value)} is not a finite number of seconds")
    if seconds < 0:
        raise ReadError(f"{where}: negative time {seconds}")
    return seconds


def _text(value: object, where: str) -> str:
    """An utterance's text: a string (a number is taken as written); never null or a list."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        kind = "null" if value is None else type(value).__name__
        raise ReadError(f"{where}: `text` must be a string, got {kind}")
    return str(value)


def _shorten(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _make_turn(turn_id: int, role: str, text: str, start=None, end=None, speaker=None,
               where: str = "") -> Turn:
    start, end = _time(start, where), _time(end, where)
    if start is not None and end is not None and end < start:
        raise ReadError(f"{where}: turn ends ({end}) before it starts ({start})")
    return Turn(id=turn_id, role=role, text=normalize_text(text), start=start, end=end,
                speaker=None if speaker is None else str(speaker))


# --- JSON -----------------------------------------------------------------

_CALL_FIELDS = ("agent_id", "team", "date", "industry")


def _read_json(text: str, path: Path, roles: RoleMap) -> list[Call]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReadError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except RecursionError:
        raise ReadError(f"{path}: JSON nested too deeply to be a transcript") from None
    items = data if isinstance(data, list) else [data]
    return [_call_from_json(item, path, i, roles) for i, item in enumerate(items)]


def _call_from_json(item: object, path: Path, index: int, roles: RoleMap) -> Call:
    where = f"{path} (call {index})"
    if not isinstance(item, dict) or not isinstance(item.get("turns"), list):
        raise ReadError(f"{where}: expected an object with a list of `turns`")
    if "scores" in item or "tags" in item:  # a Call written by callqa: keep everything
        try:
            return Call.model_validate(item)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise ReadError(f"{where}: not a valid callqa call: `{field}`: {first['msg']}") from None
    turns = []
    for i, raw_turn in enumerate(item["turns"]):
        turn_where = f"{where}, turn {i}"
        if not isinstance(raw_turn, dict) or "text" not in raw_turn:
            raise ReadError(f"{turn_where}: expected an object with `text`")
        label = raw_turn.get("role", raw_turn.get("speaker"))
        if label is None:
            raise ReadError(f"{turn_where}: no `role` or `speaker`")
        if not isinstance(label, (str, int)) or isinstance(label, bool):
            raise ReadError(f"{turn_where}: `role` must be a label such as 坐席 or 客户, got {_shorten(label)}")
        turns.append(_make_turn(i, roles.require(label, turn_where), _text(raw_turn["text"], turn_where),
                                raw_turn.get("start"), raw_turn.get("end"), label, turn_where))
    fields = {k: _scalar(item[k], k, where) for k in ("id", *_CALL_FIELDS) if item.get(k) not in (None, "")}
    metadata = item.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ReadError(f"{where}: `metadata` must be an object of names and values, got {type(metadata).__name__}")
    call_id = fields.pop("id", None) or (path.stem if index == 0 else f"{path.stem}_{index}")
    return Call(id=call_id, turns=turns, metadata={str(k): _scalar(v, f"metadata.{k}", where)
                                                   for k, v in metadata.items()}, **fields)


def _scalar(value: object, name: str, where: str) -> str:
    if isinstance(value, (dict, list)):
        raise ReadError(f"{where}: `{name}` must be a string or number, got {type(value).__name__}")
    return str(value)


# --- plain-text dialogue -----------------------------------------------------

def _read_dialogue_text(text: str, path: Path, roles: RoleMap) -> list[Call]:
    turns: list[Turn] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        match = _LABELLED_LINE.match(line)
        if match:  # a "label：" prefix must be a known speaker, never silently merged
            role = roles.require(match.group(1), where)
            turns.append(_make_turn(len(turns), role, match.group(2), speaker=match.group(1).strip()))
        elif turns:  # a wrapped line continues the turn above
            turns[-1].text = normalize_text(turns[-1].text + line.strip())
        else:
            raise ReadError(f"{where}: expected a speaker label such as `坐席：` or `客户：`")
    return [Call(id=path.stem, turns=turns)]


# --- CSV -------------------------------------------------------------------

_CSV_ALIASES = {
    "role": ("role", "speaker", "角色", "说话人"),
    "text": ("text", "content", "utterance", "内容", "文本"),
    "call_id": ("call_id", "call", "session_id", "通话id"),
    "start": ("start", "begin", "start_time", "开始时间"),
    "end": ("end", "end_time", "结束时间"),
}


def _read_csv(text: str, path: Path, roles: RoleMap) -> list[Call]:
    rows = csv.DictReader(io.StringIO(text), strict=True)
    try:
        header = {name.strip().lower(): name for name in rows.fieldnames or []}
    except csv.Error as err:
        raise ReadError(f"{path}:1: malformed CSV header: {err}") from None
    columns = {key: next((header[a] for a in aliases if a in header), None)
               for key, aliases in _CSV_ALIASES.items()}
    if columns["role"] is None or columns["text"] is None:
        names = rows.fieldnames or []
        shown = names[:_SHOWN_COLUMNS] + (["…"] if len(names) > _SHOWN_COLUMNS else [])
        raise ReadError(f"{path}: CSV needs a role (or speaker) column and a text column; "
                        f"found {len(names):,} column(s): {', '.join(shown)}")
    calls: dict[str, list[Turn]] = {}
    for lineno, row in _csv_rows(rows, path):
        where = f"{path}:{lineno}"
        call_id = (row.get(columns["call_id"]) if columns["call_id"] else None) or path.stem
        turns = calls.setdefault(call_id, [])
        label = row.get(columns["role"])
        turns.append(_make_turn(len(turns), roles.require(label, where), row.get(columns["text"]) or "",
                                *(row.get(columns[f]) if columns[f] else None for f in _TIME_FIELDS),
                                speaker=label, where=where))
    return [Call(id=call_id, turns=turns) for call_id, turns in calls.items()]


def _csv_rows(rows: csv.DictReader, path: Path):
    """(line number, row) pairs; a quote left open is an error, not the rest of the file in one field."""
    try:
        for row in rows:
            yield rows.line_num, row
    except csv.Error as err:
        raise ReadError(f"{path}:{rows.line_num}: malformed CSV ({err}; a quote left open?)") from None
