"""Ingress: the HTTP API. Thin: limits, parameters, routing to the graph, errors."""

import asyncio
import base64
import logging
import time
from typing import Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from cartoon import images
from cartoon.pipeline import Options, Result
from cartoon.styles import StyleRegistry
from deployments import metrics
from serve_app import web
from serve_app.errors import ApiError, to_api_error
from deployments.settings import AppArgs

_logger = logging.getLogger(__name__)

IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}
            },
        },
    }
}
BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"images": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            }
        },
    }
}

api = FastAPI(
    title="Portrait cartoonization",
    description=(
        "Upload a photo of a person, get it back as a cartoon at the original size. "
        'Errors are JSON: {"error": {"code": ..., "message": ...}}.'
    ),
    version="1.0",
    docs_url=None,  # serve_app.web serves /docs from local files, not from a CDN
    redoc_url=None,
)
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

    async def _files(self, request: Request, body: bytes) -> list[tuple[str, str, bytes]]:
        """(field, filename, bytes) of every file in a multipart body, in order."""

        async def stream():
            yield body

        parser = MultiPartParser(request.headers, stream(), max_files=self.args.max_batch_items + 1, max_fields=16)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise ApiError(400, "bad_multipart", f"the multipart body is malformed: {exc.message}") from exc
        files = []
        for field, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append((field, value.filename or "", await value.read()))
        return files

    def _check_style(self, options: Options) -> str:
        try:
            return self.registry.get(options.style).name
        except KeyError as exc:
            raise ApiError(422, "unknown_style", exc.args[0]) from exc

    async def _cartoonize(self, data: bytes, options: Options, style: str) -> Result:
        """Runs one image through the graph within the request timeout.

        Raises:
            ApiError: for every failure, chosen by ``to_api_error``; a 500 only for our bugs.
        """
        responses = []

        async def run() -> Result:
            images.probe(data, self.args.max_pixels)  # refuse early, before any replica decodes
            prepared = self.aligner.prepare.remote(data, options)
            responses.append(prepared)
            # The full-size original and alpha go to the Postprocessor only: the
            # Cartoonizer never reads them, and they are the job's largest arrays.
            pieces, full_size = (await prepared).split_full_size()
            stylized = self.cartoonizer.options(multiplexed_model_id=style).stylize.remote(pieces)
            composed = self.postprocessor.compose.remote(stylized, full_size)
            responses.extend((stylized, composed))
            return await composed

        start = time.perf_counter()
        try:
            result = await asyncio.wait_for(run(), self.args.request_timeout_s)
        except asyncio.TimeoutError as exc:
            for response in responses:
                response.cancel()
            raise ApiError(
                504, "timeout", f"the image was not done within {self.args.request_timeout_s} s"
            ) from exc
        except Exception as exc:
            error = to_api_error(exc, self.args.retry_after_s)
            if error is None:
                _logger.exception("cartoonization failed")
                raise ApiError(500, "internal", "the image could not be processed; this is our bug") from exc
            raise error from exc
        result.timings["total"] = (time.perf_counter() - start) * 1000.0
        return result

    @api.post("/v1/cartoonize", openapi_extra=IMAGE_BODY, responses={200: {"content": {"image/png": {}}}})
    async def cartoonize(self, request: Request, query: OptionsQuery = Depends()) -> Response:
        """Cartoonizes one photo: the body is the image, or a multipart field `image`.

        Returns the image, with headers `X-Faces` and `Server-Timing`; with
        `Accept: application/json`, JSON with the image in base64 and metadata.
        """
        options = query.options
        style = self._check_style(options)
        body = await self._read_body(request)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            files = [data for field, _, data in await self._files(request, body) if field == "image"]
            if len(files) != 1:
                raise ApiError(422, "invalid_parameter", "a multipart body needs exactly one file field 'image'")
            body = files[0]
        result = await self._cartoonize(body, options, style)
        headers = {
            "X-Faces": str(len(result.faces)),
            "X-Batch-Sizes": ",".join(map(str, result.batch_sizes)),
            "Server-Timing": _timing_header(result.timings),
        }
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(_result_json(result), headers=headers)
        return Response(result.data, media_type=result.media_type, headers=headers)

    @api.post("/v1/cartoonize/batch", openapi_extra=BATCH_BODY)
    async def cartoonize_batch(self, request: Request, query: OptionsQuery = Depends()) -> JSONResponse:
        """Cartoonizes every file of a multipart body; results in order, each its own success or error."""
        options = query.options
        style = self._check_style(options)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(415, "unsupported_media_type", "send the images as multipart/form-data")
        files = await self._files(request, await self._read_body(request))
        if not files:
            raise ApiError(422, "invalid_parameter", "the multipart body holds no file")
        if len(files) > self.args.max_batch_items:
            raise ApiError(413, "too_many_items", f"at most {self.args.max_batch_items} images per batch")

        async def item(index: int, filename: str, data: bytes) -> dict:
            try:
                result = await self._cartoonize(data, options, style)
            except ApiError as error:
                metrics.record_error(error.status, error.code)
                return {"index": index, "filename": filename, "status": error.status, **error.body()}
            return {"index": index, "filename": filename, "status": 200, **_result_json(result)}

        results = await asyncio.gather(*(item(i, name, data) for i, (_, name, data) in enumerate(files)))
        return JSONResponse({"results": results})

    @api.get("/v1/styles")
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

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Ready only when every deployment answers and the default style is loaded."""
        checks = {
            "FaceAligner": self.aligner.ping.remote(),
            "Cartoonizer": self.cartoonizer.options(multiplexed_model_id=self.registry.default).styles_loaded.remote(),
            "Postprocessor": self.postprocessor.ping.remote(),
        }
        failed, answers = [], {}
        for name, response in checks.items():
            try:
                answers[name] = await asyncio.wait_for(response, 10.0)
            except Exception:  # any failure means not ready, whatever its kind
                response.cancel()
                failed.append(name)
        if failed:
            return ApiError(503, "not_ready", f"not ready: {', '.join(failed)}", {"Retry-After": "5"}).response()
        # How the UNet runs (precision, memory format, threads, and why): chosen at start-up.
        return JSONResponse({"status": "ready", "inference": answers["Cartoonizer"]})
