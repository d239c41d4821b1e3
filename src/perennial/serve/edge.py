"""The server's HTTP edge, shared by both modes: request bodies read within a byte limit (per
endpoint, worked out from what a valid request can hold) and parsed straight into bounded pydantic
models, the admin bearer token as one FastAPI dependency, every refusal and every unexpected error
as a counted JSON answer, and each endpoint's latency.

Imported only when an app is built (it imports FastAPI), so ``import perennial.serve`` stays cheap.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware

from perennial.serve.app import TOKEN_ENV, ServeError, ServeSettings
from perennial.serve.metrics import Metrics

if TYPE_CHECKING:
    from perennial.data.pipeline import InputPipeline

log = logging.getLogger("perennial.serve")

# Bodies up to this size are parsed on the event loop, where the parse (microseconds) costs less
# than a hand-off to a worker thread; larger ones in a worker thread, so that a client sending
# megabyte bodies does not hold up every other client's request while its body is parsed.
INLINE_BODY_BYTES = 64 * 1024
MAX_UNIT_CHARS = 512  # the router hashes it and the log keeps it in every row
INT64 = (-(2**63), 2**63 - 1)
# What a valid body may spend, in bytes, besides its numbers (serve.body_number_bytes each): a row's
# brackets, comma, newlines and indentation; and the rest (keys, a unit of 512 characters written as
# \uXXXX escapes of surrogate pairs at 12 bytes each, request_id, k, the whitespace between them).
ROW_BYTES = 64
REST_BYTES = 16 * 1024
# A raw named row ({"temp": 12.3, "carrier": "UA"}) spends, besides each column's name as JSON and its
# value: the colon, comma, newline and indentation of each key; and a text value never seen in
# training (it goes to "(other)") may be this long before the row's budget is spent.
KEY_BYTES = 16
TEXT_BYTES = 64
# Keys a named row may have past its columns (more is refused while parsing) and a key's length: an
# extra column or two is named in the 422; a row of 100,000 keys is not worth reading.
EXTRA_KEYS = 8
MAX_COLUMN_CHARS = 1024


class Strict(BaseModel):
    """A request body: exact JSON types, no unknown fields, finite numbers only."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


Unit = Annotated[StrictStr, Field(min_length=1, max_length=MAX_UNIT_CHARS)] | StrictInt


# ---- bodies -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BodyLimit:
    """The most bytes an endpoint's body may have, and how that figure was worked out (for the 413)."""

    bytes: int
    rule: str


