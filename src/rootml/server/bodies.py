"""Reading a request's bytes within a limit that holds while they stream, and JSON replies.

Nothing here reads more than the limit: a ``Content-Length`` over it is refused at once, and
a body without one (chunked) is counted as it arrives and refused as soon as it passes the
limit, so an oversized upload is never read whole, into memory or onto disk.

A body sent with ``Content-Encoding: gzip`` or ``deflate`` (tritonclient's
``request_compression_algorithm``) is inflated, within the same limit for what it inflates to
(a small compressed body cannot become a large one in memory).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..exceptions import RequestError
from . import protocols

LARGE_BODY = 1 << 20


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return protocols.dumps(content)


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def content_length(request: Request) -> int | None:
    for key, value in request.scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                raise RequestError(400, "Content-Length is not a number") from None
    return None


def too_large(limit: int) -> RequestError:
    return RequestError(413, f"the request body is larger than this server's {limit}-byte limit")


def limited(receive: Callable[[], Awaitable[dict]], limit: int) -> Callable[[], Awaitable[dict]]:
    seen = 0

    async def limited_receive() -> dict:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise too_large(limit)
        return message

    return limited_receive


async def chunks(request: Request, limit: int) -> AsyncIterator[bytes]:
    length = content_length(request)
    if length is not None and length > limit:
        raise too_large(limit)
    receive = request.receive
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise too_large(limit)
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def read_body(request: Request, limit: int) -> bytes | bytearray:
    """The whole body, or a 413 as soon as more than ``limit`` bytes have arrived. A large
    body with a Content-Length is copied once, into a buffer of that size."""
    length = content_length(request)
    if length is None or length < LARGE_BODY:
        parts = [chunk async for chunk in chunks(request, limit)]
        return parts[0] if len(parts) == 1 else b"".join(parts)
    buffer = bytearray(length)
    view = memoryview(buffer)
    end = 0
    async for chunk in chunks(request, limit):
        start, end = end, end + len(chunk)
        if end > length:
            raise RequestError(400, "the body is longer than its Content-Length")
        view[start:end] = chunk
    if end != length:
        raise RequestError(400, "the body is shorter than its Content-Length")
    return buffer


#: Content-Encoding -> zlib's wbits (gzip header; zlib header, or raw deflate as some send it)
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def inflated(body: bytes | bytearray, encoding: str, limit: int) -> bytes:
    """``body`` decoded from ``encoding``; 413 past ``limit`` bytes, 400 if it is not valid."""
    wbits = ENCODINGS[encoding]
    for attempt in (wbits, -zlib.MAX_WBITS) if encoding == "deflate" else (wbits,):
        inflater = zlib.decompressobj(attempt)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error as err:
            last = err
            continue
        if len(out) > limit or inflater.unconsumed_tail:
            raise too_large(limit)
        if not inflater.eof:
            raise RequestError(400, f"the {encoding} body is truncated")
        return out
    raise RequestError(400, f"the body is not valid {encoding} data: {last}")


def encoding_of(request: Request) -> str | None:
    """The body's Content-Encoding (None for identity); 415 for one this server cannot read."""
    value = request.headers.get("content-encoding", "").strip().lower()
    if value in ("", "identity"):
        return None
    if value not in ENCODINGS:
        raise RequestError(
            415, f"Content-Encoding {value[:32]!r} is not supported: send gzip, deflate or none"
        )
    return value


async def read_decoded(request: Request, limit: int) -> bytes | bytearray:
    """The body as :func:`read_body` reads it, inflated if it came compressed."""
    encoding = encoding_of(request)
    body = await read_body(request, limit)
    return body if encoding is None else inflated(body, encoding, limit)


async def read_json(request: Request, limit: int) -> Any:
    return protocols.loads(await read_decoded(request, limit))
