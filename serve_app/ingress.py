"""Ingress: the HTTP API. Thin: limits, admission, parameters, routing to the graph, errors."""

import asyncio
import base64
import copy
import logging
import time
from typing import Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from cartoon import images
from cartoon.pipeline import Options, Result
from cartoon.styles import StyleRegistry
from deployments import metrics
from deployments.settings import AppArgs
from serve_app import access, web
from serve_app.admission import Admission, Overloaded
from serve_app.errors import (
    CODE_BY_HTTP_STATUS,
    ERROR_SCHEMA,
    ApiError,
    deadline_error,
    overloaded_error,
    replica_lost,
    to_api_error,
)

_logger = logging.getLogger("ray.serve")

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
# Seconds before the first resend of a request whose replica died; doubled each time.
RETRY_BACKOFF_S = 0.5


def _errors(*statuses: int) -> dict:
    """OpenAPI ``responses`` for error statuses, each with the one error body."""
    descriptions = {
        400: "not an image, a broken image or a malformed multipart body (codes not_an_image, "
        "corrupt_image, bad_multipart)",
        401: "an API key is configured and the request lacks it (code unauthorized)",
        413: "over a limit: body_too_large, too_many_pixels, too_many_items, batch_too_large",
        415: "an image format or a media type we do not accept (unsupported_format, unsupported_media_type)",
        422: "a bad parameter or an image over a processing limit (invalid_parameter, unknown_style, "
        "too_many_pieces)",
        500: "our bug (internal)",
        503: "at capacity or not ready; see Retry-After (overloaded, replica_lost, not_ready)",
        504: "not done within the request timeout (timeout)",
    }
    return {
        status: {"description": descriptions[status], "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for status in statuses
    }


FACE_SCHEMA = {
    "type": "object",
    "required": ["box", "score", "points"],
    "properties": {
        "box": {"type": "array", "items": {"type": "number"}},
        "score": {"type": "number"},
        "points": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
    },
}
RESULT_SCHEMA = {
    "type": "object",
    "required": ["media_type", "image", "width", "height", "faces", "timings", "batch_sizes"],
    "properties": {
        "media_type": {"type": "string", "enum": list(IMAGE_TYPES)},
        "image": {"type": "string", "description": "the output image, base64"},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
        "faces": {"type": "array", "items": FACE_SCHEMA},
        "timings": {"type": "object", "additionalProperties": {"type": "number"}},
        "batch_sizes": {"type": "array", "items": {"type": "integer"}},
    },
}
BATCH_ITEM_SCHEMA = {
    "type": "object",
    "required": ["index", "filename", "status"],
    "properties": {
        "index": {"type": "integer"},
        "filename": {"type": "string"},
        "status": {"type": "integer", "description": "200, or the status the image alone would get"},
        **RESULT_SCHEMA["properties"],
        **ERROR_SCHEMA["properties"],
    },
}
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


def _batch_body(max_items: int) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["images"],
                        "properties": {
                            "images": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": max_items,
                                "items": {"type": "string", "format": "binary"},
                            }
                        },
                    }
                }
            },
        }
    }


api = FastAPI(
    title="Portrait cartoonization",
    description=(
        "Upload a photo of a person, get it back as a cartoon at the original size "
        "(shrunk to the service's output pixel limit if larger). "
        'Every error is JSON: {"error": {"code": ..., "message": ...}}. When the operator sets '
        "an API key, every route but /healthz and /readyz needs `Authorization: Bearer <key>`."
    ),
    version="1.0",
    docs_url=None,  # serve_app.web serves /docs from local files, not from a CDN
    redoc_url=None,
)
api.add_middleware(access.AccessMiddleware)
# Filled by each Ingress replica from its config (style names, batch size). Serve serves
# a copy of `api` made at import, so the schema lives here, not on the object.
_documented_schema: dict = {}


def _openapi() -> dict:
    return _documented_schema or get_openapi(
        title=api.title, version=api.version, description=api.description, routes=api.routes
    )


api.openapi = _openapi
api.include_router(web.router)


@api.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    metrics.record_error(exc.status, exc.code)
    return exc.response()


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'][1:])}: {error['msg']}" for error in exc.errors()
    )
    return await _api_error(request, ApiError(422, "invalid_parameter", problems))


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = CODE_BY_HTTP_STATUS.get(exc.status_code, "http_error")
    return await _api_error(request, ApiError(exc.status_code, code, str(exc.detail), dict(exc.headers or {})))