@dataclass(frozen=True)
class BodyLimits:
    """Each endpoint's body limit: the bytes a valid request can hold, at most ``serve.max_body_bytes``.

    A valid body holds at most so many numbers (features, labels, clicks), each allowed
    ``number_bytes``: the longest float64 ``json.dumps`` writes is 24 characters
    (``-2.2250738585072014e-308``), 26 with a ``", "`` separator, 32 on a line of its own in a row
    pretty-printed with ``indent=2`` and 38 with ``indent=4``. So a body over its limit cannot be
    valid, and is refused on its declared length before it is read (or as soon as the bytes read pass
    the limit), never parsed: parsing a megabyte holds the GIL for everyone else's requests.
    """

    ceiling: int  # serve.max_body_bytes
    max_rows: int
    max_k: int
    number_bytes: int  # serve.body_number_bytes

    @classmethod
    def of(cls, settings: ServeSettings) -> BodyLimits:
        limits = cls(settings.max_body_bytes, settings.max_rows, settings.max_k, settings.body_number_bytes)
        for name, value in zip(
            ("max_body_bytes", "max_rows", "max_k", "body_number_bytes"), vars(limits).values(), strict=True
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"serve.{name} must be an integer >= 1, got {value!r}")
        return limits

    def named_row_bytes(self, pipeline: InputPipeline) -> int:
        """The bytes a raw named row of ``pipeline`` may take: each column's name as JSON and
        ``KEY_BYTES``, plus its value: ``number_bytes`` for a number, for a category the longest
        known one as JSON (at least ``TEXT_BYTES``); 0 when the version takes no named rows."""
        columns = pipeline.row_columns
        if columns is None:
            return 0
        values = dict.fromkeys(columns, self.number_bytes)
        for column in pipeline.encoding.columns if pipeline.encoding is not None else ():
            categories = getattr(column, "categories", None)
            if categories is not None:
                longest = max((len(json.dumps(c)) for c in categories), default=0)
                values[column.name] = max(self.number_bytes, TEXT_BYTES, longest)
        return sum(len(json.dumps(name)) + KEY_BYTES + values[name] for name in columns) + ROW_BYTES

    def predict(self, n_features: int, named_row_bytes: int = 0) -> BodyLimit:
        """/predict: ``max_rows`` rows of the served model's ``n_features`` (or one row), or as many
        raw named rows of ``named_row_bytes`` (see :meth:`named_row_bytes`), whichever is larger."""
        numeric = n_features * self.number_bytes + ROW_BYTES
        if named_row_bytes > numeric:
            return self._bounded(
                "/predict",
                self.max_rows * named_row_bytes + REST_BYTES,
                f"serve.max_rows={self.max_rows} named rows x {named_row_bytes:,} bytes (each column's "
                f"name, {KEY_BYTES} bytes a key and its value: {self.number_bytes} bytes a number "
                f"(serve.body_number_bytes), the longest known category or {TEXT_BYTES} bytes a "
                f"text) + {REST_BYTES:,} bytes for the rest",
            )
        return self._bounded(
            "/predict",
            self.max_rows * numeric + REST_BYTES,
            f"serve.max_rows={self.max_rows} rows x ({n_features} features of the served model x "
            f"{self.number_bytes} bytes a number (serve.body_number_bytes) + {ROW_BYTES} bytes a row) "
            f"+ {REST_BYTES:,} bytes for the rest",
        )

    def rank(self, n_features: int, named_row_bytes: int = 0) -> BodyLimit:
        """/rank: one row of the served model's ``n_features``, or one named row."""
        numeric = n_features * self.number_bytes + ROW_BYTES
        if named_row_bytes > numeric:
            return self._bounded(
                "/rank",
                named_row_bytes + REST_BYTES,
                f"one named row of {named_row_bytes:,} bytes (see /predict) "
                f"+ {REST_BYTES:,} bytes for the rest",
            )
        return self._bounded(
            "/rank",
            numeric + REST_BYTES,
            f"{n_features} features of the served model x {self.number_bytes} bytes a number "
            f"(serve.body_number_bytes) + {ROW_BYTES} bytes for the row + {REST_BYTES:,} bytes for the rest",
        )

    def feedback(self) -> BodyLimit:
        """/feedback: ``max_rows`` labels or ``max_k`` clicks, whichever is more."""
        numbers = max(self.max_rows, self.max_k)
        return self._bounded(
            "/feedback",
            numbers * self.number_bytes + ROW_BYTES + REST_BYTES,
            f"{numbers} labels or clicks (the larger of serve.max_rows={self.max_rows} and "
            f"serve.max_k={self.max_k}) x {self.number_bytes} bytes a number (serve.body_number_bytes) "
            f"+ {ROW_BYTES + REST_BYTES:,} bytes for the rest",
        )

    def _bounded(self, endpoint: str, derived: int, how: str) -> BodyLimit:
        if derived < self.ceiling:
            return BodyLimit(derived, f"{endpoint}'s limit: {how}")
        return BodyLimit(
            self.ceiling,
            f"serve.max_body_bytes, the ceiling: a valid {endpoint} body may take up to {derived:,} bytes "
            f"({how})",
        )


def _limit(limit: int | BodyLimit) -> BodyLimit:
    return limit if isinstance(limit, BodyLimit) else BodyLimit(limit, "serve.max_body_bytes")


