"""``study serve``: the reader web app (FastAPI + the study's SQLite store).

Routes (all responses carry no-store caching and a self-only Content-Security-Policy)::

    GET  /                       a short page: "open the link in your invitation"
    GET  /r/{token}              the reader page (403 for an unknown token)
    GET  /static/{name}          the page's own JS/CSS, from an in-memory whitelist
    GET  /api/state              Bearer token -> progress and the image to show now
    GET  /api/image/{pid}        Bearer token -> raw pixels of one of *your* showings:
                                 little-endian uint16, row-major, (height, width) from /api/state
    POST /api/answers            Bearer token + {presentation_id, level, realism?, elapsed_ms?}

Security model: the invitation token (256 random bits) is the reader's only credential. The
server keeps only SHA-256 digests and compares a presented digest with every reader's
digest in constant time (``hmac.compare_digest``, no early exit). Images are looked up by
an opaque showing id that must belong to the caller and not lie ahead of their position;
the file path is built from the database's own item id, never from the request. Nothing
else in the study folder is reachable. Answers are validated by pydantic and committed
(``synchronous=FULL``) before the response that lets the page show the next image.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import sqlite3
import threading
from collections import OrderedDict
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Path as PathParam, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from mammosynth.errors import DataError
from mammosynth.study import db
from mammosynth.study.stats import LEVELS, REALISM_LABELS

MAX_BODY_BYTES = 4096
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
TOKEN_PATTERN = r"^[A-Za-z0-9_-]{16,128}$"
ID_PATTERN = r"^[0-9a-f]{32}$"


class AnswerIn(BaseModel):
    """One answer. ``level`` 1..6 (1 = extremely confident real ... 6 = extremely confident
    synthetic); ``realism`` 1..5 (seed 002) required iff the study asks for it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    presentation_id: str = Field(pattern=ID_PATTERN)
    level: int = Field(ge=1, le=6)
    realism: Optional[int] = Field(default=None, ge=1, le=5)
    elapsed_ms: Optional[int] = Field(default=None, ge=0, le=86_400_000)


def load_static() -> dict[str, tuple[bytes, str]]:
    """The reader page's files, read once: name -> (bytes, content type). Nothing else is served."""
    out: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("mammosynth.study").joinpath("static").iterdir():
        suffix = Path(entry.name).suffix
        if entry.is_file() and suffix in STATIC_TYPES:
            out[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return out


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _PixelCache:
    """A small LRU of decoded images (item_id -> uint16 LE bytes), so a reload costs no decode."""

    def __init__(self, capacity: int = 64) -> None:
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def get(self, key: str, make) -> bytes:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = make()
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)
        return value


