"""Request bodies: read within the body limit, and the files of a multipart body."""

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from serve_app.errors import ApiError

# Non-file fields a multipart body may carry besides its files (a client's extras).
MAX_FIELDS = 16


def media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters (RFC 9110: case-insensitive)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def check_declared_length(request: Request, limit: int) -> None:
    """Refuses a body whose ``Content-Length`` is over ``limit`` before a byte of it is read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"the body is {declared} bytes, over the limit of {limit}")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it grows past ``limit``, whatever it declared."""
    check_declared_length(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def too_many_items(max_items: int) -> ApiError:
    """The one answer to a batch over ``max_items``, however many it holds."""
    return ApiError(413, "too_many_items", f"at most {max_items} images per batch")


async def files(request: Request, body: bytes, max_items: int) -> list[tuple[str, str, bytes]]:
    """(field, filename, bytes) of every file in a multipart body, in order.

    Raises:
        ApiError: 413 ``too_many_items`` past ``max_items`` files, 400 ``bad_multipart``
            for a body the parser refuses, whatever the parser raised.
    """

    async def stream():
        yield body

    parser = MultiPartParser(request.headers, stream(), max_files=max_items, max_fields=MAX_FIELDS)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        # Starlette stops at the first file over max_files; that is our item limit.
        if exc.message.startswith("Too many files"):
            raise too_many_items(max_items) from exc
        raise ApiError(400, "bad_multipart", f"the multipart body is malformed: {exc.message}") from exc
    except Exception as exc:  # the parser's own bugs on hostile bodies are still the body's fault
        raise ApiError(400, "bad_multipart", f"the multipart body could not be parsed: {type(exc).__name__}") from exc
    try:
        return [
            (field, value.filename or "", await value.read())
            for field, value in form.multi_items()
            if isinstance(value, UploadFile)
        ]
    finally:
        await form.close()
