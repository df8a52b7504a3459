"""The `callqa` command line.

    callqa score PATH... [--config FILE] [--out DIR] [--meta agents.csv] [--store DB]
    callqa batch INPUT --out RUN [--workers N] [--engine local|ray] [--previous RUN]
    callqa review [--store DB] [--host 127.0.0.1] [--port 8765] [--audio-root DIR]
    callqa clips --out DIR [--store DB] [--week W --agent A --grade G --dimension D --flag F --outcome O]
    callqa corrections --out DIR [--store DB]
    callqa human-scores QA.csv [--store DB]
    callqa calibrate --out NEW_SCORECARD.yaml [--store DB] [--target total|DIMENSION] [--folds 5]

Scores every transcript found (folders are searched recursively) and writes
DIR/calls/<id>.json and .html, DIR/scores.csv, DIR/agents.csv (when agent ids
are known) and DIR/errors.csv, and saves every call in the results store
(DIR/callqa.db by default; a SQLAlchemy URL such as postgresql+psycopg://... works too).
The other commands work on that store: the review web app, flagged clips for a
review session, reviewer corrections as training data, human QA scores to
calibrate against. A file that cannot be read gets one error line
and the run carries on; the exit code is non-zero only when nothing could be
scored.

`callqa batch` is the weekly job: resumable, parallel, with a report for QA
leads; see pipeline/batch/runner.py. Its exit code is 1 when any file or call failed.
`callqa score` is a thin front on the same runner (`run_score`): one reader, one
set of checks and limits, one fault boundary per call, and the same resume rule.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import ConfigError, load_config
from pipeline.readers import ReadError
from pipeline.scorecard import ScorecardError
from pipeline.review.store import Store, StoreError
from pipeline.taggers.lexicon import LexiconError


def score_command(args: argparse.Namespace) -> int:
    """A thin front on the batch's reader, checks and fault boundary (`run_score`)."""
    from pipeline.batch.runner import BatchError, printable, run_score

    try:
        summary = run_score(args.paths, args.out, store=args.store, metadata=args.meta,
                            agent_channel=args.agent_channel, config_path=args.config, progress=not args.quiet)
    except (BatchError, ConfigError, ScorecardError, LexiconError, StoreError) as err:
        print(f"callqa: {printable(str(err))}", file=sys.stderr)
        return 2
    if not summary.files:
        print("callqa: no transcripts (.json .txt .csv) or recordings (.wav .mp3 ...) found in the given paths",
              file=sys.stderr)
        return 1
    out = Path(args.out)
    skipped = f", {summary.skipped} already scored (same input and settings)" if summary.skipped else ""
    print(f"scored {summary.scored} call(s){skipped}; {summary.failed} error row(s) in {out}/errors.csv. "
          f"Results in {out}/ (scores.csv{', agents.csv' if (out / 'agents.csv').exists() else ''}, "
          f"calls/*.json, calls/*.html); store {args.store or out / 'callqa.db'}")
    return 0 if summary.scored or summary.skipped else 1


def batch_command(args: argparse.Namespace) -> int:
    from pipeline.batch.runner import BatchError, printable, run_batch
    from pipeline.batch.weekly import PreviousRunError

    try:
        summary = run_batch(args.input, args.out, workers=args.workers, engine=args.engine,
                            ray_address=args.ray_address, gpus_per_worker=args.gpus_per_worker,
                            previous=args.previous, config_path=args.config, progress=not args.quiet)
    except (BatchError, PreviousRunError, ConfigError, ScorecardError, LexiconError, StoreError) as err:
        print(f"callqa: {printable(str(err))}", file=sys.stderr)
        return 2
    stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in summary.stage_seconds.items())
    print(f"{summary.scored} scored, {summary.skipped} skipped (already scored), {summary.failed} failed "
          f"in {summary.seconds:.1f} s with {summary.workers or 'cluster'} worker(s) "
          f"({summary.calls_per_hour:.0f} calls/hour). Seconds per stage: {stages}.\n"
          f"Results in {args.out}/: report.html, scores.csv, errors.csv, calls/, callqa.db, batch.log")
    return 1 if summary.failed else 0


def _open_store(args: argparse.Namespace) -> Store:
    if "://" not in args.store and not Path(args.store).is_file():
        raise StoreError(f"{args.store}: no results store there; run `callqa score` first or pass --store")
    return Store(args.store)