def create_app(study_dir: str | Path) -> FastAPI:
    """Build the app for one study folder (opens and checks ``study.sqlite`` now)."""
    study = Path(study_dir).resolve()
    con, meta = db.open_study(study)
    try:
        readers = [(int(r["reader_id"]), r["name"], r["token_sha256"]) for r in con.execute("SELECT * FROM readers")]
    finally:
        con.close()
    images_dir = study / db.IMAGES_DIR
    db_path = study / db.DB_NAME
    realism_required = bool(meta.get("realism_score"))
    static = load_static()
    pixels = _PixelCache()

    app = FastAPI(title="mammosynth reader study", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.method == "POST" and length is None:  # no unbounded (chunked) bodies
            response: Response = JSONResponse({"detail": "Content-Length required"}, status_code=411)
        elif length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            response = JSONResponse({"detail": "request body too large"}, status_code=413)
        else:
            response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers[k] = v
        return response

    def find_reader(token: str) -> Optional[tuple[int, str]]:
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        found: Optional[tuple[int, str]] = None
        for rid, name, stored in readers:  # no early exit: time does not depend on which reader matched
            if hmac.compare_digest(digest, stored):
                found = (rid, name)
        return found

    def current_reader(request: Request) -> tuple[int, str]:
        auth = request.headers.get("authorization")
        if not auth:
            raise HTTPException(401, "missing token: open the link from your invitation", headers={"WWW-Authenticate": "Bearer"})
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token or len(token) > 128:
            raise HTTPException(401, "malformed Authorization header", headers={"WWW-Authenticate": "Bearer"})
        reader = find_reader(token.strip())
        if reader is None:
            raise HTTPException(403, "unknown token")
        return reader

    def connection() -> Iterator[sqlite3.Connection]:
        c = db.connect(db_path)
        try:
            yield c
        finally:
            c.close()

    def state_of(c: sqlite3.Connection, reader: tuple[int, str]) -> dict[str, Any]:
        answered, total, nxt = db.reader_progress(c, reader[0])
        current = None
        if nxt is not None:
            item = c.execute("SELECT height, width FROM items WHERE item_id = ?", (nxt["item_id"],)).fetchone()
            current = {"presentation_id": nxt["presentation_id"], "height": item["height"], "width": item["width"]}
        return {
            "reader": reader[1],
            "answered": answered,
            "total": total,
            "done": nxt is None,
            "current": current,
            "realism_score": realism_required,
            "levels": [{"level": k, "label": lab} for k, (lab, _) in LEVELS.items()],
            "realism_labels": [{"score": k, "label": REALISM_LABELS[k]} for k in sorted(REALISM_LABELS, reverse=True)],
        }

    @app.get("/", response_class=HTMLResponse)
    def landing() -> HTMLResponse:
        return HTMLResponse(static["landing.html"][0])

    @app.get("/r/{token}", response_class=HTMLResponse)
    def reader_page(token: str = PathParam(max_length=128)) -> HTMLResponse:
        if find_reader(token) is None:
            return HTMLResponse(static["denied.html"][0], status_code=403)
        return HTMLResponse(static["reader.html"][0])

    @app.get("/static/{name}")
    def static_file(name: str) -> Response:
        hit = static.get(name)  # a dict lookup: no request text ever reaches the filesystem
        if hit is None:
            raise HTTPException(404, "not found")
        return Response(hit[0], media_type=hit[1])

    @app.get("/api/state")
    def get_state(reader=Depends(current_reader), c: sqlite3.Connection = Depends(connection)) -> dict[str, Any]:
        return state_of(c, reader)

    @app.get("/api/image/{presentation_id}")
    def get_image(
        presentation_id: str = PathParam(pattern=ID_PATTERN),
        reader=Depends(current_reader),
        c: sqlite3.Connection = Depends(connection),
    ) -> Response:
        row = c.execute(
            "SELECT item_id, position FROM presentations WHERE presentation_id = ? AND reader_id = ?",
            (presentation_id, reader[0]),
        ).fetchone()
        _, _, nxt = db.reader_progress(c, reader[0])
        # Another reader's showing, an unknown id, or one ahead of the reader's position: all 404.
        if row is None or (nxt is not None and row["position"] > nxt["position"]):
            raise HTTPException(404, "no such image in your study")
        item_id = row["item_id"]
        if not db.OPAQUE_ID.match(item_id):  # defence in depth: the DB only ever holds hex ids
            raise HTTPException(500, "corrupt item id")

        def decode() -> bytes:
            from PIL import Image

            with Image.open(images_dir / f"{item_id}.png") as im:
                arr = np.asarray(im)
            if arr.dtype != np.uint16:
                arr = arr.astype(np.uint16) * 257  # 8-bit -> full 16-bit range
            return np.ascontiguousarray(arr, dtype="<u2").tobytes()

        return Response(pixels.get(item_id, decode), media_type="application/octet-stream")

    @app.post("/api/answers")
    def post_answer(
        answer: AnswerIn, reader=Depends(current_reader), c: sqlite3.Connection = Depends(connection)
    ) -> dict[str, Any]:
        if realism_required and answer.realism is None:
            raise HTTPException(422, "this study asks for a realism score (1-5) with every answer")
        if not realism_required and answer.realism is not None:
            raise HTTPException(422, "this study does not ask for a realism score")
        try:
            with db.transaction(c):
                row = c.execute(
                    "SELECT position FROM presentations WHERE presentation_id = ? AND reader_id = ?",
                    (answer.presentation_id, reader[0]),
                ).fetchone()
                if row is None:
                    raise HTTPException(404, "no such image in your study")
                if c.execute("SELECT 1 FROM answers WHERE presentation_id = ?", (answer.presentation_id,)).fetchone():
                    raise HTTPException(409, "this image was already answered; answers cannot be changed")
                _, _, nxt = db.reader_progress(c, reader[0])
                if nxt is None or nxt["presentation_id"] != answer.presentation_id:
                    raise HTTPException(409, "answer the image currently shown first")
                c.execute(
                    "INSERT INTO answers(presentation_id, reader_id, position, level, p_real, realism, elapsed_ms, answered_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (answer.presentation_id, reader[0], row["position"], answer.level, LEVELS[answer.level][1],
                     answer.realism, answer.elapsed_ms, datetime.now(timezone.utc).isoformat(timespec="milliseconds")),
                )
        except sqlite3.IntegrityError as err:  # a concurrent duplicate post lost the race
            raise HTTPException(409, "this image was already answered") from err
        return state_of(c, reader)

    return app


def serve(study_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info") -> None:
    """Run the app with uvicorn until interrupted. Access logs are off: the page URL holds the token."""
    import uvicorn

    if not (Path(study_dir) / db.DB_NAME).is_file():
        raise DataError(f"{study_dir}: no {db.DB_NAME} here; create the study with `mammosynth study create`")
    app = create_app(study_dir)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, server_header=False)
