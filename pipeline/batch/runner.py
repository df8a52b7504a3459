"""Scoring a week of calls as one job that can be killed and resumed.

    callqa batch INPUT --out RUN [--workers N] [--engine local|ray] [--previous RUN]

INPUT is a folder (searched recursively) or a manifest CSV: a `path` column and
optionally call_id, agent_id, team, date, industry, channel_layout (agent_left,
agent_right or mono) and human scores (`human_total`, `human_<dimension>`). The
run folder RUN holds everything:

    callqa.db     every scored call (pipeline/review/store.py): the record of what is done
    calls/        per-call JSON and HTML
    scores.csv    one row per call of this run
    errors.csv    what failed: path, call_id, stage, message
    report.html   the weekly report; its figures as report/*.csv (pipeline/batch/weekly.py)
    batch.log     what each run did

Each input file goes through the worker stages in `process_item`: read
(transcripts) or transcribe (audio), then tag, events, score. A worker builds its
models once (`Stages`) and is either a process of a local pool or a Ray actor;
both run the same `process_item`. Only the driver writes: a scored call's files
first, then the call in the store in one transaction. A call already in the store
with the same input hash and the same config and model versions is skipped, so a
run killed at any moment and started again finishes the rest, and each call is
scored once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import psutil
from tqdm import tqdm

from pipeline import __version__
from pipeline.config import load_config
from pipeline.model import Call
from pipeline.readers import ReadError, decode_text
from pipeline.report import write_call, write_csv
from pipeline.scoring import Scorer, is_audio
from pipeline.review.store import Store, file_sha256
from pipeline.batch.weekly import read_previous, summarize, write_weekly_report

CALL_FIELDS = ("agent_id", "team", "date", "industry")
CHANNEL_LAYOUTS = {"mono": None, "agent_left": 0, "agent_right": 1}
MAX_MESSAGE_CHARS = 500  # a CSV header of a million columns must not become a million-column error

log = logging.getLogger("callqa.batch")


class BatchError(ValueError):
    """The batch cannot start (bad INPUT, manifest or config); problems with single
    files never raise, they become error rows."""


@dataclass
class Item:
    """One input file and what the manifest says about it."""

    path: str
    call_id: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # agent_id, team, date, industry
    human_scores: dict[str, float] = field(default_factory=dict)  # "total" or a dimension -> score
    agent_channel: int | None = None
    sha256: str = ""
    done_ids: frozenset[str] = frozenset()  # calls of this file already in the store

    @property
    def is_audio(self) -> bool:
        return is_audio(self.path)

    @property
    def expected_id(self) -> str | None:
        """The call id known before reading: the manifest's, or an audio file's name."""
        return self.call_id or (Path(self.path).stem if self.is_audio else None)


@dataclass
class ErrorRow:
    path: str
    stage: str
    message: str
    call_id: str = ""


@dataclass
class Outcome:
    """What the worker stages made of one item."""

    item: Item
    calls: list[Call] = field(default_factory=list)  # scored now
    skipped: list[str] = field(default_factory=list)  # read, but already in the store
    errors: list[ErrorRow] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> time spent


@dataclass
class Summary:
    scored: int = 0
    skipped: int = 0
    errors: list[ErrorRow] = field(default_factory=list)
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    workers: int = 0

    @property
    def failed(self) -> int:
        return len(self.errors)

    @property
    def calls_per_hour(self) -> float:
        return self.scored / self.seconds * 3600 if self.seconds else 0.0


# --- inputs --------------------------------------------------------------------

def find_items(input_path: Path, out_dir: Path) -> tuple[list[Item], list[ErrorRow]]:
    """Every file under a folder (except the run folder and hidden files), or the rows of a manifest."""
    if input_path.is_dir():
        out_dir = out_dir.resolve()
        files = sorted(p for p in input_path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(input_path).parts)
                       and not p.resolve().is_relative_to(out_dir))
        return [Item(str(p)) for p in files], []
    if input_path.suffix.lower() == ".csv" and input_path.is_file():
        return read_manifest(input_path)
    raise BatchError(f"{input_path}: INPUT must be a folder of calls or a manifest CSV with a `path` column")


def read_manifest(path: Path) -> tuple[list[Item], list[ErrorRow]]:
    """Items from a manifest CSV; a bad row becomes an error row, the rest still run."""
    try:
        text = decode_text(path.read_bytes(), path)
    except (OSError, ReadError) as err:
        raise BatchError(f"{path}: cannot read the manifest: {err}") from None
    rows = csv.DictReader(io.StringIO(text))
    if "path" not in [name.strip() for name in rows.fieldnames or []]:
        raise BatchError(f"{path}: a manifest needs a `path` column; found {rows.fieldnames}")
    items, errors = [], []
    for lineno, row in enumerate(rows, start=2):
        where = f"{path}:{lineno}"
        clean = {key.strip(): (value or "").strip() for key, value in row.items() if isinstance(key, str)}
        try:
            items.append(_manifest_item(clean, path.parent, where))
        except BatchError as err:
            errors.append(ErrorRow(where, "manifest", str(err)))
    return items, errors


def _manifest_item(row: dict[str, str], base: Path, where: str) -> Item:
    if not row.get("path"):
        raise BatchError(f"{where}: the path is empty")
    layout = row.get("channel_layout", "").lower()
    if layout not in ("", *CHANNEL_LAYOUTS):
        raise BatchError(f"{where}: channel_layout {layout!r} is not one of {', '.join(CHANNEL_LAYOUTS)}")
    human = {}
    for key, value in row.items():
        if key.startswith("human_") and value:
            try:
                human[key.removeprefix("human_")] = float(value)
            except ValueError:
                raise BatchError(f"{where}: {key} {value!r} is not a number") from None
    return Item(path=str(base / row["path"]), call_id=row.get("call_id") or None,
                fields={k: row[k] for k in CALL_FIELDS if row.get(k)}, human_scores=human,
                agent_channel=CHANNEL_LAYOUTS.get(layout))


# --- the worker stages ------------------------------------------------------------

class Stages:
    """The models one worker holds, built once: the scorer, and the speech
    recogniser from the first audio file on (a text-only batch never loads it)."""

    def __init__(self, config_path: str | None = None, threads: int = 1, device: str = "cpu"):
        self.config_path = config_path
        self.config = load_config(config_path)
        # Workers print no per-turn progress of the speech stage: the batch has its own bar.
        self.scorer = Scorer(self.config, speech_overrides={"cpu_threads": threads, "device": device, "progress": False})

    def read(self, item: Item) -> list[Call]:
        """Stage read / transcribe: the calls in one file, with the manifest's fields applied."""
        path = Path(item.path)
        if item.is_audio:
            calls = self.scorer.read(path, item.agent_channel)
        else:
            limit_mb = self.config["batch"]["max_transcript_mb"]
            if path.stat().st_size > limit_mb * 2**20:
                raise ReadError(f"{path}: {path.stat().st_size / 2**20:.0f} MB is too large for a transcript "
                                f"(limit batch.max_transcript_mb: {limit_mb} MB)")
            calls = self.scorer.read(path)
        if item.call_id:
            calls = [_pick(calls, item)]
        if item.human_scores and len(calls) > 1:
            raise ReadError(f"{path}: the manifest gives human scores but the file holds "
                            f"{len(calls)} calls; name one with call_id")
        for call in calls:
            for key, value in item.fields.items():
                setattr(call, key, value)
        return calls


