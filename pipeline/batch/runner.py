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

Everything a call goes through, from reading to its files and store row, is one
fault boundary: a failure anywhere is an error row and the next call goes on.
`callqa score` is `run_score`: the same items, checks, stages and recorder, run
in one process. A run holds RUN with a file lock, so two runs never share it.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import sys
import threading
import time
import unicodedata
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
from pipeline.report import write_agent_summary, write_batch_csv, write_call, write_csv
from pipeline.scoring import Scorer, is_audio
from pipeline.review.store import Store, file_sha256
from pipeline.batch.weekly import read_previous, summarize, write_weekly_report

CALL_FIELDS = ("agent_id", "team", "date", "industry")
CHANNEL_LAYOUTS = {"mono": None, "agent_left": 0, "agent_right": 1}
MAX_MESSAGE_CHARS = 500  # a CSV header of a million columns must not become a million-column error
PARENT_CHECK_S = 0.5  # how often a worker looks whether the driver is still there
LOCK_FILE = ".callqa.lock"
# What a folder written by callqa holds: another non-empty folder is not used as --out.
OUTPUT_MARKERS = ("errors.csv", "callqa.db", "batch.log", LOCK_FILE)  # every run writes errors.csv

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
    files: int = 0  # input files found

    @property
    def failed(self) -> int:
        return len(self.errors)

    @property
    def calls_per_hour(self) -> float:
        return self.scored / self.seconds * 3600 if self.seconds else 0.0


# --- inputs --------------------------------------------------------------------

def find_files(folder: Path, out_dir: Path) -> list[Item]:
    """Every file under a folder except hidden ones and the run folder (which may sit
    inside it): a stray .docx is reported, not silently ignored."""
    out_dir = out_dir.resolve()
    return [Item(str(p)) for p in sorted(folder.rglob("*")) if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            and not p.resolve().is_relative_to(out_dir)]


def find_items(paths: list[str | Path], out_dir: Path, agent_channel: int | None = None) -> list[Item]:
    """`callqa score`'s inputs: files (a .csv is a transcript) and folders; a file named
    twice, or also found in a folder, is read once."""
    items, seen = [], set()
    for raw in paths:
        path = Path(raw)
        for item in find_files(path, out_dir) if path.is_dir() else [Item(str(path))]:
            key = Path(item.path).resolve()
            if key not in seen:  # a missing file is kept: its error row is made by the reader
                seen.add(key)
                item.agent_channel = agent_channel
                items.append(item)
    return items


def batch_items(input_path: Path, out_dir: Path) -> tuple[list[Item], list[ErrorRow]]:
    """`callqa batch`'s inputs: every file under a folder, or the rows of a manifest."""
    if input_path.is_dir():
        return find_files(input_path, out_dir), []
    if input_path.suffix.lower() == ".csv" and input_path.is_file():
        return read_manifest(input_path)
    raise BatchError(f"{input_path}: INPUT must be a folder of calls or a manifest CSV with a `path` column")