async def read_body(request: Request, limit: int | BodyLimit) -> bytes:
    """The raw body, refused with 413 as soon as it is over ``limit`` bytes: on its declared
    Content-Length before a byte of it is read, or while it streams in (no Content-Length, chunked),
    reading no further than the first chunk past the limit."""
    limit = _limit(limit)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit.bytes:
        raise ServeError(
            413,
            f"request body of {int(declared):,} bytes is over the limit of {limit.bytes:,} bytes "
            f"({limit.rule})",
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit.bytes:
            raise ServeError(
                413,
                f"request body is over the limit of {limit.bytes:,} bytes (reading stopped at "
                f"{len(body):,}) ({limit.rule})",
            )
    return bytes(body)


async def parse_body(request: Request, schema: type[BaseModel], limit: int | BodyLimit) -> Any:
    """The request's JSON body (at most ``limit`` bytes) as ``schema``; a 4xx naming what is wrong.

    pydantic parses the bytes itself (no Python object tree first), which also refuses invalid text
    (lone surrogates, bytes that are not UTF-8), nesting past its recursion limit and numbers past
    its range, and stops a list at its ``max_length``.
    """
    body = await read_body(request, limit)
    if len(body) > INLINE_BODY_BYTES:
        return await run_in_threadpool(validate_json, schema, body)
    return validate_json(schema, body)


def validate_json(schema: type[BaseModel], body: bytes) -> Any:
    try:
        return schema.model_validate_json(body)
    except ValidationError as err:
        raise refusal(err) from None


def refusal(err: ValidationError) -> ServeError:
    """A 400 for JSON that does not parse; a 422 naming the field, the problem and the bad value."""
    errors = err.errors(include_url=False)  # never str(err): it would repr a 500,000-item input
    if errors and errors[0]["type"] == "json_invalid":
        problem = errors[0]["ctx"]["error"]
        if any(word in problem for word in ("surrogate", "unicode", "hex escape")):
            return ServeError(
                422,
                f"invalid text: {problem}: strings must be valid Unicode (no lone surrogates), UTF-8 encoded",
            )
        if "recursion limit" in problem:
            return ServeError(422, f"the body is nested too deeply: {problem}")
        if "number out of range" in problem:
            return ServeError(422, f"a number is too large: {problem}")
        return ServeError(400, f"malformed JSON: {problem}")
    parts = []
    for e in _one_branch(errors)[:3]:
        where = ".".join(str(p) for p in e["loc"]) or "body"
        if e["type"] == "model_type":
            parts.append(f"the body must be a JSON object, got {_json_type(e['input'])}")
            continue
        parts.append(f"{where}: {e['msg']}{_got(e.get('input'))}")
    return ServeError(422, "; ".join(parts))


def _one_branch(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Errors of a field that takes either numbers or a named row (``rows``, ``features``) as one
    list, each without pydantic's label of the branch (``rows.list[list[float]].1`` is ``rows.1``):
    a row that is the wrong kind of JSON for one branch is not reported when it has a real problem
    in the other, and a problem both branches found is reported once."""
    branched = [e for e in errors if any(_is_branch(p) for p in e["loc"])]
    if not branched:
        return errors
    mismatch = ("list_type", "dict_type")
    real = [e for e in branched if e["type"] not in mismatch]
    kept, seen = [], set()
    for e in [e for e in errors if e not in branched] + (real or branched):
        loc = tuple(p for p in e["loc"] if not _is_branch(p))
        if (loc, e["msg"]) not in seen:
            seen.add((loc, e["msg"]))
            kept.append({**e, "loc": loc})
    return kept


def _is_branch(part: object) -> bool:
    # The labels pydantic gives the branches of a union: a row of numbers or a named row, or lists of them.
    return isinstance(part, str) and part.startswith(("list[", "dict["))


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _got(value: Any) -> str:
    """``, got <value>`` for a scalar input (as JSON spells it), nothing for a list or an object."""
    if isinstance(value, float) and not math.isfinite(value):
        return ", got " + ("NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bool | int | float):
        return f", got {value}"
    if isinstance(value, str):
        return f", got {value[:40]!r}" + ("..." if len(value) > 40 else "")
    return ""


# ---- admin ------------------------------------------------------------------------------------------
def admin_guard(settings: ServeSettings) -> Callable[..., Any]:
    """A dependency refusing a request without the right bearer token (or when none is configured).

    FastAPI's ``HTTPBearer`` reads the header; it takes the scheme in any case (RFC 7235).
    ``auto_error=False`` so that the refusals below keep this server's ``{"error": ...}`` form.
    """
    bearer = HTTPBearer(auto_error=False)

    async def require_admin(credentials=Depends(bearer)) -> None:  # noqa: B008 (FastAPI's idiom)
        token = settings.admin_token()
        if token is None:
            raise ServeError(
                403, f"admin endpoints are disabled: start the server with serve.token or ${TOKEN_ENV}"
            )
        if credentials is None:
            raise ServeError(
                401,
                "admin endpoints need the header 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise ServeError(403, "wrong admin token")

    return require_admin


# ---- answers ----------------------------------------------------------------------------------------
def timed_routes(metrics: Metrics) -> type[APIRoute]:
    """A route class that observes every request's handler time in ``metrics.latency``, by path."""

    class TimedRoute(APIRoute):
        def get_route_handler(self) -> Callable:
            handler = super().get_route_handler()
            histogram = metrics.latency.labels(self.path)

            async def timed(request: Request) -> Any:
                start = time.perf_counter()
                try:
                    return await handler(request)
                finally:
                    histogram.observe(time.perf_counter() - start)

            return timed

    return TimedRoute


def install_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Every answer that is not a 200 is JSON ``{"error": ...}`` and counted in ``errors_total``."""

    @app.exception_handler(ServeError)
    async def refused(request: Request, err: ServeError) -> JSONResponse:
        metrics.error(err.status)
        return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:  # 404, 405 ...
        metrics.error(err.status_code)
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=err.headers)

    # Not ``app.exception_handler(Exception)``: Starlette hands that one to its outermost middleware,
    # which answers and then re-raises, so uvicorn logs the error a second time and closes the
    # client's kept-alive connection. An exception middleware of our own, inside that one, answers
    # and keeps the connection; the handlers above still come first, in the app's inner one.
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        metrics.error(500)
        log.error("%s %s failed", request.method, request.url.path, exc_info=err)
        return JSONResponse(
            {"error": f"internal error ({type(err).__name__}); the server's log has the details"},
            status_code=500,
        )

    app.add_middleware(ExceptionMiddleware, handlers={Exception: unexpected})