def _pick(calls: list[Call], item: Item) -> Call:
    """The manifest's call: the one with its id, or the file's only call renamed."""
    for call in calls:
        if call.id == item.call_id:
            return call
    if len(calls) == 1:
        calls[0].id = item.call_id
        return calls[0]
    raise ReadError(f"{item.path}: no call {item.call_id!r} among {[c.id for c in calls]}")


def process_item(item: Item, stages: Stages) -> Outcome:
    """All worker stages for one input file. Nothing raises: a failure is an error
    row naming the stage, and the other calls of the file still go on."""
    outcome = Outcome(item)
    stage = "transcribe" if item.is_audio else "read"
    try:
        with _timed(outcome.seconds, stage):
            calls = stages.read(item)
    except Exception as err:  # whatever one bad file does, the batch carries on
        outcome.errors.append(ErrorRow(item.path, stage, _message(err)))
        return outcome
    for call in calls:
        if call.id in item.done_ids:
            outcome.skipped.append(call.id)
            continue
        try:
            for stage, run in stages.scorer.stages():
                with _timed(outcome.seconds, stage):
                    run(call)
        except Exception as err:
            outcome.errors.append(ErrorRow(item.path, stage, _message(err), call.id))
            continue
        outcome.calls.append(call)
    return outcome