def _read_table(path: Path, key: str, what: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(where, row) for each row of a CSV that must have a `key` column; cells stripped."""
    try:
        text = decode_text(path.read_bytes(), path)
    except OSError as err:
        raise BatchError(f"{path}: cannot read the {what}: {err.strerror}") from None
    except ReadError as err:
        raise BatchError(f"cannot read the {what}: {err}") from None
    rows = csv.DictReader(io.StringIO(text), strict=True)
    try:
        names = [name.strip() for name in rows.fieldnames or []]
        if key not in names:
            shown = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
            raise BatchError(f"{path}: the {what} needs a `{key}` column; found {shown or 'no header'}")
        for row in rows:
            yield f"{path}:{rows.line_num}", {k.strip(): (v or "").strip() for k, v in row.items()
                                               if isinstance(k, str) and isinstance(v, str)}
    except csv.Error as err:
        raise BatchError(f"{path}:{rows.line_num}: malformed {what} CSV: {err}") from None


def read_manifest(path: Path) -> tuple[list[Item], list[ErrorRow]]:
    """Items from a manifest CSV; a bad or repeated row becomes an error row, the rest still run."""
    items, errors, seen = [], [], {}
    for where, row in _read_table(path, "path", "manifest"):
        try:
            item = _manifest_item(row, path.parent, where)
        except BatchError as err:
            errors.append(ErrorRow(where, "manifest", str(err)))
            continue
        key = (str(Path(item.path).resolve()), item.call_id)
        if key in seen:  # counted once, never twice in scores.csv and the report
            errors.append(ErrorRow(where, "manifest", f"{where}: the same file and call_id as {seen[key]}; "
                                   "counted once", item.call_id or ""))
            continue
        seen[key] = where
        items.append(item)
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
                score = float(value)
            except ValueError:
                score = math.nan
            if not math.isfinite(score):
                raise BatchError(f"{where}: {key} {value!r} is not a number")
            human[key.removeprefix("human_")] = score
    return Item(path=str(base / row["path"]), call_id=row.get("call_id") or None,
                fields={k: row[k] for k in CALL_FIELDS if row.get(k)}, human_scores=human,
                agent_channel=CHANNEL_LAYOUTS.get(layout))


def read_metadata(path: Path) -> dict[str, dict[str, str]]:
    """call_id -> {agent_id, team, date, industry} from `callqa score --meta`."""
    return {row["call_id"]: {k: row[k] for k in CALL_FIELDS if row.get(k)}
            for _, row in _read_table(path, "call_id", "metadata CSV") if row.get("call_id")}


# --- the worker stages ------------------------------------------------------------

class Stages:
    """The models one worker holds, built once: the scorer, and the speech
    recogniser from the first audio file on (a text-only batch never loads it).
    `metadata` (call id -> agent_id, team, date, industry) is `callqa score --meta`."""

    def __init__(self, config_path: str | None = None, threads: int = 1, device: str = "cpu",
                 metadata: dict[str, dict[str, str]] | None = None):
        self.config_path = config_path
        self.config = load_config(config_path)
        # No per-turn progress from the speech stage: score and batch have their own bar.
        self.scorer = Scorer(self.config, speech_overrides={"cpu_threads": threads, "device": device, "progress": False})
        self.metadata = metadata or {}

    def read(self, item: Item) -> list[Call]:
        """Stage read / transcribe: the calls in one file, checked against the
        limits, with the manifest's (or --meta's) fields applied."""
        path = Path(item.path)
        if item.is_audio:
            calls = self.scorer.read(path, item.agent_channel)
        else:
            calls = self.scorer.read(path)
        if item.call_id:
            calls = [_pick(calls, item)]
        if item.human_scores and len(calls) > 1:
            raise ReadError(f"{path}: the manifest gives human scores but the file holds "
                            f"{len(calls)} calls; name one with call_id")
        for call in calls:
            for key, value in {**self.metadata.get(call.id, {}), **item.fields}.items():
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


def run_inline(items: Iterable[Item], stages: Stages) -> Iterator[Outcome]:
    """Outcomes of `process_item` in this process, one file after another (`callqa score`)."""
    for item in items:
        yield process_item(item, stages)


def _start_worker(config_path: str | None, threads: int, driver: int) -> None:
    global _worker_stages
    _exit_with_driver(driver)
    _worker_stages = Stages(config_path, threads)


def _exit_with_driver(driver: int) -> None:
    """A worker ends when the driver does, however it ends (kill -9 included): an
    orphaned worker would otherwise hold its models' memory, or go on with its file.
    The driver's pid comes from the driver: it may be gone before this runs."""

    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="callqa-parent-watch").start()


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
                               initargs=(config_path, threads, os.getpid()))


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
    if stages.metadata:  # --meta changes agent ids and teams, so a changed file rescores
        text += f"; meta {_digest(stages.metadata)}"
    settings = {k: v for k, v in scorer.speech_config().items() if k not in ("cpu_threads", "device")}
    return {"text": text, "audio": f"{text}; speech {_digest(settings)}"}


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


