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
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from pydantic import ValidationError

from pipeline.model import Call, Turn
from pipeline.normalize import normalize_text, to_simplified

TRANSCRIPT_SUFFIXES = (".json", ".txt", ".csv")
_CJK_OR_ASCII = re.compile(r"[\u3400-\u9fffA-Za-z0-9]")
_LABELLED_LINE = re.compile(r"^\s*([^:：\s][^:：]{0,11}?)\s*[:：]\s*(.*)$")
_TIME_FIELDS = ("start", "end")


class ReadError(ValueError):
    """A transcript that cannot be read; the message names the file and the problem."""


def decode_text(raw: bytes, path: Path) -> str:
    if not raw.strip():
        raise ReadError(f"{path}: file is empty")
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        raise ReadError(f"{path}: not UTF-8, UTF-16 or GB18030 text") from None
    # GB18030 decodes almost any byte string; real Chinese text is mostly
    # letters, digits and CJK, binary garbage is not.
    printable = len(_CJK_OR_ASCII.findall(text))
    if printable < 0.5 * len(text.replace(" ", "").replace("\n", "")):
        raise ReadError(f"{path}: not UTF-8, UTF-16 or GB18030 text (looks binary)")
    return text


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


def read_calls(path: str | Path, roles: RoleMap) -> list[Call]:
    """Read one transcript file into one or more calls."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TRANSCRIPT_SUFFIXES:
        raise ReadError(f"{path}: unsupported file type {suffix!r} (expected .json, .txt or .csv)")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ReadError(f"{path}: cannot read: {err.strerror}") from None
    text = decode_text(raw, path)
    reader = {".json": _read_json, ".txt": _read_dialogue_text, ".csv": _read_csv}[suffix]
    calls = reader(text, path, roles)
    for call in calls:
        if not call.turns:
            raise ReadError(f"{path}: call {call.id!r} has no turns")
        call.source = str(path)
    return calls


def _time(value: object, where: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ReadError(f"{where}: time {value!r} is not a number of seconds") from None
    if seconds < 0:
        raise ReadError(f"{where}: negative time {seconds}")
    return seconds


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
            raise ReadError(f"{where}: not a valid callqa call: {err.errors()[0]['msg']}") from None
    turns = []
    for i, raw_turn in enumerate(item["turns"]):
        turn_where = f"{where}, turn {i}"
        if not isinstance(raw_turn, dict) or "text" not in raw_turn:
            raise ReadError(f"{turn_where}: expected an object with `text`")
        label = raw_turn.get("role", raw_turn.get("speaker"))
        if label is None:
            raise ReadError(f"{turn_where}: no `role` or `speaker`")
        turns.append(_make_turn(i, roles.require(label, turn_where), str(raw_turn["text"]),
                                raw_turn.get("start"), raw_turn.get("end"), label, turn_where))
    call_id = str(item.get("id") or (path.stem if index == 0 else f"{path.stem}_{index}"))
    extra = {k: str(v) for k, v in item.get("metadata", {}).items()}
    return Call(id=call_id, turns=turns, metadata=extra,
                **{k: str(item[k]) for k in _CALL_FIELDS if item.get(k) is not None})


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
    rows = csv.DictReader(io.StringIO(text))
    header = {name.strip().lower(): name for name in rows.fieldnames or []}
    columns = {key: next((header[a] for a in aliases if a in header), None)
               for key, aliases in _CSV_ALIASES.items()}
    if columns["role"] is None or columns["text"] is None:
        raise ReadError(f"{path}: CSV needs a role (or speaker) column and a text column; "
                        f"found {list(header)}")
    calls: dict[str, list[Turn]] = {}
    for lineno, row in enumerate(rows, start=2):
        where = f"{path}:{lineno}"
        call_id = (row.get(columns["call_id"]) if columns["call_id"] else None) or path.stem
        turns = calls.setdefault(call_id, [])
        label = row.get(columns["role"])
        turns.append(_make_turn(len(turns), roles.require(label, where), row.get(columns["text"]) or "",
                                *(row.get(columns[f]) if columns[f] else None for f in _TIME_FIELDS),
                                speaker=label, where=where))
    return [Call(id=call_id, turns=turns) for call_id, turns in calls.items()]
