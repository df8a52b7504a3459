"""The results store: every scored call, queryable, plus reviewer verdicts.

    store = Store("out/callqa.db")                 # SQLite file (created if missing)
    store = Store("postgresql+psycopg://u@host/qa") # or any SQLAlchemy URL
    store.save_call(call, input_sha256, config_version)
    store.find_scored(call_id, input_sha256, config_version)  # resume a batch
    store.get_call(call_id) -> Call
    store.list_calls(week=, agent=, grade=, dimension=, flag=, outcome=) -> [CallSummary]
    store.record_verdict(call_id, flag_key, verdict, ...)

The whole `Call` is kept as JSON (the source of truth, read back by `get_call`);
its turns, tags, events, dimension scores, rule results and evidence are also
written to their own tables so QA teams can query them with SQL.

Each `save_call` is one transaction that replaces any earlier version of the
call, so a crash mid-write leaves the previous version or nothing, never half a
call. Reviewer verdicts and imported human scores are kept across re-scoring.

SQLite runs in WAL mode with a busy timeout, so the review app can read and
write while a scoring run writes; writes take the lock up front (BEGIN
IMMEDIATE) so two writers queue instead of failing. The schema is created and
upgraded with Alembic (pipeline/review/migrations/versions/); opening a store brings
it to the newest schema version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.util import CommandError

from pipeline.model import Call

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_S = 30.0
VERDICTS = ("confirm", "reject", "add")
REJECT_REASONS = ("wrong_tag", "wrong_speaker", "asr_error")

metadata = sa.MetaData()

calls = sa.Table(
    "calls", metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("source", sa.Text, nullable=False, default=""),
    sa.Column("agent_id", sa.String, index=True),
    sa.Column("team", sa.String),
    sa.Column("date", sa.String),
    sa.Column("week", sa.String, index=True),  # ISO week of `date`, e.g. 2026-W47
    sa.Column("industry", sa.String),
    sa.Column("audio_path", sa.Text),
    sa.Column("input_dir", sa.Text),  # absolute folder of the file the call was read from
    sa.Column("input_sha256", sa.String(64), nullable=False),
    sa.Column("config_version", sa.String, nullable=False),
    sa.Column("model_versions", sa.JSON, nullable=False),
    sa.Column("scorecard", sa.String),
    sa.Column("total", sa.Float),
    sa.Column("grade", sa.String, index=True),
    sa.Column("critical_failed", sa.Boolean, nullable=False, default=False),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("call_json", sa.Text, nullable=False),
    # The customer outcome (pipeline.outcome), copied from call_json for the list page.
    sa.Column("resolution", sa.String),
    sa.Column("sentiment_change", sa.String),
)

dimension_scores = sa.Table(
    "dimension_scores", metadata,
    sa.Column("call_id", sa.String, sa.ForeignKey("calls.id"), primary_key=True),
    sa.Column("dimension", sa.String, primary_key=True),
    sa.Column("label", sa.String),
    sa.Column("score", sa.Float),
    sa.Column("applicable", sa.Boolean, nullable=False),
)

turns = sa.Table(
    "turns", metadata,
    sa.Column("call_id", sa.String, sa.ForeignKey("calls.id"), primary_key=True),
    sa.Column("turn_id", sa.Integer, primary_key=True),
    sa.Column("role", sa.String, nullable=False),
    sa.Column("speaker", sa.String),
    sa.Column("start_s", sa.Float),
    sa.Column("end_s", sa.Float),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("sentiment", sa.String),
    sa.Column("asr_confidence", sa.Float),
    sa.Column("low_confidence", sa.Boolean, nullable=False, default=False),
)

tags = sa.Table(
    "tags", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String, sa.ForeignKey("calls.id"), nullable=False, index=True),
    sa.Column("turn_id", sa.Integer, nullable=False),
    sa.Column("label", sa.String, nullable=False, index=True),
    sa.Column("char_start", sa.Integer, nullable=False),
    sa.Column("char_end", sa.Integer, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("confidence", sa.Float),
    sa.Column("source", sa.String),
    sa.Column("rule", sa.String),
)

events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String, sa.ForeignKey("calls.id"), nullable=False, index=True),
    sa.Column("kind", sa.String, nullable=False, index=True),
    sa.Column("role", sa.String),
    sa.Column("start_s", sa.Float),
    sa.Column("end_s", sa.Float),
    sa.Column("turn_ids", sa.JSON, nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("detail", sa.Text),
)

rule_results = sa.Table(
    "rule_results", metadata,
    sa.Column("call_id", sa.String, sa.ForeignKey("calls.id"), primary_key=True),
    sa.Column("rule_id", sa.String, primary_key=True),
    sa.Column("dimension", sa.String, nullable=False, index=True),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("points", sa.Float, nullable=False),
    sa.Column("severity", sa.String, nullable=False),
    sa.Column("description", sa.Text),
    # Distinct evidence items of a deduction or bonus: what rule precision counts as "fired".
    sa.Column("evidence_items", sa.Integer, nullable=False, default=0),
)

evidence = sa.Table(
    "evidence", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String, sa.ForeignKey("calls.id"), nullable=False, index=True),
    sa.Column("rule_id", sa.String, nullable=False),
    sa.Column("turn_ids", sa.JSON, nullable=False),
    sa.Column("speaker", sa.String),
    sa.Column("start_s", sa.Float),
    sa.Column("end_s", sa.Float),
    sa.Column("text", sa.Text),
    sa.Column("note", sa.Text),
)

# Reviewer actions are an append-only log; the newest verdict on a flag wins.
verdicts = sa.Table(
    "verdicts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String, sa.ForeignKey("calls.id"), nullable=False, index=True),
    sa.Column("flag_key", sa.String, nullable=False),
    sa.Column("label", sa.String, nullable=False),
    sa.Column("turn_id", sa.Integer),
    sa.Column("verdict", sa.String, nullable=False),
    sa.Column("reason", sa.String),
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.Column("reviewer", sa.String, nullable=False, default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# What the review app's list and rule-precision pages need from the verdicts, kept
# per call so they need not re-score reviewed calls on every request: the
# human-reviewed score and, per rule, evidence items reviewed / upheld / added.
# Written by pipeline.review.verdicts.refresh_review; a new verdict or a re-scored
# call deletes the call's rows (stale), and the app recomputes stale calls.
reviews = sa.Table(
    "reviews", metadata,
    sa.Column("call_id", sa.String, sa.ForeignKey("calls.id"), primary_key=True),
    sa.Column("scorecard", sa.String, nullable=False),  # the scorecard the reviewed score used
    sa.Column("total", sa.Float),
    sa.Column("grade", sa.String),
    sa.Column("verdicts", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

rule_reviews = sa.Table(
    "rule_reviews", metadata,
    sa.Column("call_id", sa.String, sa.ForeignKey("calls.id"), primary_key=True),
    sa.Column("rule_id", sa.String, primary_key=True),
    sa.Column("reviewed", sa.Integer, nullable=False),
    sa.Column("upheld", sa.Integer, nullable=False),
    sa.Column("added", sa.Integer, nullable=False),
)

human_scores = sa.Table(
    "human_scores", metadata,
    sa.Column("call_id", sa.String, primary_key=True),  # may precede the machine score
    sa.Column("dimension", sa.String, primary_key=True),  # a dimension name or "total"
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("source", sa.String, nullable=False, default=""),
    sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
)

_REVIEW_TABLES = (rule_reviews, reviews)
_CHILD_TABLES = _REVIEW_TABLES + (evidence, rule_results, dimension_scores, tags, events, turns)


class StoreError(RuntimeError):
    pass


@dataclass
class CallSummary:
    id: str
    source: str
    agent_id: str | None
    team: str | None
    date: str | None
    week: str | None
    total: float | None
    grade: str | None
    critical_failed: bool
    has_audio: bool
    dimensions: dict[str, float | None] = field(default_factory=dict)
    resolution: str | None = None  # resolved | unresolved | complaint | unknown
    sentiment_change: str | None = None  # calmer | same | angrier


@dataclass
class ReviewSummary:
    """The stored result of a call's verdicts (see `reviews` / `rule_reviews`)."""
    call_id: str
    scorecard: str
    total: float | None
    grade: str | None
    verdicts: int
    rules: dict[str, tuple[int, int, int]]  # rule_id -> (reviewed, upheld, added)