@contextmanager
def _timed(seconds: dict[str, float], stage: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start


def _message(err: BaseException) -> str:
    # ValueErrors (ReadError, AudioError, ...) say what is wrong with the input;
    # anything else is a bug or a library's complaint: its type helps whoever investigates.
    text = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"


# --- engines: where process_item runs --------------------------------------------------

_worker_stages: Stages | None = None


def _start_worker(config_path: str | None, threads: int) -> None:
    global _worker_stages
    _worker_stages = Stages(config_path, threads)


def _process_in_worker(item: Item) -> Outcome:
    return process_item(item, _worker_stages)


def run_local(items: Iterable[Item], workers: int, config_path: str | None,
              in_flight_per_worker: int) -> Iterator[Outcome]:
    """Outcomes of `process_item` from a pool of worker processes, as they finish.

    Only `in_flight_per_worker` items per worker are handed out ahead, so memory
    stays bounded however long the batch. A worker that dies (a crash in native
    code, the out-of-memory killer) breaks the pool: the items that were in flight
    are retried one at a time on a fresh pool, and one that kills a worker alone
    becomes an error row.
    """
    threads = max(1, _cores() // workers)
    items = iter(items)
    suspects: list[Item] = []
    retrying = False  # the one item in flight is a suspect running alone
    pool = _new_pool(workers, config_path, threads)
    in_flight: dict = {}
    try:
        while True:
            while not retrying and len(in_flight) < workers * in_flight_per_worker:
                if suspects:
                    if in_flight:
                        break
                    item, retrying = suspects.pop(), True
                elif (item := next(items, None)) is None:
                    break
                try:
                    future = pool.submit(_process_in_worker, item)
                except BrokenProcessPool as err:  # a worker died since the last look
                    future = Future()
                    future.set_exception(err)
                in_flight[future] = item
            if not in_flight:
                return
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            broken = False
            for future in done:
                item = in_flight.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    broken = True
                    in_flight[future] = item  # handled with the rest below
                    continue
                except Exception as err:  # e.g. a result that cannot be sent back
                    outcome = Outcome(item, errors=[ErrorRow(item.path, "worker", _message(err))])
                retrying = False
                yield outcome
            if broken:
                lost = list(in_flight.values())
                in_flight.clear()
                pool.shutdown(cancel_futures=True)
                pool = _new_pool(workers, config_path, threads)
                if retrying:
                    retrying = False
                    yield Outcome(lost[0], errors=[ErrorRow(
                        lost[0].path, "worker", "the worker process died on this file "
                        "(a crash in native code or out of memory)")])
                else:
                    log.warning("a worker process died; retrying %d file(s) one at a time", len(lost))
                    suspects.extend(lost)
    finally:
        pool.shutdown(cancel_futures=True)


def _new_pool(workers: int, config_path: str | None, threads: int) -> ProcessPoolExecutor:
    # Each worker gets its share of the cores. The OpenMP runtime reads this once,
    # when it loads, and Whisper's output depends on it, so it is set before the
    # workers start, as Ray does for its actors: both engines give the same results.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    # spawn, not fork: a fork of a process running threads (tqdm, SQLite) can deadlock.
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_worker,
                               initargs=(config_path, threads))


class RayWorker:
    """A Ray actor holding one worker's models; runs the same `process_item`."""

    def __init__(self, config_path: str | None, threads: int, device: str):
        self.stages = Stages(config_path, threads, device)

    def process(self, item: Item) -> Outcome:
        return process_item(item, self.stages)


def run_ray(items: Iterable[Item], workers: int | None, config_path: str | None, in_flight_per_worker: int,
            address: str | None, gpus_per_worker: float | None, has_audio: bool) -> Iterator[Outcome]:
    """Outcomes of `process_item` from Ray actors, as they finish.

    With an address the actors run on that Ray cluster (the input and run folders
    must be on storage every node sees, and callqa installed there) with a CPU
    each; without one, a local Ray instance gets this machine's cores, shared
    among the actors as the local engine shares them among its processes (Ray
    sets each actor's OMP_NUM_THREADS to its CPUs), so both give the same results.
    Actors take a GPU each (`gpus_per_worker`, or 1 when the cluster has GPUs and
    the batch has audio): speech recognition is the heavy stage and the only one
    that uses it.
    """
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(_cores(), workers or 0), include_dashboard=False, log_to_driver=False)
    try:
        resources = ray.cluster_resources()
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if resources.get("GPU", 0) and has_audio else 0.0
        # Never more actors than the cluster can place: the others would wait forever.
        count = min(workers or int(resources.get("CPU", 1)), int(resources.get("CPU", 1)))
        if gpus_per_worker:
            count = min(count, int(resources.get("GPU", 0) / gpus_per_worker))
        if count < 1:
            raise BatchError(f"the Ray cluster has {resources.get('GPU', 0)} GPU(s); "
                             f"{gpus_per_worker} per worker leaves no room for one")
        threads = 1 if address else max(1, _cores() // count)
        # A dead actor is restarted (models rebuilt) and its call retried once.
        actor = ray.remote(RayWorker).options(num_cpus=threads, num_gpus=gpus_per_worker,
                                              max_restarts=-1, max_task_retries=1)
        log.info("ray: %d actor(s), %d CPU and %s GPU each, cluster %s", count, threads, gpus_per_worker, resources)
        device = "cuda" if gpus_per_worker else "cpu"
        actors = [actor.remote(config_path, threads, device) for _ in range(count)]
        load = {i: 0 for i in range(count)}
        items = iter(items)
        in_flight: dict = {}  # result ref -> (item, actor index)
        while True:
            while len(in_flight) < count * in_flight_per_worker and (item := next(items, None)) is not None:
                index = min(load, key=load.get)
                load[index] += 1
                in_flight[actors[index].process.remote(item)] = (item, index)
            if not in_flight:
                return
            done, _ = ray.wait(list(in_flight), num_returns=1)
            item, index = in_flight.pop(done[0])
            load[index] -= 1
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayError as err:
                yield Outcome(item, errors=[ErrorRow(item.path, "worker", _message(err))])
    finally:
        if started_here:
            ray.shutdown()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(items: list[Item], config: dict) -> int:
    """One worker per core; with audio in the batch, no more than free memory allows
    speech recognisers; never more than there are files."""
    workers = _cores()
    if any(item.is_audio for item in items):
        per_worker = config["batch"]["asr_worker_memory_gb"] * 2**30
        workers = min(workers, int(psutil.virtual_memory().available // per_worker))
    return max(1, min(workers, len(items)))


# --- the driver -------------------------------------------------------------------

def version_keys(stages: Stages) -> dict[str, str]:
    """What decides a call's result, for text and for audio calls: a stored call
    scored under other versions is scored again."""
    scorer = stages.scorer
    text = f"callqa {__version__}; config {scorer.config_version}; tagger {scorer.tagger.name}"
    settings = {k: v for k, v in scorer.speech_config().items() if k not in ("cpu_threads", "device")}
    settings = json.dumps(settings, sort_keys=True, ensure_ascii=False)
    return {"text": text, "audio": f"{text}; speech {hashlib.sha256(settings.encode()).hexdigest()[:16]}"}


def run_batch(input_path: str | Path, out_dir: str | Path, *, workers: int | None = None,
              engine: str = "local", ray_address: str | None = None, gpus_per_worker: float | None = None,
              previous: str | Path | None = None, config_path: str | None = None,
              progress: bool = True) -> Summary:
    """Score every call under `input_path` into the run folder `out_dir`, skipping
    those already done; write the batch CSV, the error rows and the weekly report."""
    started = time.perf_counter()
    input_path, out_dir = Path(input_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out_dir / "batch.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        stages = Stages(config_path)  # in the driver too: a bad config stops here, before any worker
        if previous:
            read_previous(Path(previous))  # a wrong --previous fails now, not after hours of scoring
        items, errors = find_items(input_path, out_dir)
        if not items and not errors:
            raise BatchError(f"{input_path}: no files to score")
        versions = version_keys(stages)
        workers = workers or (None if engine == "ray" and ray_address else default_workers(items, stages.config))
        log.info("run: %s -> %s, %d file(s), engine %s, workers %s; versions %s",
                 input_path, out_dir, len(items), engine, workers or "cluster", versions)
        summary = Summary(workers=workers or 0)
        recorder = _Recorder(Store(out_dir / "callqa.db"), out_dir, versions, summary, progress)
        for error in errors:
            recorder.fail(error)
        bar = tqdm(total=len(items), unit="file", desc="batch", disable=not progress, dynamic_ncols=True)
        to_process = recorder.unfinished(items, bar)
        in_flight = stages.config["batch"]["in_flight_per_worker"]
        if engine == "local":
            outcomes = run_local(to_process, workers, config_path, in_flight)
        elif engine == "ray":
            outcomes = run_ray(to_process, workers, config_path, in_flight, ray_address, gpus_per_worker,
                               any(item.is_audio for item in items))
        else:
            raise BatchError(f"unknown engine {engine!r}; expected local or ray")
        for outcome in outcomes:
            recorder.record(outcome)
            bar.update(1)
            bar.set_postfix(scored=summary.scored, skipped=summary.skipped, failed=summary.failed)
        bar.close()
        summary.seconds = time.perf_counter() - started
        recorder.write_outputs(stages, previous)
        recorder.store.close()
        log.info("done: %d scored, %d skipped, %d failed in %.1f s (%.0f calls/hour); stage seconds %s",
                 summary.scored, summary.skipped, summary.failed, summary.seconds,
                 summary.calls_per_hour, {k: round(v, 2) for k, v in summary.stage_seconds.items()})
        return summary
    finally:
        log.removeHandler(handler)
        handler.close()


class _Recorder:
    """The driver's side: what is already done, and writing each result."""

    def __init__(self, store: Store, out_dir: Path, versions: dict[str, str], summary: Summary, echo: bool):
        self.store, self.out_dir, self.versions, self.summary = store, out_dir, versions, summary
        self.echo = echo  # failures to the terminal too, above the progress bar
        self.sources: dict[str, str] = {}  # call id -> file, for this run's calls
        self.reported = []  # weekly-report summaries of this run's calls

    def version(self, item: Item) -> str:
        return self.versions["audio" if item.is_audio else "text"]

    def unfinished(self, items: list[Item], bar: tqdm) -> Iterator[Item]:
        """The items that still need a worker. Hashes lazily, so work starts at once."""
        for item in items:
            try:
                item.sha256 = file_sha256(item.path)
            except OSError as err:
                self.fail(ErrorRow(item.path, "read", f"{item.path}: cannot read: {err.strerror}"))
                bar.update(1)
                continue
            item.done_ids = frozenset(self.store.scored_ids(item.sha256, self.version(item)))
            if item.expected_id is not None and item.expected_id in item.done_ids:
                self.record(Outcome(item, skipped=[item.expected_id]))
                bar.update(1)
                continue
            yield item

    def record(self, outcome: Outcome) -> None:
        item = outcome.item
        for stage, seconds in outcome.seconds.items():
            self._add_time(stage, seconds)
        for error in outcome.errors:
            self.fail(error)
        for call_id in outcome.skipped:
            if self._claim(call_id, item):
                self.summary.skipped += 1
                self._remember(self.store.get_call(call_id), item)
                log.info("skipped %s (%s): already scored", call_id, item.path)
        for call in outcome.calls:
            if not self._claim(call.id, item):
                continue
            start = time.perf_counter()
            write_call(call, self.out_dir)
            self._add_time("write", time.perf_counter() - start)
            start = time.perf_counter()
            self.store.save_call(call, item.sha256, self.version(item))
            self._add_time("store", time.perf_counter() - start)
            self.summary.scored += 1
            self._remember(call, item)
            log.info("scored %s (%s): %s %s", call.id, item.path, call.scores.total, call.scores.grade)

    def _claim(self, call_id: str, item: Item) -> bool:
        """Call ids are the key of everything: a second file with the same id is an error."""
        other = self.sources.setdefault(call_id, item.path)
        if other != item.path:
            self.fail(ErrorRow(item.path, "write", f"{item.path}: call id {call_id!r} is already used "
                                f"by {other}; call ids must be unique in a batch", call_id))
            return False
        return True

    def _remember(self, call: Call, item: Item) -> None:
        if item.human_scores:
            self.store.import_human_scores([(call.id, name, score) for name, score in item.human_scores.items()],
                                           source=item.path)
        self.reported.append(summarize(call))

    def fail(self, error: ErrorRow) -> None:
        self.summary.errors.append(error)
        if self.echo:
            text = error.message if error.path in error.message else f"{error.path}: {error.message}"
            tqdm.write(f"failed ({error.stage}): {text}", file=sys.stderr)
        log.warning("failed %s%s at %s: %s", error.path, f" ({error.call_id})" if error.call_id else "",
                    error.stage, error.message)

    def _add_time(self, stage: str, seconds: float) -> None:
        self.summary.stage_seconds[stage] = self.summary.stage_seconds.get(stage, 0.0) + seconds

    def write_outputs(self, stages: Stages, previous: str | Path | None) -> None:
        # By call id, not by finishing order, so that every run of the same calls
        # (resumed, on Ray, with more workers) writes the same files.
        self.reported.sort(key=lambda summary: summary.call_id)
        rows = [s.row for s in self.reported]
        write_csv(self.out_dir / "scores.csv", list(rows[0]) if rows else ["call_id"], rows)
        write_csv(self.out_dir / "errors.csv", ["path", "call_id", "stage", "message"],
                  [vars(e) for e in self.summary.errors])
        human = self.store.human_scores()
        write_weekly_report(self.reported, self.out_dir, stages.scorer.scorecard, stages.config,
                            failed=self.summary.failed, human_scores=human,
                            previous=Path(previous) if previous else None)
