"""`callqa review`: the trainers' web app over the results store.

Pages: / (calls, filtered by week, agent, grade, dimension, flag type),
/calls/<id> (scores, transcript with flags, audio player, verdicts),
/rules (per-rule precision from verdicts), /calibration (machine vs human QA).
The audio of a call is served from /calls/<id>/audio with HTTP range requests
(seeking in long files), and only from inside the audio roots. Plain HTML, CSS
and a little JavaScript from pipeline/review/static; nothing from the internet.

Listens on 127.0.0.1 unless given another --host; on a loopback address it also
refuses requests whose Host header names another machine (DNS rebinding), and
every POST must come from the app's own pages (Origin check).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from starlette.middleware.trustedhost import TrustedHostMiddleware

from pipeline.config import config_path
from pipeline.model import Call, Scores
from pipeline.review.privacy import load_privacy
from pipeline.report import EVENT_KINDS, ROLE_LABELS, clock, highlight
from pipeline.review.verdicts import (ADDABLE_LABELS, TRAINING_LABELS, added_key, calibration, export_corrections, flags_of,
                             human_scores, rule_precision)
from pipeline.scorecard import load_scorecard
from pipeline.review.store import REJECT_REASONS, Store, StoreError

PACKAGE = Path(__file__).resolve().parent
AUDIO_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg",
               ".opus": "audio/ogg", ".m4a": "audio/mp4", ".webm": "audio/webm"}
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
LIST_LIMIT = 500  # rows on the calls page; narrow the filters to see the rest


class VerdictIn(BaseModel):
    flag_key: str
    label: str
    turn_id: int
    verdict: str
    reason: str | None = None
    note: str = ""
    reviewer: str = ""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(store: Store, config: dict, audio_roots: list[Path], export_dir: Path,
               host: str = "127.0.0.1") -> FastAPI:
    scorecard = load_scorecard(config_path(config, config["scorecard"]))
    context_seconds = float(config["review"]["context_seconds"])
    roots = [Path(r).resolve() for r in audio_roots]
    templates = Jinja2Templates(directory=PACKAGE / "templates")
    app = FastAPI(title="callqa review", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=PACKAGE / "static"), name="static")
    if is_loopback(host):
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES)

    @app.middleware("http")
    async def same_origin_posts(request: Request, call_next):
        # A page on another site must not be able to post verdicts into the store.
        origin = request.headers.get("origin")
        if request.method == "POST" and origin and urlsplit(origin).netloc != request.headers.get("host"):
            return JSONResponse({"detail": "cross-origin request refused"}, status_code=403)
        return await call_next(request)

    def load(call_id: str) -> Call:
        try:
            return store.get_call(call_id)
        except KeyError:
            raise HTTPException(404, f"no call {call_id!r}") from None

    def reviewed_totals() -> dict[str, Scores]:
        by_call = defaultdict(list)
        for verdict in store.verdicts():
            by_call[verdict.call_id].append(verdict)
        return {cid: human_scores(store.get_call(cid), vs, scorecard) for cid, vs in by_call.items()}

    @app.get("/", response_class=HTMLResponse)
    def call_list(request: Request, week: str = "", agent: str = "", grade: str = "", dimension: str = "",
                  flag: str = ""):
        filters = dict(week=week, agent=agent, grade=grade, dimension=dimension, flag=flag)
        calls = store.list_calls(**{k: v or None for k, v in filters.items()})
        facets = store.facets()
        # Flag types are tags and the timing events a trainer can play; not call-level measures.
        facets["flag"] = [f for f in facets["flag"] if f in TRAINING_LABELS or f in EVENT_KINDS]
        return templates.TemplateResponse(request, "review_list.html", dict(
            calls=calls[:LIST_LIMIT], total_calls=len(calls), filters=filters, facets=facets,
            reviewed=reviewed_totals(),
            dimensions=scorecard.dimensions, verdict_counts=Counter(v.call_id for v in store.verdicts())))

    @app.get("/calls/{call_id}", response_class=HTMLResponse)
    def call_page(request: Request, call_id: str):
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

    @app.get("/calls/{call_id}/audio")
    def call_audio(call_id: str):
        call = load(call_id)
        if call.audio is None:
            raise HTTPException(404, "this call has no audio")
        path = Path(call.audio.path).resolve()
        if path.suffix.lower() not in AUDIO_TYPES or not any(path.is_relative_to(r) for r in roots):
            raise HTTPException(403, "audio file outside the audio roots (see callqa review --audio-root)")
        if not path.is_file():
            raise HTTPException(404, "audio file missing")
        return FileResponse(path, media_type=AUDIO_TYPES[path.suffix.lower()])

    @app.post("/calls/{call_id}/verdicts")
    def post_verdict(call_id: str, body: VerdictIn):
        call = load(call_id)
        known = {f.key: f for f in flags_of(call, store.verdicts(call_id))}
        turn_ids = {t.id for t in call.turns}
        if body.verdict == "add":
            if body.label not in ADDABLE_LABELS or body.turn_id not in turn_ids \
                    or body.flag_key != added_key(body.label, body.turn_id):
                raise HTTPException(400, "an added flag needs a known label and turn")
        elif body.flag_key not in known:
            raise HTTPException(400, f"no flag {body.flag_key!r} on this call")
        try:
            store.record_verdict(call_id, body.flag_key, body.label, body.verdict, turn_id=body.turn_id,
                                 reason=body.reason or None, note=body.note.strip(),
                                 reviewer=body.reviewer.strip())
        except StoreError as err:
            raise HTTPException(400, str(err)) from None
        human = human_scores(call, store.verdicts(call_id), scorecard)
        return dict(flag_key=body.flag_key, verdict=body.verdict, reason=body.reason, note=body.note,
                    human=dict(total=human.total, grade=human.grade,
                               dimensions={k: d.score for k, d in human.dimensions.items()}))

    @app.get("/rules", response_class=HTMLResponse)
    def rules_page(request: Request):
        return templates.TemplateResponse(request, "review_rules.html",
                                          dict(rows=rule_precision(store, scorecard)))

    @app.get("/calibration", response_class=HTMLResponse)
    def calibration_page(request: Request):
        agreements, worst = calibration(store, list(scorecard.dimensions))
        return templates.TemplateResponse(request, "review_calibration.html",
                                          dict(agreements=agreements, worst=worst, dimensions=scorecard.dimensions))

    @app.post("/export/corrections")
    def post_export():
        # Always masked from the web; `callqa corrections --no-mask` is the deliberate way round.
        out = export_dir / f"corrections-{dt.datetime.now():%Y%m%d-%H%M%S}"
        rows = export_corrections(store, out, load_privacy(config))
        return dict(path=str(out), rows=rows)

    return app