class OptionsQuery:
    """The query parameters shared by both cartoonize endpoints."""

    def __init__(
        self,
        style: str | None = Query(None, description="style name from GET /v1/styles; default style if omitted"),
        strength: float = Query(1.0, ge=0.0, le=1.0, description="1 = full cartoon, 0 = the original"),
        format: Literal["png", "jpeg", "webp"] = Query("png", description="output format"),
        quality: int = Query(90, ge=1, le=100, description="JPEG/WebP quality"),
        max_side: int | None = Query(None, ge=16, le=16384, description="cap on the output's long side"),
    ):
        self.options = Options(style, strength, format, quality, max_side)


def _timing_header(timings: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={milliseconds:.1f}" for name, milliseconds in timings.items())


def _result_json(result: Result) -> dict:
    return {
        "media_type": result.media_type,
        "image": base64.b64encode(result.data).decode("ascii"),
        "width": result.width,
        "height": result.height,
        "faces": [face.public() for face in result.faces],
        "timings": {name: round(ms, 2) for name, ms in result.timings.items()},
        "batch_sizes": result.batch_sizes,
    }


def _media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters (RFC 9110: case-insensitive)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def document(registry: StyleRegistry, args: AppArgs) -> None:
    """Puts into the OpenAPI schema what only the running config knows: style names, batch size.

    A module function on purpose: Serve ships the Ingress class by value, with copies of
    the module globals its methods name, while this function and ``_openapi`` are
    imported by reference and so share this module's ``_documented_schema``.
    """
    _documented_schema.clear()
    _documented_schema.update(_schema_for(registry, args))


def _schema_for(registry: StyleRegistry, args: AppArgs) -> dict:
    schema = copy.deepcopy(_openapi())
    for path in ("/v1/cartoonize", "/v1/cartoonize/batch"):
        operation = schema["paths"][path]["post"]
        for parameter in operation["parameters"]:
            if parameter["name"] == "style":
                parameter["schema"] = {"type": "string", "enum": registry.names(), "title": "Style"}
    schema["paths"]["/v1/cartoonize/batch"]["post"].update(_batch_body(args.max_batch_items))
    return schema


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200)
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        aligner: DeploymentHandle,
        cartoonizer: DeploymentHandle,
        postprocessor: DeploymentHandle,
        args: AppArgs,
    ):
        self.aligner, self.cartoonizer, self.postprocessor = aligner, cartoonizer, postprocessor
        self.args = args
        self.registry = StyleRegistry.from_directory(args.styles_dir)
        self.admission = Admission(args.request_timeout_s, args.min_in_flight, args.max_in_flight)
        self.app_name = serve.get_replica_context().app_name
        access.install(args)
        document(self.registry, args)
        self._inference_mode: dict | None = None
        self._inference_question: asyncio.Future | None = None

    async def _inference(self) -> dict | None:
        """How the UNet runs (precision, memory format, threads, and why), or None while unknown.

        Chosen once at a Cartoonizer's start-up, so it is asked for once and kept. Readiness
        waits at most a second for the answer and never cancels the question (it may be
        loading the default style), so it neither queues behind image work nor flaps.
        """
        if self._inference_mode is None:
            if self._inference_question is None or (
                self._inference_question.done() and self._inference_question.exception() is not None
            ):
                self._inference_question = asyncio.ensure_future(
                    self.cartoonizer.options(multiplexed_model_id=self.registry.default).styles_loaded.remote()
                )
            try:
                self._inference_mode = await asyncio.wait_for(asyncio.shield(self._inference_question), 1.0)
            except Exception:  # unknown for now; readiness itself comes from the controller
                pass
        return self._inference_mode

    async def _read_body(self, request: Request) -> bytes:
        limit = self.args.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(413, "body_too_large", f"the body is {declared} bytes, over the limit of {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"the body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_many_items(self) -> ApiError:
        """The one answer to a batch over ``max_batch_items``, however many it holds."""
        return ApiError(413, "too_many_items", f"at most {self.args.max_batch_items} images per batch")

    async def _files(self, request: Request, body: bytes) -> list[tuple[str, str, bytes]]:
        """(field, filename, bytes) of every file in a multipart body, in order."""

        async def stream():
            yield body

        parser = MultiPartParser(request.headers, stream(), max_files=self.args.max_batch_items, max_fields=16)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            # Starlette stops at the first file over max_files; that is our item limit.
            if exc.message.startswith("Too many files"):
                raise self._too_many_items() from exc
            raise ApiError(400, "bad_multipart", f"the multipart body is malformed: {exc.message}") from exc
        try:
            return [
                (field, value.filename or "", await value.read())
                for field, value in form.multi_items()
                if isinstance(value, UploadFile)
            ]
        finally:
            await form.close()

    def _check_style(self, options: Options) -> str:
        try:
            return self.registry.get(options.style).name
        except KeyError as exc:
            raise ApiError(422, "unknown_style", exc.args[0]) from exc

    async def _probe(self, data: bytes) -> images.ImageInfo:
        """Reads the header in a thread (parsing is CPU work); refuses bad input before any replica."""
        try:
            return await asyncio.to_thread(images.probe, data, self.args.max_pixels)
        except Exception as exc:
            error = to_api_error(exc, self.args.retry_after_s, self.args.request_timeout_s)
            if error is None:
                raise
            raise error from exc

    def _overloaded(self, exc: Overloaded) -> ApiError:
        return overloaded_error(self.args.retry_after_s, f"the service is at capacity ({exc})")

    async def _through_graph(self, data: bytes, options: Options, style: str, deadline: float) -> Result:
        """One pass through the graph; on failure or cancellation, its pieces are cancelled too."""
        responses: list[DeploymentResponse] = []
        try:
            prepared = self.aligner.prepare.remote(data, options, deadline)
            responses.append(prepared)
            # The full-size original and alpha go to the Postprocessor only: the
            # Cartoonizer never reads them, and they are the job's largest arrays.
            pieces, full_size = (await prepared).split_full_size()
            stylized = self.cartoonizer.options(multiplexed_model_id=style).stylize.remote(pieces)
            composed = self.postprocessor.compose.remote(stylized, full_size)
            responses += [stylized, composed]
            return await composed
        except BaseException as exc:
            # A client gone (Serve cancels this task), a timeout, or a stage's error:
            # nothing downstream should keep working on this image.
            for response in responses:
                response.cancel()
            if isinstance(exc, asyncio.CancelledError):
                _logger.info("request cancelled (client gone or deadline passed); cancelled %d downstream calls",
                             len(responses))
            raise

    async def _cartoonize(self, data: bytes, options: Options, style: str, deadline: float) -> Result:
        """Runs one image through the graph before ``deadline`` (``time.time()``).

        A request whose replica died is sent again (it is idempotent), up to
        ``replica_retries`` times while the deadline allows; Serve routes it to a live
        replica, or holds it until the replacement is up.

        Raises:
            ApiError: for every failure, chosen by ``to_api_error``; a 500 only for our bugs.
        """
        start = time.perf_counter()
        attempt = 0
        while True:
            remaining = deadline - time.time()
            try:
                if remaining <= 0:
                    raise asyncio.TimeoutError
                result = await asyncio.wait_for(self._through_graph(data, options, style, deadline), remaining)
                break
            except asyncio.TimeoutError as exc:
                raise deadline_error(self.args.request_timeout_s) from exc
            except Exception as exc:
                backoff = RETRY_BACKOFF_S * 2**attempt
                if replica_lost(exc) and attempt < self.args.replica_retries and time.time() + backoff < deadline:
                    attempt += 1
                    _logger.warning("a replica died under the request; sending it again (attempt %d)", attempt + 1)
                    await asyncio.sleep(backoff)
                    continue
                error = to_api_error(exc, self.args.retry_after_s, self.args.request_timeout_s)
                if error is None:
                    _logger.exception("cartoonization failed")
                    raise ApiError(500, "internal", "the image could not be processed; this is our bug") from exc
                raise error from exc
        result.timings["total"] = (time.perf_counter() - start) * 1000.0
        return result

    @api.post(
        "/v1/cartoonize",
        openapi_extra=IMAGE_BODY,
        responses={
            200: {
                "description": "the cartoon: the image itself, or JSON with `Accept: application/json`",
                "content": {
                    **{media_type: {"schema": {"type": "string", "format": "binary"}} for media_type in IMAGE_TYPES},
                    "application/json": {"schema": RESULT_SCHEMA},
                },
            },
            **_errors(400, 401, 413, 415, 422, 500, 503, 504),
        },
    )
    async def cartoonize(self, request: Request, query: OptionsQuery = Depends()) -> Response:
        """Cartoonizes one photo: the body is the image, or a multipart field `image`.

        Returns the image, with headers `X-Faces` and `Server-Timing`; with
        `Accept: application/json`, JSON with the image in base64 and metadata.
        """
        deadline = time.time() + self.args.request_timeout_s
        options = query.options
        style = self._check_style(options)
        body = await self._read_body(request)
        if _media_type(request) == "multipart/form-data":
            files = [data for field, _, data in await self._files(request, body) if field == "image"]
            if len(files) != 1:
                raise ApiError(422, "invalid_parameter", "a multipart body needs exactly one file field 'image'")
            body = files[0]
        await self._probe(body)
        try:
            with self.admission.admit():
                result = await self._cartoonize(body, options, style, deadline)
        except Overloaded as exc:
            raise self._overloaded(exc) from exc
        headers = {
            "X-Faces": str(len(result.faces)),
            "X-Batch-Sizes": ",".join(map(str, result.batch_sizes)),
            "Server-Timing": _timing_header(result.timings),
        }
        if "application/json" in request.headers.get("accept", "").lower():
            return JSONResponse(_result_json(result), headers=headers)
        return Response(result.data, media_type=result.media_type, headers=headers)

    @api.post(
        "/v1/cartoonize/batch",
        openapi_extra=_batch_body(32),
        responses={
            200: {
                "description": "one result per file, in order, each its own success or error",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["results"],
                            "properties": {"results": {"type": "array", "items": BATCH_ITEM_SCHEMA}},
                        }
                    }
                },
            },
            **_errors(400, 401, 413, 415, 422, 500, 503),
        },
    )
    async def cartoonize_batch(self, request: Request, query: OptionsQuery = Depends()) -> JSONResponse:
        """Cartoonizes every file of a multipart body; results in order, each its own success or error.

        The header-declared pixels of all files together are limited (`max_batch_pixels`),
        which bounds the work and the size of the JSON answer.
        """
        deadline = time.time() + self.args.request_timeout_s
        options = query.options
        style = self._check_style(options)
        if _media_type(request) != "multipart/form-data":
            raise ApiError(415, "unsupported_media_type", "send the images as multipart/form-data")
        files = await self._files(request, await self._read_body(request))
        if not files:
            raise ApiError(422, "invalid_parameter", "the multipart body holds no file")

        async def probed(data: bytes) -> images.ImageInfo | ApiError:
            try:
                return await self._probe(data)
            except ApiError as error:
                return error

        infos = await asyncio.gather(*(probed(data) for _, _, data in files))
        pixels = sum(info.width * info.height for info in infos if isinstance(info, images.ImageInfo))
        if pixels > self.args.max_batch_pixels:
            raise ApiError(
                413, "batch_too_large",
                f"the images hold {pixels} pixels together, over the limit of {self.args.max_batch_pixels}",
            )

        async def item(index: int, filename: str, data: bytes, info: images.ImageInfo | ApiError) -> dict:
            try:
                if isinstance(info, ApiError):
                    raise info
                result = await self._cartoonize(data, options, style, deadline)
            except ApiError as error:
                metrics.record_error(error.status, error.code)
                return {"index": index, "filename": filename, "status": error.status, **error.body()}
            return {"index": index, "filename": filename, "status": 200, **_result_json(result)}

        try:
            with self.admission.admit(len(files)):
                results = await asyncio.gather(
                    *(item(i, name, data, info) for i, ((_, name, data), info) in enumerate(zip(files, infos)))
                )
        except Overloaded as exc:
            raise self._overloaded(exc) from exc
        return JSONResponse({"results": results})

    @api.get("/v1/styles", responses=_errors(401))
    async def styles(self) -> dict:
        """The styles this service offers."""
        return {
            "default": self.registry.default,
            "styles": [self.registry.styles[name].public() for name in self.registry.names()],
        }

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """The ingress answers."""
        return {"status": "ok"}

    @api.get("/readyz", responses=_errors(503))
    async def readyz(self) -> JSONResponse:
        """Ready when every deployment of this app has a running, healthy replica.

        Read from the Serve controller, which health-checks every replica itself
        (each deployment's light ``check_health``, called beside the request queue);
        so this neither queues behind image work nor sees only one replica.
        """
        status = await asyncio.to_thread(serve.status)
        app = status.applications.get(self.app_name)
        deployments = {
            name: {
                "status": str(getattr(deployment.status, "value", deployment.status)),
                "replicas": {str(getattr(state, "value", state)): count
                             for state, count in deployment.replica_states.items()},
            }
            for name, deployment in (app.deployments.items() if app else ())
        }
        missing = sorted(name for name, deployment in deployments.items()
                         if not deployment["replicas"].get("RUNNING"))
        if app is None or missing:
            error = ApiError(503, "not_ready", f"not ready: no running replica of {', '.join(missing) or 'the app'}",
                             {"Retry-After": "5"})
            metrics.record_error(error.status, error.code)
            return JSONResponse({**error.body(), "deployments": deployments}, 503, error.headers)
        return JSONResponse({"status": "ready", "deployments": deployments, "inference": await self._inference()})
