"""The `callqa` command line.

    callqa score PATH... [--config FILE] [--out DIR] [--meta agents.csv]

Scores every transcript found (folders are searched recursively) and writes
DIR/calls/<id>.json and .html, DIR/scores.csv, DIR/agents.csv (when agent ids
are known) and DIR/errors.csv. A file that cannot be read gets one error line
and the batch carries on; the exit code is non-zero only when nothing could be
scored.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from tqdm import tqdm

from pipeline.config import ConfigError, load_config
from pipeline.model import Call
from pipeline.readers import TRANSCRIPT_SUFFIXES, ReadError, decode_text
from pipeline.report import write_agent_summary, write_atomic, write_batch_csv, write_call
from pipeline.scorecard import ScorecardError
from pipeline.scoring import Scorer
from pipeline.taggers.lexicon import LexiconError


def find_inputs(paths: list[str]) -> list[Path]:
    found = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in TRANSCRIPT_SUFFIXES
                            and not p.name.startswith("."))
        else:
            found.append(path)  # a missing file is reported by the reader, per file
    return found


def read_metadata(path: Path) -> dict[str, dict[str, str]]:
    """call_id -> {agent_id, team, date, ...} from a metadata CSV."""
    text = decode_text(path.read_bytes(), path)
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or "call_id" not in rows[0]:
        raise ReadError(f"{path}: metadata CSV needs a call_id column")
    return {row["call_id"]: row for row in rows}


def _apply_metadata(call: Call, meta: dict[str, dict[str, str]]) -> None:
    row = meta.get(call.id)
    if row:
        for field in ("agent_id", "team", "date", "industry"):
            if row.get(field):
                setattr(call, field, row[field])


def score_command(args: argparse.Namespace) -> int:
    try:
        scorer = Scorer(load_config(args.config))
        meta = read_metadata(Path(args.meta)) if args.meta else {}
    except (ConfigError, ScorecardError, LexiconError, ReadError) as err:
        print(f"callqa: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    inputs = find_inputs(args.paths)
    if not inputs:
        print("callqa: no transcripts (.json, .txt, .csv) found in the given paths", file=sys.stderr)
        return 1
    scored: list[Call] = []
    errors: list[tuple[str, str]] = []
    for path in tqdm(inputs, desc="scoring", unit="file", disable=args.quiet or len(inputs) < 2):
        try:
            calls = scorer.read(path)
        except ReadError as err:
            errors.append((str(path), str(err)))
            tqdm.write(f"error: {err}", file=sys.stderr)
            continue
        for call in calls:
            _apply_metadata(call, meta)
            scorer.score(call)
            write_call(call, out)
            scored.append(call)
    write_batch_csv(scored, out / "scores.csv")
    has_agents = write_agent_summary(scored, out / "agents.csv")
    write_atomic(out / "errors.csv", "file,error\n" + "".join(
        f'"{p}","{m.replace(chr(34), chr(39))}"\n' for p, m in errors))
    print(f"scored {len(scored)} call(s) from {len(inputs) - len(errors)} file(s); "
          f"{len(errors)} file(s) failed. Results in {out}/ (scores.csv"
          f"{', agents.csv' if has_agents else ''}, calls/*.json, calls/*.html)")
    return 0 if scored else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callqa", description="Quality scoring for Chinese call-center calls.")
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score transcripts (files or folders)")
    score.add_argument("paths", nargs="+", help="transcript files (.json .txt .csv) or folders")
    score.add_argument("--config", help="pipeline config YAML (default: configs/pipeline.yaml)")
    score.add_argument("--out", default="out", help="output folder (default: out)")
    score.add_argument("--meta", help="CSV with call_id, agent_id, team, date for calls that lack them")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(run=score_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