@contextmanager
def run_folder(out_dir: Path, log_file: bool) -> Iterator[None]:
    """Hold the output folder for one run: refuse a folder of other files, lock it
    against a second run (two runs would both score everything and interleave their
    writes) and, for a batch, log to RUN/batch.log."""
    if out_dir.exists() and not out_dir.is_dir():
        raise BatchError(f"{out_dir}: --out is a file, not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not any((out_dir / m).exists() for m in OUTPUT_MARKERS):
        raise BatchError(f"{out_dir}: --out is not empty and holds no callqa results; choose a new or empty "
                         "folder (callqa writes calls/, CSVs and a store there and would mix them with your files)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = open(out_dir / LOCK_FILE, "a+", encoding="utf-8")
    except OSError as err:
        raise BatchError(f"{out_dir}: cannot write the output folder: {err.strerror}") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise BatchError(f"{out_dir}: another callqa run (process {holder}) is writing to this folder; "
                             "wait for it to finish or choose another --out") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        handler = None
        if log_file:
            handler = logging.FileHandler(out_dir / "batch.log", encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
        try:
            yield
        finally:
            if handler:
                log.removeHandler(handler)
                handler.close()
            lock.truncate(0)  # the lock itself goes with the open file, also when the process is killed


def run_batch(input_path: str | Path, out_dir: str | Path, *, workers: int | None = None,
              engine: str = "local", ray_address: str | None = None, gpus_per_worker: float | None = None,
              previous: str | Path | None = None, config_path: str | None = None,
              progress: bool = True) -> Summary:
    """Score every call under `input_path` into the run folder `out_dir`, skipping
    those already done; write the batch CSV, the error rows and the weekly report."""
    started = time.perf_counter()
    input_path, out_dir = Path(input_path), Path(out_dir)
    if workers is not None and workers < 1:
        raise BatchError(f"--workers must be at least 1, got {workers}")
    if engine not in ("local", "ray"):
        raise BatchError(f"unknown engine {engine!r}; expected local or ray")
    with run_folder(out_dir, log_file=True):
        stages = Stages(config_path)  # in the driver too: a bad config stops here, before any worker
        if previous:
            read_previous(Path(previous))  # a wrong --previous fails now, not after hours of scoring
        items, errors = batch_items(input_path, out_dir)
        if not items and not errors:
            raise BatchError(f"{input_path}: no files to score")
        versions = version_keys(stages)
        workers = workers or (None if engine == "ray" and ray_address else default_workers(items, stages.config))
        log.info("run: %s -> %s, %d file(s), engine %s, workers %s; versions %s",
                 input_path, out_dir, len(items), engine, workers or "cluster", versions)
        summary = Summary(workers=workers or 0, files=len(items))
        recorder = _Recorder(Store(out_dir / "callqa.db"), out_dir, versions, summary, progress)
        for error in errors:
            recorder.fail(error)
        in_flight = stages.config["batch"]["in_flight_per_worker"]
        if engine == "local":
            def engine_run(todo): return run_local(todo, workers, config_path, in_flight)
        else:
            def engine_run(todo): return run_ray(todo, workers, config_path, in_flight, ray_address,
                                                 gpus_per_worker, any(item.is_audio for item in items))
        _score_items(recorder, items, engine_run, "batch", progress)
        summary.seconds = time.perf_counter() - started
        recorder.write_batch_outputs(stages, previous)
        recorder.store.close()
        log.info("done: %d scored, %d skipped, %d failed in %.1f s (%.0f calls/hour); stage seconds %s",
                 summary.scored, summary.skipped, summary.failed, summary.seconds,
                 summary.calls_per_hour, {k: round(v, 2) for k, v in summary.stage_seconds.items()})
        return summary


def run_score(paths: list[str | Path], out_dir: str | Path, *, store: str | None = None,
              metadata: str | Path | None = None, agent_channel: int | None = None,
              config_path: str | None = None, progress: bool = True) -> Summary:
    """`callqa score`: the batch's item reader, checks, stages and fault boundary, run
    in this process. Writes OUT/calls/, scores.csv and agents.csv (every column of
    `report.batch_rows`) and errors.csv, and saves the calls in the store. Like a
    batch, a call already in the store from the same input and versions is not
    scored again, so a rerun into the same OUT finishes what is missing."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    with run_folder(out_dir, log_file=False):
        meta = read_metadata(Path(metadata)) if metadata else {}
        stages = Stages(config_path, metadata=meta)
        skip = {Path(metadata).resolve()} if metadata else set()
        items = [item for item in find_items(paths, out_dir, agent_channel) if Path(item.path).resolve() not in skip]
        summary = Summary(workers=1, files=len(items))
        # Every failure on stderr, with or without the progress bar: `score` is run by hand.
        recorder = _Recorder(open_store(store or out_dir / "callqa.db"), out_dir, version_keys(stages), summary,
                             echo=True, keep_calls=True)
        _score_items(recorder, items, lambda todo: run_inline(todo, stages), "scoring", progress)
        summary.seconds = time.perf_counter() - started
        recorder.write_score_outputs()
        recorder.store.close()
        return summary


def open_store(url_or_path: str | Path) -> Store:
    """The results store; a folder that cannot be created is a clear error, not a traceback."""
    try:
        return Store(url_or_path)
    except OSError as err:
        raise BatchError(f"{url_or_path}: cannot create the results store: {err.strerror}") from None


def _score_items(recorder: "_Recorder", items: list[Item], engine_run, desc: str, progress: bool) -> None:
    """Hand the unfinished items to an engine and record each outcome as it arrives."""
    summary = recorder.summary
    bar = tqdm(total=len(items), unit="file", desc=desc, disable=not progress or len(items) < 2, dynamic_ncols=True)
    for outcome in engine_run(recorder.unfinished(items, bar)):
        recorder.record(outcome)
        bar.update(1)
        bar.set_postfix(scored=summary.scored, skipped=summary.skipped, failed=summary.failed)
    bar.close()


def _reportable(call: Call):
    """The call's summary for the report and scores.csv; scores that are not finite
    numbers would break every average and chart, so the call fails alone instead."""
    summary = summarize(call)
    if not all(math.isfinite(score) for score in (summary.total, *summary.dimensions.values()) if score is not None):
        raise ValueError(f"call {call.id!r}: its scores are not finite numbers ({summary.total})")
    return summary


def printable(text: str) -> str:
    """Text safe to print on a terminal: control and format characters (escape
    sequences in a file name, bidi overrides) are shown escaped, not obeyed."""
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text)


class _Recorder:
    """The driver's side: what is already done, and writing each result. Writing
    is the last step of a call's fault boundary: a call that cannot be written or
    stored is an error row and the others go on."""

    def __init__(self, store: Store, out_dir: Path, versions: dict[str, str], summary: Summary, echo: bool,
                 keep_calls: bool = False):
        self.store, self.out_dir, self.versions, self.summary = store, out_dir, versions, summary
        self.echo = echo  # failures to the terminal too, above the progress bar
        self.sources: dict[str, str] = {}  # call id -> file, for this run's calls
        self.reported = []  # weekly-report summaries of this run's calls
        self.calls: list[Call] | None = [] if keep_calls else None  # the whole calls, for `callqa score`'s CSVs

    def version(self, item: Item) -> str:
        """The version key, with what the manifest or command line sets for this item:
        a call renamed, another agent id or agent channel is a different result."""
        key = self.versions["audio" if item.is_audio else "text"]
        overrides = {"call_id": item.call_id, "fields": item.fields, "agent_channel": item.agent_channel}
        overrides = {k: v for k, v in overrides.items() if v not in (None, {})}
        return f"{key}; item {_digest(overrides)}" if overrides else key

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
                self._guarded(item, call_id, "store", self._skip, call_id, item)
        for call in outcome.calls:
            if self._claim(call.id, item):
                self._guarded(item, call.id, "write", self._write, call, item)

    def _guarded(self, item: Item, call_id: str, stage: str, step, *args) -> None:
        try:
            step(*args)
        except Exception as err:  # one call that cannot be written never stops the run
            self.fail(ErrorRow(item.path, stage, _message(err), call_id))

    def _skip(self, call_id: str, item: Item) -> None:
        call = self.store.get_call(call_id)
        self._remember(call, item, _reportable(call))
        self.summary.skipped += 1
        log.info("skipped %s (%s): already scored", printable(call_id), printable(item.path))

    def _write(self, call: Call, item: Item) -> None:
        reported = _reportable(call)  # first: a call the report cannot read is not written either
        start = time.perf_counter()
        write_call(call, self.out_dir)
        self._add_time("write", time.perf_counter() - start)
        start = time.perf_counter()
        self.store.save_call(call, item.sha256, self.version(item))
        self._add_time("store", time.perf_counter() - start)
        self._remember(call, item, reported)
        self.summary.scored += 1
        log.info("scored %s (%s): %s %s", printable(call.id), printable(item.path), call.scores.total,
                 call.scores.grade)

    def _claim(self, call_id: str, item: Item) -> bool:
        """Call ids are the key of everything (store, calls/, CSVs): a second call with
        the same id in one run is an error row naming both files, never an overwrite."""
        other = self.sources.get(call_id)
        if other is None:  # each item is recorded once: a second claim is always another call
            self.sources[call_id] = item.path
            return True
        where = "read twice from this file" if other == item.path else f"already used by {other}"
        self.fail(ErrorRow(item.path, "read", f"{item.path}: call id {call_id!r} is {where}; call ids must be "
                           "unique in a run, so this call is not scored", call_id))
        return False

    def _remember(self, call: Call, item: Item, reported) -> None:
        if item.human_scores:
            self.store.import_human_scores([(call.id, name, score) for name, score in item.human_scores.items()],
                                           source=item.path)
        self.reported.append(reported)
        if self.calls is not None:
            self.calls.append(call)

    def fail(self, error: ErrorRow) -> None:
        self.summary.errors.append(error)
        text = printable(error.message if error.path in error.message else f"{error.path}: {error.message}")
        if self.echo:
            tqdm.write(f"failed ({error.stage}): {text}", file=sys.stderr)
        log.warning("failed %s%s at %s: %s", printable(error.path),
                    f" ({printable(error.call_id)})" if error.call_id else "", error.stage, text)

    def _add_time(self, stage: str, seconds: float) -> None:
        self.summary.stage_seconds[stage] = self.summary.stage_seconds.get(stage, 0.0) + seconds

    def _write_errors(self) -> None:
        write_csv(self.out_dir / "errors.csv", ["path", "call_id", "stage", "message"],
                  [vars(e) for e in self.summary.errors])

    def write_batch_outputs(self, stages: Stages, previous: str | Path | None) -> None:
        # By call id, not by finishing order, so that every run of the same calls
        # (resumed, on Ray, with more workers) writes the same files.
        self.reported.sort(key=lambda summary: summary.call_id)
        rows = [s.row for s in self.reported]
        write_csv(self.out_dir / "scores.csv", list(rows[0]) if rows else ["call_id"], rows)
        self._write_errors()
        human = self.store.human_scores()
        write_weekly_report(self.reported, self.out_dir, stages.scorer.scorecard, stages.config,
                            failed=self.summary.failed, human_scores=human,
                            previous=Path(previous) if previous else None)

    def write_score_outputs(self) -> None:
        write_batch_csv(self.calls, self.out_dir / "scores.csv")
        if not write_agent_summary(self.calls, self.out_dir / "agents.csv"):
            (self.out_dir / "agents.csv").unlink(missing_ok=True)  # not an earlier run's agents
        self._write_errors()
