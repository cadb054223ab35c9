"""The dashboard's FastAPI application: server-rendered pages, each with a JSON twin under /api/.

Everything goes through `Lake` (its log, catalog and archive), so the dashboard runs on whatever
backends the lake is configured with. Nothing here writes: every route is a read.

Errors: a frame that does not exist (or a URL that is not a frame id at all, such as a path
traversal attempt) is 404, bad filters are 400 with the message, an unreachable backend is 503.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..errors import (
    ArchiveError,
    BackendUnavailable,
    FrameError,
    InputError,
    UnknownFrame,
    VisionlakeError,
)
from ..frames import iso
from ..lake import Lake
from . import queries as Q
from .auth import COOKIE, TokenMiddleware, safe_next, session_value, token_matches
from .images import Images

HERE = Path(__file__).parent
REPORT_KINDS = ("counts", "hours", "top", "latest", "visitors", "tracks")
LIVE_POLL_S = 0.5
SQL_MAX_ROWS = 10_000
SQL_TIMEOUT_S = 10.0

NAV = [
    ("/", "Overview"),
    ("/frames", "Gallery"),
    ("/reports", "Reports"),
    ("/compare", "Compare"),
    ("/sql", "SQL"),
    ("/live", "Live"),
]


def jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(v)).decode()
    return v


def csv_bytes(columns: list[str], rows: list[tuple]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    for row in rows:
        w.writerow([jsonable(v) if v is not None else "" for v in row])
    return buf.getvalue().encode()


def qs(params: dict[str, Any] | None = None, **changes: Any) -> str:
    """A query string from `params` with `changes` applied (None or '' drops a key)."""
    merged = {**(params or {}), **changes}
    pairs: list[tuple[str, str]] = []
    for k, v in merged.items():
        if v is None or v == "":
            continue
        if isinstance(v, list | tuple):
            pairs += [(k, str(x)) for x in v]
        else:
            pairs.append((k, str(v)))
    return ("?" + urlencode(pairs)) if pairs else ""


class _Ttl:
    """A value recomputed at most every `seconds` (camera and model lists for the filter forms)."""

    def __init__(self, make: Callable[[], Any], seconds: float = 5.0) -> None:
        self.make, self.seconds = make, seconds
        self.value: Any = None
        self.at = -1e18
        self.lock = threading.Lock()

    def get(self) -> Any:
        with self.lock:
            if time.monotonic() - self.at > self.seconds:
                self.value = self.make()
                self.at = time.monotonic()
            return self.value


def create_app(lake: Lake, token: str | None = None) -> FastAPI:
    """The dashboard over `lake`; with `token`, every request needs it (see `auth`)."""
    app = FastAPI(title="visionlake dashboard", version=__version__, docs_url=None, redoc_url=None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(qs=qs, nav=NAV, version=__version__, token_set=bool(token))
    opened = threading.Lock()

    def catalog():  # noqa: ANN202 - the first use opens the backend; once, under a lock
        with opened:
            return lake.catalog

    def with_archive() -> Lake:
        with opened:
            lake.catalog  # noqa: B018 - open both under the lock
            lake.archive  # noqa: B018
        return lake

    images = Images(lake)
    cams = _Ttl(lambda: Q.cameras(catalog()))
    model_list = _Ttl(lambda: Q.models(catalog()))
    plot_lock = threading.Lock()

    def page(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(
            request, name, {"path": request.url.path, **ctx}, status_code=status_code
        )

    def login_page(request: Request, target: str = "/", status_code: int = 200, error: str = "") -> Response:
        return page(request, "login.html", status_code=status_code, target=target, error=error)

    def choices() -> dict[str, Any]:
        return {"cameras": cams.get(), "models": model_list.get()}

    # --- errors ----------------------------------------------------------------------------------

    def error_response(request: Request, status: int, message: str) -> Response:
        path = request.url.path
        if path.startswith("/api/") or path.endswith((".jpg", ".png", ".csv")):
            return JSONResponse({"error": message}, status_code=status)
        return page(request, "error.html", status_code=status, status=status, message=message)

    @app.exception_handler(VisionlakeError)
    async def _vl_error(request: Request, exc: VisionlakeError) -> Response:
        if isinstance(exc, UnknownFrame):
            status = 404
        elif isinstance(exc, InputError):
            status = 400
        elif isinstance(exc, BackendUnavailable | ArchiveError):
            status = 503
        elif isinstance(exc, FrameError):
            status = 500
        else:
            status = 500
        return error_response(request, status, str(exc))

    @app.exception_handler(sa.exc.OperationalError)
    async def _db_down(request: Request, exc: Exception) -> Response:
        return error_response(request, 503, f"the catalog cannot be reached: {getattr(exc, 'orig', exc)}")

    @app.exception_handler(RequestValidationError)
    async def _bad_params(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return error_response(request, 400, "bad request: " + "; ".join(parts))

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Exception) -> Response:
        return error_response(request, 404, getattr(exc, "detail", None) or "not found")

    @app.middleware("http")
    async def _headers(request: Request, call_next):  # noqa: ANN001, ANN202
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'",
        )
        return response

    if token:
        app.add_middleware(TokenMiddleware, token=token, login_page=login_page)

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # --- login -----------------------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> Response:
        return login_page(request, safe_next(next))

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        given = str(form.get("token") or "")
        target = safe_next(str(form.get("next") or "/"))
        if not token:
            return RedirectResponse(target, status_code=303)
        if not token_matches(token, given):
            return login_page(request, target, status_code=401, error="wrong token")
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(
            COOKIE,
            session_value(token),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return resp

    # --- metrics ---------------------------------------------------------------------------------

    registry: list[Any] = []  # made on the first scrape: prometheus_client is the metrics extra

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from .metrics import lake_registry

        if not registry:
            registry.append(lake_registry(lake))
        body = await run_in_threadpool(generate_latest, registry[0])
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    # --- overview --------------------------------------------------------------------------------

    @app.get("/api/overview")
    def api_overview() -> dict:
        return Q.overview(with_archive())

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> Response:
        return page(request, "overview.html", o=Q.overview(with_archive()))

    # --- gallery ---------------------------------------------------------------------------------

    def _gallery(request: Request) -> tuple[dict, Q.Filters]:
        p = request.query_params
        flt = Q.Filters.parse(p)
        limit = _int(p.get("limit"), 48, "limit", 1, Q.MAX_PAGE)
        return Q.gallery(catalog(), flt, p.get("before"), limit), flt

    @app.get("/api/frames")
    def api_frames(request: Request) -> dict:
        return _gallery(request)[0]

    @app.get("/frames", response_class=HTMLResponse)
    def frames(request: Request) -> Response:
        g, flt = _gallery(request)
        return page(request, "gallery.html", g=g, f=flt.as_params(), **choices())

    @app.get("/api/frames/{frame_id}")
    def api_frame(frame_id: str) -> dict:
        return Q.frame_detail(catalog(), frame_id)

    @app.get("/frames/{frame_id}", response_class=HTMLResponse)
    def frame_page(request: Request, frame_id: str) -> Response:
        d = Q.frame_detail(catalog(), frame_id)
        p = request.query_params
        sel = {"model": p.get("model") or None, "model_version": p.get("model_version") or None}
        return page(request, "frame.html", d=d, sel=sel)

    # --- images ----------------------------------------------------------------------------------

    def _jpeg_name(name: str) -> str:
        if not name.endswith(".jpg"):
            raise UnknownFrame("image URLs end in .jpg")
        return Q.check_frame_text(name[:-4])

    @app.get("/thumb/{name}")
    def thumb(name: str, w: int = 320) -> Response:
        data = images.thumbnail(_jpeg_name(name), w)
        # a frame id names one image for ever (the archive refuses other bytes under its key)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/track/{name}")
    def track_image(name: str, w: int = 160) -> Response:
        """The best look at a track: its highest-scoring box, cut out of its frame."""
        from ..analytics.tracks import track

        digits = name.removesuffix(".jpg")
        if not name.endswith(".jpg") or not digits.isdigit() or len(digits) > 19:
            raise UnknownFrame("track image URLs are /track/<track id>.jpg")
        row = track(catalog(), int(digits))
        if row is None:
            raise UnknownFrame(f"no track {digits} in the catalog")
        box = (row["best_x1"], row["best_y1"], row["best_x2"], row["best_y2"])
        data = images.crop(row["best_frame_id"], box, w)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})

    @app.get("/image/{name}")
    def image(
        name: str,
        boxes: int = 1,
        model: str | None = None,
        model_version: str | None = None,
        w: int | None = None,
    ) -> Response:
        data = images.annotated(_jpeg_name(name), bool(boxes), model or None, model_version or None, w)
        # boxes change when a replay adds a version: revalidate soon
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=10"})

    # --- reports ---------------------------------------------------------------------------------

    def _report(kind: str, request: Request):  # noqa: ANN202 - a Report
        from ..analytics import reports as R

        if kind not in REPORT_KINDS:
            raise UnknownFrame(f"no report {kind!r}: use {', '.join(REPORT_KINDS)}")
        p = request.query_params
        flt = Q.Filters.parse(p).report()
        cat = catalog()
        if kind == "counts":
            bucket = p.get("bucket") or "hour"
            by = [b for b in p.getlist("by") if b] or ["camera"]
            return R.counts(cat, flt, bucket, by)
        if kind == "hours":
            return R.hours(cat, flt)
        limit = _int(p.get("limit"), 10, "limit", 1, 1000)
        if kind in ("visitors", "tracks"):
            from ..analytics import tracks as T

            tf = T.TrackFilter(flt, _int(p.get("min_frames"), 2, "min_frames", 1, 1_000_000))
            if kind == "visitors":
                return T.visitors(cat, tf, p.get("bucket") or "hour")
            return T.tracks(cat, tf, order="dwell", limit=limit)
        return (R.top if kind == "top" else R.latest)(cat, flt, limit)

    @app.get("/api/reports/{kind}")
    def api_report(kind: str, request: Request) -> dict:
        rep = _report(kind, request)
        return {
            "kind": rep.kind,
            "title": rep.title,
            "columns": rep.columns,
            "rows": [[jsonable(v) for v in row] for row in rep.rows],
        }

    @app.get("/reports/{name}")
    def report_file(name: str, request: Request) -> Response:
        kind, _, ext = name.rpartition(".")
        if ext not in ("png", "csv"):
            raise UnknownFrame(f"no report file {name!r}: use KIND.png or KIND.csv")
        rep = _report(kind, request)
        if ext == "csv":
            return Response(
                csv_bytes(rep.columns, rep.rows),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{kind}.csv"'},
            )
        from ..analytics.plots import plot_report

        with tempfile.TemporaryDirectory(prefix="vl-plot-") as tmp, plot_lock:
            out = plot_report(rep, Path(tmp) / f"{kind}.png")
            data = out.read_bytes()
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=30"})

    @app.get("/reports", response_class=HTMLResponse)
    def reports_page(request: Request) -> Response:
        p = request.query_params
        flt = Q.Filters.parse(p)
        params = flt.as_params()
        bucket = p.get("bucket") or "hour"
        by = [b for b in p.getlist("by") if b] or ["camera"]
        limit = _int(p.get("limit"), 10, "limit", 1, 1000)
        tables = {k: _report(k, request) for k in REPORT_KINDS}
        return page(
            request,
            "reports.html",
            f=params,
            bucket=bucket,
            by=by,
            limit=limit,
            tables=tables,
            chart_params={**params, "bucket": bucket, "by": by, "limit": limit},
            **choices(),
        )

    # --- compare ---------------------------------------------------------------------------------

    def _compare(request: Request) -> tuple[Any, dict[str, Any]]:
        from ..analytics.compare import compare_versions

        p = request.query_params
        known = Q.models(catalog())
        model = p.get("model") or next((m for m, vs in known.items() if len(vs) > 1), None)
        if model is None:
            return None, {"model": None}
        versions = known.get(model, [])
        b = p.get("b") or (versions[0] if versions else None)
        a = p.get("a") or next((v for v in versions if v != b), None)
        if not a or not b:
            raise InputError(f"model {model!r} has fewer than two versions to compare")
        iou = _float(p.get("iou"), 0.5, "iou")
        worst = _int(p.get("worst"), 24, "worst", 0, 1000)
        flt = Q.Filters.parse(p).report()
        c = compare_versions(catalog(), model, a, b, flt, iou=iou, worst=worst)
        return c, {"model": model, "a": a, "b": b, "iou": iou, "worst": worst}

    @app.get("/api/compare")
    def api_compare(request: Request) -> dict:
        c, sel = _compare(request)
        if c is None:
            return {"error": "no model has two versions yet", **sel}
        doc = c.as_dict()
        for key in ("side_by_side", "worst"):
            doc[key] = [{k: jsonable(v) for k, v in row.items()} for row in doc[key]]
        return doc

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(request: Request) -> Response:
        c, sel = _compare(request)
        f = Q.Filters.parse(request.query_params).as_params()
        return page(request, "compare.html", c=c, sel=sel, f=f, **choices())

    # --- SQL -------------------------------------------------------------------------------------

    def _sql(request: Request, sql: str | None, max_rows: Any):  # noqa: ANN202 - a QueryResult
        if not sql or not sql.strip():
            raise InputError("no SQL given: pass the statement as q")
        if len(sql) > 100_000:
            raise InputError(f"SQL statement too long ({len(sql)} characters, at most 100000)")
        rows = _int(max_rows, 1000, "max_rows", 1, SQL_MAX_ROWS)
        return catalog().query(sql, max_rows=rows, timeout=SQL_TIMEOUT_S)

    def _sql_doc(res: Any) -> dict:
        return {
            "columns": res.columns,
            "rows": [[jsonable(v) for v in row] for row in res.rows],
            "truncated": res.truncated,
        }

    @app.get("/api/sql")
    def api_sql(request: Request, q: str | None = None, max_rows: str | None = None) -> dict:
        return _sql_doc(_sql(request, q, max_rows))

    @app.post("/api/sql")
    async def api_sql_post(request: Request) -> Response:  # a read like GET, for long statements
        try:
            body = await request.json()
        except ValueError:
            raise InputError('send a JSON object: {"q": "SELECT ...", "max_rows": 1000}') from None
        if not isinstance(body, dict):
            raise InputError('send a JSON object: {"q": "SELECT ...", "max_rows": 1000}')
        res = await run_in_threadpool(_sql, request, body.get("q"), body.get("max_rows"))
        return JSONResponse(_sql_doc(res))

    @app.get("/api/sql.csv")
    def api_sql_csv(request: Request, q: str | None = None, max_rows: str | None = None) -> Response:
        res = _sql(request, q, max_rows)
        return Response(
            csv_bytes(res.columns, res.rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="query.csv"'},
        )

    @app.get("/sql", response_class=HTMLResponse)
    def sql_page(request: Request, q: str | None = None, max_rows: str | None = None) -> Response:
        res, error, status = None, None, 200
        if q and q.strip():
            try:
                res = _sql(request, q, max_rows)
            except InputError as e:
                error, status = str(e), 400
        example = "SELECT camera, count(*) AS frames FROM frames GROUP BY camera"
        return page(
            request,
            "sql.html",
            status_code=status,
            q=q or "",
            max_rows=max_rows or "1000",
            res=res,
            error=error,
            example=example,
            params={"q": q, "max_rows": max_rows},
        )

    # --- live ------------------------------------------------------------------------------------

    def _live_sel(request: Request) -> dict[str, str | None]:
        p = request.query_params
        return {"model": p.get("model") or None, "model_version": p.get("model_version") or None}

    @app.get("/api/live")
    def api_live(request: Request) -> dict:
        sel = _live_sel(request)
        return {"frames": list(Q.newest_per_camera(catalog(), cams.get(), **sel).values()), **sel}

    @app.get("/live", response_class=HTMLResponse)
    def live_page(request: Request) -> Response:
        sel = _live_sel(request)
        now = Q.newest_per_camera(catalog(), cams.get(), **sel)
        return page(request, "live.html", frames=list(now.values()), sel=sel, **choices())

    @app.get("/api/live/stream")
    async def live_stream(request: Request) -> StreamingResponse:
        sel = _live_sel(request)
        live_cams = _Ttl(lambda: Q.cameras(catalog()), seconds=2.0)

        async def events():  # noqa: ANN202
            last: dict[str, str] = {}
            quiet = 0.0
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                try:
                    newest = await run_in_threadpool(
                        lambda: Q.newest_per_camera(catalog(), live_cams.get(), **sel)
                    )
                except (VisionlakeError, sa.exc.OperationalError) as e:
                    yield f"event: problem\ndata: {json.dumps({'error': str(e)})}\n\n"
                    await asyncio.sleep(2.0)
                    continue
                sent = False
                for cam, item in newest.items():
                    if last.get(cam) != item["frame_id"]:
                        last[cam] = item["frame_id"]
                        yield f"event: frame\ndata: {json.dumps(item)}\n\n"
                        sent = True
                quiet = 0.0 if sent else quiet + LIVE_POLL_S
                if quiet >= 15:
                    yield ": keep-alive\n\n"
                    quiet = 0.0
                await asyncio.sleep(LIVE_POLL_S)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


def _int(text: Any, default: int, name: str, lo: int, hi: int) -> int:
    if text is None or text == "":
        return default
    try:
        v = int(text)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number, got {str(text)[:50]!r}") from None
    if not lo <= v <= hi:
        raise InputError(f"{name} must be from {lo} to {hi}, got {v}")
    return v


def _float(text: Any, default: float, name: str) -> float:
    if text is None or text == "":
        return default
    try:
        return float(text)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {str(text)[:50]!r}") from None