@dataclass
class Verdict:
    id: int
    call_id: str
    flag_key: str
    label: str
    turn_id: int | None
    verdict: str
    reason: str | None
    note: str
    reviewer: str
    created_at: dt.datetime


def iso_week(date: str | None) -> str | None:
    """"2026-11-16" (or "2026-11-16 10:02") -> "2026-W47"; None when not a date."""
    try:
        year, week, _ = dt.date.fromisoformat((date or "")[:10]).isocalendar()
    except ValueError:
        return None
    return f"{year}-W{week:02d}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def database_url(url_or_path: str | Path) -> str:
    text = str(url_or_path)
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _sqlite_engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Take transaction control from the sqlite3 module, which would
        # otherwise start transactions late and commit DDL implicitly.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL still commits atomically (a crash never tears a call);
        # only the last commits before a power cut may be lost, and a batch redoes those.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        # A write transaction locks at BEGIN and waits (busy timeout) for a
        # running writer; a deferred one would fail when upgrading its lock.
        write = conn.get_execution_options().get("write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class Store:
    def __init__(self, url_or_path: str | Path):
        self.url = database_url(url_or_path)
        self.name = str(url_or_path) if "://" not in str(url_or_path) else \
            sa.engine.make_url(self.url).render_as_string(hide_password=True)
        try:
            if self.url.startswith("sqlite"):
                self.engine = _sqlite_engine(self.url)
            else:
                self.engine = sa.create_engine(self.url, pool_pre_ping=True)
            self._writer = self.engine.execution_options(write=True)
            self.migrate()
        except sa.exc.SQLAlchemyError as err:
            raise StoreError(f"{self.name}: cannot open the results store: {err}") from None
        except CommandError as err:  # e.g. a schema version from a newer callqa
            raise StoreError(f"{self.name}: cannot upgrade the results store schema: {err}") from None

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def migrate(self) -> None:
        """Bring the schema to the newest version (creates it in an empty database)."""
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self._writer.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Two processes opening a fresh database must not both create it.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4711)")
            self._check_not_foreign(conn)
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def schema_version(self) -> str | None:
        with self.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()

    def _check_not_foreign(self, conn: sa.Connection) -> None:
        """A database with tables but no schema version was not made by callqa (or
        lost its version table): refuse it rather than fail on SQL halfway."""
        names = set(sa.inspect(conn).get_table_names())
        if names and "alembic_version" not in names:
            raise StoreError(f"{self.name}: this database has tables ({', '.join(sorted(names)[:5])}) but no "
                             "callqa schema version (alembic_version table); it is not a callqa results "
                             "store, or its version table was removed. Use a new store file, or restore it.")

    # --- calls ------------------------------------------------------------

    def save_call(self, call: Call, input_sha256: str, config_version: str) -> None:
        """Store a scored call, replacing an earlier version of the same id, in one transaction."""
        if call.scores is None:
            raise StoreError(f"call {call.id!r}: only scored calls can be saved")
        if call.audio is not None and Path(call.audio.path).exists():
            # Absolute, so the review app finds the audio from any folder (the caller's call is left as is).
            audio = call.audio.model_copy(update={"path": str(Path(call.audio.path).resolve())})
            call = call.model_copy(update={"audio": audio})
        row = dict(
            id=call.id, source=call.source, agent_id=call.agent_id, team=call.team, date=call.date,
            week=iso_week(call.date), industry=call.industry,
            audio_path=call.audio.path if call.audio else None,
            input_dir=str(Path(call.source).resolve().parent) if call.source else None,
            input_sha256=input_sha256, config_version=config_version,
            model_versions=dict(call.versions), scorecard=call.scores.scorecard,
            total=call.scores.total, grade=call.scores.grade,
            critical_failed=call.scores.critical_failed, scored_at=_now(),
            call_json=call.to_json(indent=None),
            resolution=call.outcome.resolution if call.outcome else None,
            sentiment_change=call.outcome.sentiment_change if call.outcome else None,
        )
        with self._writer.begin() as conn:
            for table in _CHILD_TABLES:
                conn.execute(table.delete().where(table.c.call_id == call.id))
            exists = conn.execute(sa.select(calls.c.id).where(calls.c.id == call.id)).first()
            if exists:
                conn.execute(calls.update().where(calls.c.id == call.id).values(**row))
            else:
                conn.execute(calls.insert().values(**row))
            for table, rows in _child_rows(call).items():
                if rows:
                    conn.execute(table.insert(), rows)

    def find_scored(self, call_id: str, input_sha256: str, config_version: str) -> bool:
        """True when this call was already scored from the same input with the same config."""
        query = sa.select(calls.c.id).where(calls.c.id == call_id, calls.c.input_sha256 == input_sha256,
                                            calls.c.config_version == config_version)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def scored_ids(self, input_sha256: str, config_version: str) -> set[str]:
        """Ids of the calls already scored from this input with this config; a
        transcript file may hold several calls, and its ids are known only once read."""
        query = sa.select(calls.c.id).where(calls.c.input_sha256 == input_sha256,
                                            calls.c.config_version == config_version)
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def get_call(self, call_id: str) -> Call:
        with self.engine.connect() as conn:
            text = conn.execute(sa.select(calls.c.call_json).where(calls.c.id == call_id)).scalar()
        if text is None:
            raise KeyError(call_id)
        return Call.from_json(text)

    def call_ids(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(calls.c.id).order_by(calls.c.id)).scalars())

    def _filtered(self, query: sa.Select, week: str | None, agent: str | None, grade: str | None,
                  dimension: str | None, flag: str | None, outcome: str | None) -> sa.Select:
        if outcome:
            query = query.where(calls.c.resolution == outcome)
        if week:
            query = query.where(calls.c.week == week)
        if agent:
            query = query.where(calls.c.agent_id == agent)
        if grade:
            query = query.where(calls.c.grade == grade)
        if dimension:
            query = query.where(calls.c.id.in_(
                sa.select(rule_results.c.call_id).where(rule_results.c.dimension == dimension,
                                                        rule_results.c.status == "deduct")))
        if flag:
            query = query.where(sa.or_(
                calls.c.id.in_(sa.select(tags.c.call_id).where(tags.c.label == flag)),
                calls.c.id.in_(sa.select(events.c.call_id).where(events.c.kind == flag))))
        return query

    def count_calls(self, week: str | None = None, agent: str | None = None, grade: str | None = None,
                    dimension: str | None = None, flag: str | None = None, outcome: str | None = None) -> int:
        query = self._filtered(sa.select(sa.func.count()).select_from(calls), week, agent, grade, dimension, flag,
                               outcome)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def list_calls(self, week: str | None = None, agent: str | None = None, grade: str | None = None,
                   dimension: str | None = None, flag: str | None = None, outcome: str | None = None,
                   limit: int | None = None) -> list[CallSummary]:
        """Calls matching every filter given, newest first (the first `limit` of them).
        `dimension`: calls with a deduction in that dimension; `flag`: calls with a tag
        of that label or an event of that kind; `outcome`: the customer outcome's
        resolution (resolved, unresolved, complaint, unknown)."""
        columns = [calls.c[name] for name in ("id", "source", "agent_id", "team", "date", "week", "total", "grade",
                                              "critical_failed", "audio_path", "resolution", "sentiment_change")]
        query = self._filtered(sa.select(*columns).order_by(calls.c.date.desc(), calls.c.id),
                               week, agent, grade, dimension, flag, outcome)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
            ids = [r["id"] for r in rows]
            scores: dict[str, dict] = {i: {} for i in ids}
            if ids:
                for d in conn.execute(sa.select(dimension_scores)
                                      .where(dimension_scores.c.call_id.in_(ids))).mappings():
                    scores[d["call_id"]][d["dimension"]] = d["score"]
        return [CallSummary(id=r["id"], source=r["source"], agent_id=r["agent_id"], team=r["team"],
                            date=r["date"], week=r["week"], total=r["total"], grade=r["grade"],
                            critical_failed=r["critical_failed"], has_audio=bool(r["audio_path"]),
                            dimensions=scores[r["id"]], resolution=r["resolution"],
                            sentiment_change=r["sentiment_change"]) for r in rows]

    def facets(self) -> dict[str, list[str]]:
        """The values each filter can take, for the review app's drop-downs."""
        with self.engine.connect() as conn:
            def distinct(column):
                return [v for v in conn.execute(sa.select(column).distinct().order_by(column)).scalars()
                        if v is not None]
            return dict(week=distinct(calls.c.week), agent=distinct(calls.c.agent_id),
                        grade=distinct(calls.c.grade), dimension=distinct(dimension_scores.c.dimension),
                        flag=sorted(set(distinct(tags.c.label)) | set(distinct(events.c.kind))),
                        outcome=distinct(calls.c.resolution))

    # --- reviewer actions --------------------------------------------------

    def record_verdict(self, call_id: str, flag_key: str, label: str, verdict: str,
                       turn_id: int | None = None, reason: str | None = None, note: str = "",
                       reviewer: str = "") -> int:
        """Log a reviewer's verdict on a flag: confirm, reject (with a reason) or add (a missed flag)."""
        if verdict not in VERDICTS:
            raise StoreError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
        if reason is not None and reason not in REJECT_REASONS:
            raise StoreError(f"reason must be one of {', '.join(REJECT_REASONS)}, got {reason!r}")
        with self._writer.begin() as conn:
            if conn.execute(sa.select(calls.c.id).where(calls.c.id == call_id)).first() is None:
                raise StoreError(f"no call {call_id!r} in the store")
            result = conn.execute(verdicts.insert().values(
                call_id=call_id, flag_key=flag_key, label=label, turn_id=turn_id, verdict=verdict,
                reason=reason, note=note, reviewer=reviewer, created_at=_now()))
            _delete_review(conn, call_id)  # stale until pipeline.review.verdicts.refresh_review
            return result.inserted_primary_key[0]

    def verdicts(self, call_id: str | None = None) -> list[Verdict]:
        """Every verdict in the order given (newest last), for one call or all."""
        query = sa.select(verdicts).order_by(verdicts.c.id)
        if call_id is not None:
            query = query.where(verdicts.c.call_id == call_id)
        with self.engine.connect() as conn:
            return [Verdict(**row) for row in conn.execute(query).mappings()]

    def verdict_count(self, call_id: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(verdicts)
                                .where(verdicts.c.call_id == call_id)).scalar()

    # --- stored review results (see the `reviews` table) ---------------------

    def generation(self, calls_only: bool = False) -> tuple:
        """Changes whenever a call is saved, a verdict recorded or a review result stored
        (`calls_only`: whenever a call is saved): readers may keep what they derived from
        the store until it changes. Index lookups only."""
        parts = [sa.select(sa.func.count()).select_from(calls).scalar_subquery(),
                 sa.select(sa.func.max(calls.c.scored_at)).scalar_subquery()]
        if not calls_only:
            parts += [sa.select(sa.func.max(verdicts.c.id)).scalar_subquery(),
                      sa.select(sa.func.count()).select_from(reviews).scalar_subquery(),
                      sa.select(sa.func.max(reviews.c.updated_at)).scalar_subquery()]
        query = sa.select(*parts)
        with self.engine.connect() as conn:
            return tuple(conn.execute(query).one())

    def save_review(self, summary: ReviewSummary) -> None:
        """Replace the stored review result of one call, unless a verdict came in since
        it was computed (then it stays stale and is computed again)."""
        with self._writer.begin() as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(verdicts)
                            .where(verdicts.c.call_id == summary.call_id)).scalar() != summary.verdicts:
                return
            _delete_review(conn, summary.call_id)
            conn.execute(reviews.insert().values(
                call_id=summary.call_id, scorecard=summary.scorecard, total=summary.total, grade=summary.grade,
                verdicts=summary.verdicts, updated_at=_now()))
            if summary.rules:
                conn.execute(rule_reviews.insert(), [
                    dict(call_id=summary.call_id, rule_id=rule, reviewed=r, upheld=u, added=a)
                    for rule, (r, u, a) in summary.rules.items()])

    def stale_reviews(self, scorecard: str) -> list[str]:
        """Calls with verdicts whose stored review result is missing or from another scorecard."""
        current = sa.select(reviews.c.call_id).where(reviews.c.scorecard == scorecard)
        query = (sa.select(verdicts.c.call_id).distinct().where(verdicts.c.call_id.not_in(current))
                 .where(verdicts.c.call_id.in_(sa.select(calls.c.id))))
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def reviews(self, call_ids: list[str]) -> dict[str, ReviewSummary]:
        """The stored review results of these calls (those that have one); rules not loaded."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(reviews).where(reviews.c.call_id.in_(call_ids))).mappings()
            return {r["call_id"]: ReviewSummary(r["call_id"], r["scorecard"], r["total"], r["grade"],
                                                r["verdicts"], {}) for r in rows}

    def rule_fired(self) -> dict[str, int]:
        """rule_id -> evidence items of its deductions and bonuses over every call."""
        query = sa.select(rule_results.c.rule_id, sa.func.sum(rule_results.c.evidence_items)) \
            .group_by(rule_results.c.rule_id)
        with self.engine.connect() as conn:
            return {rule: int(fired or 0) for rule, fired in conn.execute(query)}

    def rule_reviewed(self) -> dict[str, tuple[int, int, int]]:
        """rule_id -> (reviewed, upheld, added) summed over the stored review results."""
        query = sa.select(rule_reviews.c.rule_id, sa.func.sum(rule_reviews.c.reviewed),
                          sa.func.sum(rule_reviews.c.upheld), sa.func.sum(rule_reviews.c.added)) \
            .group_by(rule_reviews.c.rule_id)
        with self.engine.connect() as conn:
            return {rule: tuple(int(x or 0) for x in sums) for rule, *sums in conn.execute(query)}

    def input_dirs(self) -> list[Path]:
        """The folders the stored calls were read from, outermost only."""
        with self.engine.connect() as conn:
            found = sorted({Path(d) for d in conn.execute(sa.select(calls.c.input_dir).distinct()).scalars() if d})
        outer: list[Path] = []
        for folder in found:  # sorted, so a parent comes before its subfolders
            if not any(folder.is_relative_to(o) for o in outer):
                outer.append(folder)
        return outer

    # --- calibration --------------------------------------------------------

    def import_human_scores(self, rows: list[tuple[str, str, float]], source: str) -> int:
        """Store (call_id, dimension or "total", score) from a human QA sheet, replacing earlier ones."""
        with self._writer.begin() as conn:
            for call_id, dimension, score in rows:
                conn.execute(human_scores.delete().where(human_scores.c.call_id == call_id,
                                                         human_scores.c.dimension == dimension))
            if rows:
                conn.execute(human_scores.insert(), [
                    dict(call_id=c, dimension=d, score=s, source=source, imported_at=_now())
                    for c, d, s in rows])
        return len(rows)

    def human_scores(self) -> dict[str, dict[str, float]]:
        """call_id -> {dimension or "total": human score}."""
        out: dict[str, dict[str, float]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(human_scores)).mappings():
                out.setdefault(row["call_id"], {})[row["dimension"]] = row["score"]
        return out


def _delete_review(conn: sa.Connection, call_id: str) -> None:
    for table in _REVIEW_TABLES:
        conn.execute(table.delete().where(table.c.call_id == call_id))


def evidence_items(result) -> set[tuple]:
    """The distinct evidence items (turns, text) of a deduction or bonus; none otherwise."""
    if result.status not in ("deduct", "bonus"):
        return set()
    return {(tuple(ev.turn_ids), ev.text) for ev in result.evidence}


def _child_rows(call: Call) -> dict[sa.Table, list[dict]]:
    results = [r for d in call.scores.dimensions.values() for r in d.results]
    return {
        turns: [dict(call_id=call.id, turn_id=t.id, role=t.role, speaker=t.speaker, start_s=t.start,
                     end_s=t.end, text=t.text, sentiment=t.sentiment, asr_confidence=t.asr_confidence,
                     low_confidence=t.low_confidence) for t in call.turns],
        tags: [dict(call_id=call.id, turn_id=t.turn_id, label=t.label, char_start=t.char_start,
                    char_end=t.char_end, text=t.text, confidence=t.confidence, source=t.source,
                    rule=t.rule) for t in call.tags],
        events: [dict(call_id=call.id, kind=e.kind, role=e.role, start_s=e.start, end_s=e.end,
                      turn_ids=list(e.turn_ids), value=e.value, detail=e.detail) for e in call.events],
        dimension_scores: [dict(call_id=call.id, dimension=d.name, label=d.label, score=d.score,
                                applicable=d.applicable) for d in call.scores.dimensions.values()],
        rule_results: [dict(call_id=call.id, rule_id=r.rule_id, dimension=r.dimension, status=r.status,
                            points=r.points, severity=r.severity, description=r.description,
                            evidence_items=len(evidence_items(r)))
                       for r in results],
        evidence: [dict(call_id=call.id, rule_id=r.rule_id, turn_ids=list(e.turn_ids), speaker=e.speaker,
                        start_s=e.start, end_s=e.end, text=e.text, note=e.note)
                   for r in results for e in r.evidence],
    }


def file_sha256(path: str | Path) -> str:
    """The `input_sha256` of a transcript or audio file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