def review_command(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from pipeline.review.webapp import create_app, is_loopback

    token = args.token or os.environ.get("CALLQA_REVIEW_TOKEN") or None
    if not is_loopback(args.host) and not token:
        print(f"callqa: --host {args.host} lets other machines in: give a shared token with --token or "
              "CALLQA_REVIEW_TOKEN (and put a TLS reverse proxy with accounts in front; see docs/review.md)",
              file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        store = _open_store(args)
        # By default audio is served only from the folders the scoring runs read.
        roots = args.audio_root or store.input_dirs()
        app = create_app(store, config, roots, Path(args.export_dir), host=args.host, token=token)
    except (ConfigError, ScorecardError, StoreError) as err:
        print(f"callqa: {err}", file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        print(f"callqa: warning: listening on {args.host}; anyone who can reach this machine and has the "
              "token can read the calls and record verdicts", file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"callqa review: http://{shown}:{args.port}/{'?token=…' if token else ''} (store {store.name}; "
          f"audio from {', '.join(map(str, roots)) or 'nowhere: no input folders recorded, pass --audio-root'})")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


# Filters of Store.list_calls, offered by `callqa clips`.
LIST_FILTERS = ("week", "agent", "grade", "dimension", "flag", "outcome")


def _filters(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in LIST_FILTERS}


def clips_command(args: argparse.Namespace) -> int:
    from pipeline.review.clips import export_clips
    from pipeline.review.privacy import load_privacy

    try:
        config = load_config(args.config)
        store = _open_store(args)
        privacy = None if args.no_mask else load_privacy(config)
    except (ConfigError, StoreError) as err:
        print(f"callqa: {err}", file=sys.stderr)
        return 2
    calls = store.list_calls(**_filters(args))
    padding = args.padding if args.padding is not None else float(config["review"]["clip_padding"])
    rows, skipped = export_clips(store, calls, Path(args.out), padding, privacy)
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    print(f"{len(rows)} clip(s) from {len(calls) - len(skipped)} call(s) with audio in {args.out}/ "
          f"(index.csv, index.html){'' if privacy else '; personal data NOT masked'}")
    return 0 if rows else 1


def corrections_command(args: argparse.Namespace) -> int:
    from pipeline.review.privacy import load_privacy
    from pipeline.review.verdicts import ExportError, export_corrections

    try:
        store = _open_store(args)
        privacy = None if args.no_mask else load_privacy(load_config(args.config))
    except (ConfigError, StoreError) as err:
        print(f"callqa: {err}", file=sys.stderr)
        return 2
    try:
        rows = export_corrections(store, Path(args.out), privacy)
    except ExportError as err:
        print(f"callqa: {err}", file=sys.stderr)
        return 2
    print(f"{rows} reviewed utterance(s) written to {args.out}/ (datasets.load_from_disk; "
          f"also corrections.jsonl){'' if privacy else '; personal data NOT masked'}")
    return 0


def human_scores_command(args: argparse.Namespace) -> int:
    from pipeline.config import config_path
    from pipeline.review.verdicts import read_human_scores
    from pipeline.scorecard import load_scorecard

    try:
        config = load_config(args.config)
        store = _open_store(args)
        rows = read_human_scores(Path(args.csv), load_scorecard(config_path(config, config["scorecard"])))
    except (ConfigError, ScorecardError, StoreError, ReadError) as err:
        print(f"callqa: {err}", file=sys.stderr)
        return 2
    store.import_human_scores(rows, source=Path(args.csv).name)
    unknown = {c for c, _, _ in rows} - set(store.call_ids())
    print(f"imported {len(rows)} human score(s) for {len({c for c, _, _ in rows})} call(s)"
          + (f"; {len(unknown)} call id(s) not in the store yet" if unknown else ""))
    return 0


def calibrate_command(args: argparse.Namespace) -> int:
    from pipeline.config import config_path
    from pipeline.review.calibrate import CalibrationError, calibrate, report

    try:
        config = load_config(args.config)
        store = _open_store(args)
        source = Path(args.scorecard) if args.scorecard else config_path(config, config["scorecard"])
        result = calibrate(store, source, config, targets=args.target, folds=args.folds)
    except (ConfigError, StoreError, CalibrationError) as err:
        print(f"callqa: {err}", file=sys.stderr)
        return 2
    print(report(result))
    try:
        Path(args.out).write_text(result.text, encoding="utf-8")
    except OSError as err:
        print(f"callqa: {args.out}: cannot write the calibrated scorecard: {err}", file=sys.stderr)
        return 2
    print(f"calibrated scorecard written to {args.out} (from {source}; diff them to review)")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callqa", description="Quality scoring for Chinese call-center calls.")
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score transcripts (files or folders)")
    score.add_argument("paths", nargs="+", help="transcripts (.json .txt .csv), recordings (.wav .flac .mp3 "
                       ".m4a .amr ...) or folders of them")
    score.add_argument("--agent-channel", type=int, choices=(0, 1),
                       help="stereo recordings: the agent's channel for this batch (default: configs/speech.yaml)")
    score.add_argument("--config", help="pipeline config YAML (default: configs/pipeline.yaml)")
    score.add_argument("--out", default="out", help="output folder (default: out)")
    score.add_argument("--meta", help="CSV with call_id, agent_id, team, date for calls that lack them")
    score.add_argument("--store", help="results store: SQLite file or database URL (default: OUT/callqa.db)")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(run=score_command)

    def with_store(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--store", default="out/callqa.db", help="results store: SQLite file or database URL "
                                                                  "(default: out/callqa.db)")
        sub.add_argument("--config", help="pipeline config YAML (default: configs/pipeline.yaml)")
        return sub

    review = with_store("review", "web app for trainers: flagged moments, playback, verdicts")
    review.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, "
                                                             "this machine only)")
    review.add_argument("--port", type=int, default=8765)
    review.add_argument("--audio-root", action="append", type=Path,
                        help="folder the audio files may be served from (repeatable; default: the folders "
                        "the scored calls were read from)")
    review.add_argument("--token", help="shared secret every request must carry (open the app once with "
                        "?token=...); default: $CALLQA_REVIEW_TOKEN; required when --host is not loopback")
    review.add_argument("--export-dir", default="out/exports", help="where exported corrections go")
    review.set_defaults(run=review_command)

    clips = with_store("clips", "export flagged moments as short audio clips with an index")
    clips.add_argument("--out", required=True, help="folder for the clips and index.csv / index.html")
    for name in LIST_FILTERS:
        clips.add_argument(f"--{name}", help=f"only calls with this {name}")
    clips.add_argument("--padding", type=float, help="seconds kept either side (default: review.clip_padding)")
    clips.add_argument("--no-mask", action="store_true", help="keep personal data audible and readable")
    clips.set_defaults(run=clips_command)

    corrections = with_store("corrections", "export reviewer verdicts as a labelled `datasets` set")
    corrections.add_argument("--out", required=True, help="folder for the dataset (datasets.load_from_disk): new, "
                             "empty, or an earlier export, which is replaced whole")
    corrections.add_argument("--no-mask", action="store_true", help="keep personal data in the text")
    corrections.set_defaults(run=corrections_command)

    human = with_store("human-scores", "import human QA scores (CSV) for the calibration view")
    human.add_argument("csv", help="CSV with call_id and total and/or dimension columns (listening or 倾听 ...)")
    human.set_defaults(run=human_scores_command)

    calib = with_store("calibrate", "fit scorecard points and weights to the imported human QA scores")
    calib.add_argument("--out", required=True, help="where to write the calibrated scorecard YAML")
    calib.add_argument("--scorecard", help="scorecard to calibrate (default: the config's scorecard)")
    calib.add_argument("--target", action="append", help="fit to this human score only: total or a dimension "
                       "(repeatable; default: every score the sheet has)")
    calib.add_argument("--folds", type=int, help="cross-validation folds (default: calibration.folds, 5)")
    calib.set_defaults(run=calibrate_command)

    batch = commands.add_parser("batch", help="score a week of calls into a run folder; resumable")
    batch.add_argument("input", help="folder of transcripts/recordings, or a manifest CSV with a path column")
    batch.add_argument("--out", required=True, help="run folder: store, per-call files, CSVs, report, log")
    batch.add_argument("--workers", type=_positive_int, help="parallel workers (default: one per core, "
                       "fewer for audio when memory is short; with --ray-address: the cluster's CPUs)")
    batch.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local process pool, or Ray actors (pip install ray)")
    batch.add_argument("--ray-address", help="address of a running Ray cluster (default: start a local one)")
    batch.add_argument("--gpus-per-worker", type=float,
                       help="GPUs per Ray worker (default: 1 when the cluster has GPUs and there is audio)")
    batch.add_argument("--previous", help="an earlier run folder: the report shows each agent's change")
    batch.add_argument("--config", help="pipeline config YAML (default: configs/pipeline.yaml)")
    batch.add_argument("--quiet", action="store_true", help="no progress bar")
    batch.set_defaults(run=batch_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
