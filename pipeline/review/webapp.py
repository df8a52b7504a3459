"""`callqa review`: the trainers' web app over the results store.

Pages: / (calls, filtered by week, agent, grade, dimension, flag type),
/calls/<id> (scores, transcript with flags, audio player, verdicts),
/rules (per-rule precision from verdicts), /calibration (machine vs human QA).
Call ids may hold any character ("/", "#", "?", "%", spaces): every link
percent-encodes the id (the `urlid` filter) and the routes take the rest of the
path as the id, decoded once, so "%41%42" is the call named "%41%42". The audio
of a call is served from /audio/<id> with HTTP range requests (seeking in long
files), and only from inside the audio roots; verdicts are posted to
/verdicts/<id>. Plain HTML, CSS and a little JavaScript from
pipeline/review/static; nothing from the internet.

The list and rule-precision pages read stored review results (the `reviews`
tables, written when a verdict is saved) instead of re-scoring reviewed calls.

Safety: listens on 127.0.0.1 unless given another --host; on a loopback address
it refuses requests whose Host header names another machine (DNS rebinding).
Every POST must carry an Origin or Referer naming this app's host (CSRF). With
a token (callqa review --token, required off loopback), every request needs it:
`?token=` once (a cookie is set and the URL cleaned), the cookie, or an
`Authorization: Bearer` header; compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import threading
from collections import defaultdict
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes, urlencode, urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from pipeline.config import config_path
from pipeline.model import Call
from pipeline.report import EVENT_KINDS, ROLE_LABELS, clock, highlight
from pipeline.review.privacy import load_privacy
from pipeline.review.store import REJECT_REASONS, Store, StoreError
from pipeline.review.verdicts import (ADDABLE_LABELS, TRAINING_LABELS, ExportError, added_key, calibration,
                                      export_corrections, flags_of, human_scores, refresh_stale_reviews,
                                      review_summary, rule_precision)
from pipeline.scorecard import load_scorecard

PACKAGE = Path(__file__).resolve().parent
AUDIO_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg",
               ".opus": "audio/ogg", ".m4a": "audio/mp4", ".webm": "audio/webm"}
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
LIST_LIMIT = 500  # rows on the calls page; narrow the filters to see the rest
TOKEN_COOKIE = "callqa_review_token"
MAX_TURN_ID = 2**31 - 1  # the store's turn ids are 32-bit integers
MAX_REVIEWER_CHARS = 100


class VerdictIn(BaseModel):
    flag_key: str = Field(max_length=500)
    label: str = Field(max_length=100)
    turn_id: int = Field(ge=0, le=MAX_TURN_ID)
    verdict: str
    reason: str | None = None
    note: str = ""
    reviewer: str = Field("", max_length=MAX_REVIEWER_CHARS)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_id(call_id: str) -> str:
    """A call id as one URL path part: every reserved character percent-encoded."""
    return quote(call_id, safe="")


class Derived:
    """Values derived from the store (list rows, facets, rule precision), kept until
    `Store.generation()` says a call, verdict or review result changed (or, with
    `calls_only`, a call was saved); so 20 clients reading the list do not repeat the
    same queries."""

    MAX_KEYS = 256

    def __init__(self, store: Store, calls_only: bool = False):
        self.store, self.calls_only = store, calls_only
        self.lock = threading.Lock()
        self.generation: tuple | None = None
        self.values: dict = {}
        self.computing: dict = {}

    def get(self, key, compute):
        generation = self.store.generation(self.calls_only)
        with self.lock:
            if generation != self.generation or len(self.values) > self.MAX_KEYS:
                self.generation, self.values, self.computing = generation, {}, {}
            # One request computes a missing value; the others asking for it wait for it.
            computing = self.computing.setdefault(key, threading.Lock())
        with computing:
            with self.lock:
                if self.generation == generation and key in self.values:
                    return self.values[key]
            value = compute()
            with self.lock:
                if self.generation == generation:
                    self.values[key] = value
        return value


def path_call_id(request: Request, prefix: str) -> str:
    """The call id of a /calls/<id>, /audio/<id> or /verdicts/<id> request, percent-decoded
    exactly once from the raw path. (Some ASGI clients decode the path twice, which
    would open "AB" for a link to "%41%42"; the raw path is what the browser sent.)"""
    raw = request.scope.get("raw_path")
    if not raw:
        return request.path_params["call_id"]
    path = raw.split(b"?", 1)[0]
    return unquote_to_bytes(path[path.index(prefix.encode()) + len(prefix):]).decode("utf-8", "replace")


def create_app(store: Store, config: dict, audio_roots: list[Path], export_dir: Path,
               host: str = "127.0.0.1", token: str | None = None) -> FastAPI:
    scorecard = load_scorecard(config_path(config, config["scorecard"]))
    context_seconds = float(config["review"]["context_seconds"])
    max_note = int(config["review"]["max_note_chars"])
    roots = [Path(r).resolve() for r in audio_roots]
    # the review pages, plus the partials they share with the call report (outcome.html)
    templates = Jinja2Templates(directory=[PACKAGE / "templates", PACKAGE.parent / "templates"])
    templates.env.filters["urlid"] = url_id
    derived = Derived(store)
    derived_from_calls = Derived(store, calls_only=True)  # unchanged by verdicts

    def fresh_reviews() -> None:
        derived.get("stale reviews refreshed", lambda: refresh_stale_reviews(store, scorecard))
    app = FastAPI(title="callqa review", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=PACKAGE / "static"), name="static")

    @app.middleware("http")
    async def same_origin_posts(request: Request, call_next):
        # A page on another site must not be able to post verdicts into the store:
        # a POST names where it comes from (browsers send Origin, or at least Referer).
        if request.method == "POST":
            source = request.headers.get("origin") or request.headers.get("referer")
            if not source or urlsplit(source).netloc != request.headers.get("host"):
                return JSONResponse({"detail": "cross-origin request refused: a POST needs an Origin or "
                                               "Referer header naming this app"}, status_code=403)
        return await call_next(request)

    if token:
        # The cookie holds a digest of the token (ASCII, whatever the token), not the token itself.
        cookie_value = hmac.new(token.encode(), b"callqa review cookie", hashlib.sha256).hexdigest()

        def matches(candidate: str | None, expected: str) -> bool:
            return bool(candidate) and hmac.compare_digest(candidate.encode(), expected.encode())

        @app.middleware("http")
        async def require_token(request: Request, call_next):
            if matches(request.query_params.get("token"), token):
                # Remember it in a cookie and drop it from the address bar and history.
                rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
                response.set_cookie(TOKEN_COOKIE, cookie_value, httponly=True, samesite="strict",
                                    secure=request.url.scheme == "https")
                return response
            # Header values arrive as latin-1; a UTF-8 token's bytes are read back as UTF-8.
            bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip() \
                .encode("latin-1").decode("utf-8", "replace")
            if matches(request.cookies.get(TOKEN_COOKIE), cookie_value) or matches(bearer, token):
                return await call_next(request)
            return JSONResponse({"detail": "this review app needs its token: open the link with ?token=…"},
                                status_code=401)

    if is_loopback(host):  # added last, so it runs first
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES)

    def load(call_id: str) -> Call:
        try:
            return store.get_call(call_id)
        except KeyError:
            raise HTTPException(404, f"no call {call_id!r}") from None

    @app.get("/", response_class=HTMLResponse)
    def call_list(request: Request, week: str = "", agent: str = "", grade: str = "", dimension: str = "",
                  flag: str = "", outcome: str = ""):
        filters = dict(week=week, agent=agent, grade=grade, dimension=dimension, flag=flag, outcome=outcome)
        chosen = {k: v or None for k, v in filters.items()}
        fresh_reviews()

        def facets():
            found = store.facets()
            # Flag types are tags and the timing events a trainer can play; not call-level measures.
            found["flag"] = [f for f in found["flag"] if f in TRAINING_LABELS or f in EVENT_KINDS]
            return found

        def rows():
            calls = store.list_calls(**chosen, limit=LIST_LIMIT)
            return calls, store.count_calls(**chosen), store.reviews([c.id for c in calls])

        def page():
            calls, total, reviewed = rows()
            return templates.get_template("review_list.html").render(
                calls=calls, total_calls=total, filters=filters, facets=derived_from_calls.get("facets", facets),
                reviewed=reviewed, dimensions=scorecard.dimensions)

        # The page depends only on the filters and the store, so it is kept whole.
        return HTMLResponse(derived.get(("list", tuple(chosen.items())), page))

    @app.get("/calls/{call_id:path}", response_class=HTMLResponse)
    def call_page(request: Request):
        call_id = path_call_id(request, "/calls/")
        call = load(call_id)
        verdicts = store.verdicts(call_id)
        flags = flags_of(call, verdicts)
        human = human_scores(call, verdicts, scorecard)
        by_turn = defaultdict(list)
        for flag in flags:
            by_turn[flag.turn_id].append(flag)
        rows = [dict(turn=t, clock=clock(t.start) if t.start is not None else f"#{t.id}",
                     role_label=ROLE_LABELS[t.role], html=highlight(t.text, call.tags_for(t.id)),
                     flags=by_turn.get(t.id, [])) for t in call.turns]
        return templates.TemplateResponse(request, "review_call.html", dict(
            call=call, scores=call.scores, human=human, rows=rows, flags=flags,
            has_audio=call.audio is not None, context_seconds=context_seconds,
            addable=ADDABLE_LABELS, reasons=REJECT_REASONS, clock=clock,
            stale=call.scores.scorecard != scorecard.label, scorecard=scorecard))

    @app.get("/audio/{call_id:path}")
    def call_audio(request: Request):
        call = load(path_call_id(request, "/audio/"))
        if call.audio is None:
            raise HTTPException(404, "this call has no audio")
        path = Path(call.audio.path).resolve()
        if path.suffix.lower() not in AUDIO_TYPES or not any(path.is_relative_to(r) for r in roots):
            raise HTTPException(403, "audio file outside the audio roots (the folders the calls were read "
                                     "from, or callqa review --audio-root)")
        if not path.is_file():
            raise HTTPException(404, "audio file missing")
        return FileResponse(path, media_type=AUDIO_TYPES[path.suffix.lower()])

    @app.post("/verdicts/{call_id:path}")
    def post_verdict(request: Request, body: VerdictIn):
        call_id = path_call_id(request, "/verdicts/")
        call = load(call_id)
        verdicts = store.verdicts(call_id)
        if body.turn_id not in {t.id for t in call.turns}:
            raise HTTPException(422, f"turn {body.turn_id} is not a turn of this call")
        if len(body.note) > max_note:
            raise HTTPException(422, f"note longer than {max_note} characters (review.max_note_chars)")
        if body.verdict == "add":
            if body.label not in ADDABLE_LABELS or body.flag_key != added_key(body.label, body.turn_id):
                raise HTTPException(422, f"an added flag needs a known label ({', '.join(ADDABLE_LABELS)}) "
                                         "and the key added:<label>:<turn>")
        else:
            flag = next((f for f in flags_of(call, verdicts) if f.key == body.flag_key), None)
            if flag is None:
                raise HTTPException(422, f"no flag {body.flag_key!r} on this call")
            if (body.label, body.turn_id) != (flag.label, flag.turn_id):
                raise HTTPException(422, f"flag {flag.key!r} is {flag.label!r} on turn {flag.turn_id}, "
                                         f"not {body.label!r} on turn {body.turn_id}")
        try:
            store.record_verdict(call_id, body.flag_key, body.label, body.verdict, turn_id=body.turn_id,
                                 reason=body.reason or None, note=body.note.strip(),
                                 reviewer=body.reviewer.strip())
        except StoreError as err:
            raise HTTPException(422, str(err)) from None
        verdicts = store.verdicts(call_id)
        human = human_scores(call, verdicts, scorecard)
        store.save_review(review_summary(call, verdicts, scorecard, human))
        return dict(flag_key=body.flag_key, verdict=body.verdict, reason=body.reason, note=body.note,
                    human=dict(total=human.total, grade=human.grade,
                               dimensions={k: d.score for k, d in human.dimensions.items()}))

    @app.get("/rules", response_class=HTMLResponse)
    def rules_page(request: Request):
        fresh_reviews()
        return templates.TemplateResponse(request, "review_rules.html",
                                          dict(rows=derived.get("rules", lambda: rule_precision(
                                              store, scorecard, derived_from_calls.get("fired", store.rule_fired)))))

    @app.get("/calibration", response_class=HTMLResponse)
    def calibration_page(request: Request):
        agreements, worst = calibration(store, list(scorecard.dimensions))
        return templates.TemplateResponse(request, "review_calibration.html",
                                          dict(agreements=agreements, worst=worst, dimensions=scorecard.dimensions))

    @app.post("/export/corrections")
    def post_export():
        # Always masked from the web; `callqa corrections --no-mask` is the deliberate way round.
        out = export_dir / f"corrections-{dt.datetime.now():%Y%m%d-%H%M%S-%f}"
        try:
            rows = export_corrections(store, out, load_privacy(config))
        except ExportError as err:
            raise HTTPException(400, str(err)) from None
        return dict(path=str(out), rows=rows)

    return app
