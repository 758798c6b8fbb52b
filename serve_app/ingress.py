"""Ingress: the HTTP API. Thin: limits, admission, parameters, routing to the graph, errors.

Its helpers each do one job: ``openapi`` (the schema), ``multipart`` (bodies),
``admission`` (what fits in the timeout), ``resend`` (what to send again after a lost
replica), ``readiness`` (the controller's view, cached) and ``access`` (key, CORS, log).
"""

import asyncio
import base64
import logging
import time
from dataclasses import replace
from typing import Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cartoon.image import codec
from cartoon.image.pipeline import Options, Result
from cartoon.image.styles import StyleRegistry
from deployments import metrics
from deployments.resend import digest, with_resends
from deployments.shared_book import Evidence
from deployments.settings import AppArgs
from deployments.trials import cartoonize_alone, run_alone
from serve_app import access, jobs, live, multipart, openapi, web
from serve_app.admission import Admission, Overloaded
from serve_app.errors import CODE_BY_HTTP_STATUS, ApiError, deadline_error, overloaded_error, poison_error, to_api_error
from serve_app.readiness import Readiness, Snapshot

_logger = logging.getLogger("ray.serve")

api = FastAPI(
    title="Portrait cartoonization",
    description=(
        "Upload a photo of a person, get it back as a cartoon at the original size "
        "(shrunk to the service's output pixel limit if larger). "
        'Every error is JSON: {"error": {"code": ..., "message": ...}}. When the operator sets '
        "an API key, every route but /healthz and /readyz needs `Authorization: Bearer <key>` "
        "(the Authorize button below)."
    ),
    version="1.0",
    docs_url=None,  # serve_app.web serves /docs from local files, not from a CDN
    redoc_url=None,
)
api.add_middleware(access.AccessMiddleware)
openapi.serve_schema(api)
api.include_router(web.router)
api.include_router(jobs.router)
api.include_router(live.router)


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
        format: Literal[codec.OUTPUT_FORMATS] = Query("png", description="output format"),
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
        "notices": list(result.notices),
    }


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200)
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        aligner: DeploymentHandle,
        cartoonizer: DeploymentHandle,
        postprocessor: DeploymentHandle,
        video_jobs: DeploymentHandle,
        args: AppArgs,
        registry: StyleRegistry,
    ):
        self.aligner, self.cartoonizer, self.postprocessor = aligner, cartoonizer, postprocessor
        self.args = args
        self.registry = registry
        self.jobs = jobs.JobService(args, registry, video_jobs)
        self.admission = Admission(args.request_timeout_s, args.min_in_flight, args.max_in_flight)
        app_name = serve.get_replica_context().app_name
        self.evidence = Evidence(app_name, args.poison_ttl_s, args.request_timeout_s)
        self.readiness = Readiness(app_name, cartoonizer, registry.default)
        access.install(args)
        openapi.document(api, registry, args, access.resolve_api_key(args) is not None)

    async def _admitting(self, images_count: int = 1) -> None:
        """Refuses (503) before the body is read when ``images_count`` more do not fit.

        Until the Ingress has measured its own rate, the first request waits for the
        readiness snapshot, which brings the Cartoonizers' timed forward, so even a
        first burst is admitted by what the machine can do; later ones refresh it in the
        background. Once the rate is measured the snapshot is not needed: its refresh
        (``serve.status``) cost a tenth of a core under a flood of refusals.
        """
        if self.admission.measured_rate is None:
            self._estimate(await self.readiness.snapshot())
        try:
            self.admission.check(images_count)
        except Overloaded as exc:
            raise self._overloaded(exc) from exc

    def _estimate(self, snapshot: Snapshot) -> None:
        """The cold-start rate: every running Cartoonizer's images per second, shared by the Ingresses."""
        seconds = (snapshot.inference or {}).get("seconds_per_image")
        cartoonizers = snapshot.running("Cartoonizer")
        if seconds and cartoonizers:
            self.admission.estimate(cartoonizers / seconds / max(1, snapshot.running("Ingress")))

    def _check_style(self, options: Options) -> str:
        try:
            return self.registry.get(options.style).name
        except KeyError as exc:
            raise ApiError(422, "unknown_style", exc.args[0]) from exc

    async def _probe(self, data: bytes) -> codec.ImageInfo:
        """Reads the header in a thread (parsing is CPU work); refuses bad input before any replica."""
        try:
            return await asyncio.to_thread(codec.probe, data, self.args.max_pixels)
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

        A request whose replica was lost is sent again; one that a replica crashed on is
        tried alone, and refused only if that kills its process too (``deployments.resend``).

        Raises:
            ApiError: for every failure, chosen by ``to_api_error``; a 500 only for our bugs.
        """
        start = time.perf_counter()

        def remaining_s() -> float:
            remaining = deadline - time.time()
            if remaining <= 0:
                raise asyncio.TimeoutError
            return remaining

        async def attempt() -> Result:
            return await asyncio.wait_for(self._through_graph(data, options, style, deadline), remaining_s())

        async def alone() -> Result:
            return await run_alone(cartoonize_alone, self.args, self.registry, data, replace(options, style=style),
                                   timeout_s=remaining_s())

        try:
            key = await asyncio.to_thread(digest, data)
            result = await with_resends(attempt, alone, key, self.evidence, self.args.replica_retries, deadline,
                                        poisoned=poison_error)
        except ApiError:
            raise
        except asyncio.TimeoutError as exc:
            raise deadline_error(self.args.request_timeout_s) from exc
        except Exception as exc:
            error = to_api_error(exc, self.args.retry_after_s, self.args.request_timeout_s)
            if error is None:
                _logger.exception("cartoonization failed")
                raise ApiError(500, "internal", "the image could not be processed; this is our bug") from exc
            raise error from exc
        result.timings["total"] = (time.perf_counter() - start) * 1000.0
        return result

    @api.post("/v1/cartoonize", openapi_extra=openapi.IMAGE_BODY, responses=openapi.CARTOONIZE_RESPONSES)
    async def cartoonize(self, request: Request, query: OptionsQuery = Depends()) -> Response:
        """Cartoonizes one photo: the body is the image, or a multipart field `image`.

        Returns the image, with headers `X-Faces` and `Server-Timing`; with
        `Accept: application/json`, JSON with the image in base64 and metadata.
        """
        deadline = time.time() + self.args.request_timeout_s
        options = query.options
        style = self._check_style(options)
        multipart.check_declared_length(request, self.args.max_body_bytes)
        await self._admitting()
        body = await multipart.read_body(request, self.args.max_body_bytes)
        if multipart.media_type(request) == "multipart/form-data":
            files = [data for field, _, data in await multipart.files(request, body, self.args.max_batch_items)
                     if field == "image"]
            if len(files) != 1:
                raise ApiError(422, "invalid_parameter", "a multipart body needs exactly one file field 'image'")
            body = files[0]
        await self._probe(body)
        try:
            with self.admission.admit() as ticket:
                result = await self._cartoonize(body, options, style, deadline)
                ticket.done()
        except Overloaded as exc:
            raise self._overloaded(exc) from exc
        headers = {
            "X-Faces": str(len(result.faces)),
            "X-Batch-Sizes": ",".join(map(str, result.batch_sizes)),
            "Server-Timing": _timing_header(result.timings),
        }
        if result.notices:
            headers["X-Input-Notices"] = ",".join(result.notices)
        if "application/json" in request.headers.get("accept", "").lower():
            return JSONResponse(_result_json(result), headers=headers)
        return Response(result.data, media_type=result.media_type, headers=headers)

    @api.post("/v1/cartoonize/batch", openapi_extra=openapi.batch_body(32), responses=openapi.BATCH_RESPONSES)
    async def cartoonize_batch(self, request: Request, query: OptionsQuery = Depends()) -> JSONResponse:
        """Cartoonizes every file of a multipart body; results in order, each its own success or error.

        The header-declared pixels of all files together are limited (`max_batch_pixels`),
        which bounds the work and the size of the JSON answer.
        """
        deadline = time.time() + self.args.request_timeout_s
        options = query.options
        style = self._check_style(options)
        if multipart.media_type(request) != "multipart/form-data":
            raise ApiError(415, "unsupported_media_type", "send the images as multipart/form-data")
        multipart.check_declared_length(request, self.args.max_body_bytes)
        await self._admitting()
        body = await multipart.read_body(request, self.args.max_body_bytes)
        files = await multipart.files(request, body, self.args.max_batch_items)
        if not files:
            raise ApiError(422, "invalid_parameter", "the multipart body holds no file")

        async def probed(data: bytes) -> codec.ImageInfo | ApiError:
            try:
                return await self._probe(data)
            except ApiError as error:
                return error
            except Exception:  # a parser's own bug on one file is that file's 400, not the batch's 500
                _logger.exception("probing a batch item failed")
                return ApiError(400, "corrupt_image", "the image could not be read")

        infos = await asyncio.gather(*(probed(data) for _, _, data in files))
        pixels = sum(info.width * info.height for info in infos if isinstance(info, codec.ImageInfo))
        if pixels > self.args.max_batch_pixels:
            raise ApiError(
                413, "batch_too_large",
                f"the images hold {pixels} pixels together, over the limit of {self.args.max_batch_pixels}",
            )

        async def item(index: int, filename: str, data: bytes, info: codec.ImageInfo | ApiError, ticket) -> dict:
            try:
                if isinstance(info, ApiError):
                    raise info
                result = await self._cartoonize(data, options, style, deadline)
            except ApiError as error:
                metrics.record_error(error.status, error.code)
                return {"index": index, "filename": filename, "status": error.status, **error.body()}
            ticket.done()
            return {"index": index, "filename": filename, "status": 200, **_result_json(result)}

        # Only the items that can run hold slots: a broken file costs no capacity.
        runnable = sum(isinstance(info, codec.ImageInfo) for info in infos)
        try:
            with self.admission.admit(runnable) as ticket:
                results = await asyncio.gather(
                    *(item(i, name, data, info, ticket) for i, ((_, name, data), info) in enumerate(zip(files, infos)))
                )
        except Overloaded as exc:
            raise self._overloaded(exc) from exc
        return JSONResponse({"results": results})

    @api.get("/v1/styles", responses=openapi.errors(401))
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

    @api.get("/readyz", responses=openapi.errors(503))
    async def readyz(self) -> JSONResponse:
        """Ready when every deployment has a running replica and the UNet ran at start-up.

        Read from the Serve controller, which health-checks every replica itself, at
        most about once a second (cached), so this neither queues behind image work
        nor sees only one replica.
        """
        snapshot = await self.readiness.snapshot()
        if not snapshot.ready:
            error = ApiError(503, "not_ready", snapshot.why_not_ready(), {"Retry-After": "5"})
            metrics.record_error(error.status, error.code)
            return JSONResponse({**error.body(), "deployments": snapshot.deployments}, 503, error.headers)
        return JSONResponse({"status": "ready", "deployments": snapshot.deployments, "inference": snapshot.inference})
