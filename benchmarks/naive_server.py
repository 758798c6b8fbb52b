"""What a user would write instead of the graph: uvicorn + FastAPI around the same Pipeline.

    python -m benchmarks.naive_server --port 8100                       # (c) model loaded once
    python -m benchmarks.naive_server --port 8101 --load-per-request    # (d) loaded per request

(c) One process, the model and face detector loaded once at start, no batching. Each
    request runs the whole ``Pipeline`` in FastAPI's thread pool (the documented way to
    call blocking code from an async endpoint), so requests overlap as the GIL, dlib's
    lock and torch's threads allow. ``--serial`` runs one request at a time instead.
(d) The pattern users suffer today: every request builds a new ``Pipeline`` (HOG detector,
    landmark model, UNet weights) and requests run one at a time.

Same API subset as the served graph: ``POST /v1/cartoonize`` with the raw image as body
and the ``style``, ``strength``, ``format``, ``quality``, ``max_side`` query parameters;
``X-Faces``, ``X-Batch-Sizes`` and ``Server-Timing`` headers; ``GET /readyz``.
"""

import argparse
import sys
import threading
import time
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cartoon.errors import CartoonError
from cartoon.image.pipeline import Options, Pipeline, PipelineSettings, Result
from cartoon.image.styles import DEFAULT_STYLES_DIR, StyleRegistry


def create_app(
    styles_dir: str | Path,
    settings: PipelineSettings = PipelineSettings(),
    load_per_request: bool = False,
    serial: bool = False,
) -> FastAPI:
    """The one-process service.

    Args:
        styles_dir: directory holding registry.json and weights.
        settings: the algorithm's knobs (use the served app's for a fair comparison).
        load_per_request: build a new Pipeline for every request (and run one at a time).
        serial: run one request at a time even with the model loaded once.
    """
    api = FastAPI(title="naive cartoonizer")
    pipeline = None
    if not load_per_request:
        pipeline = Pipeline(StyleRegistry.from_directory(styles_dir), settings)
        pipeline.stylizer(None)  # load the default style's weights now, not on a request
    one_at_a_time = threading.Lock() if (serial or load_per_request) else None

    def run(data: bytes, options: Options) -> Result:
        if one_at_a_time is None:
            return pipeline(data, options)
        with one_at_a_time:
            if load_per_request:
                return Pipeline(StyleRegistry.from_directory(styles_dir), settings)(data, options)
            return pipeline(data, options)

    @api.post("/v1/cartoonize")
    async def cartoonize(
        request: Request,
        style: str | None = None,
        strength: float = 1.0,
        format: str = "png",
        quality: int = 90,
        max_side: int | None = None,
    ) -> Response:
        data = await request.body()
        start = time.perf_counter()
        try:
            result = await run_in_threadpool(run, data, Options(style, strength, format, quality, max_side))
        except (CartoonError, KeyError, ValueError) as exc:
            return JSONResponse({"error": {"code": "bad_request", "message": str(exc)}}, status_code=400)
        timings = {**result.timings, "total": (time.perf_counter() - start) * 1000.0}
        headers = {
            "X-Faces": str(len(result.faces)),
            "X-Batch-Sizes": ",".join(map(str, result.batch_sizes)),
            "Server-Timing": ", ".join(f"{name};dur={ms:.1f}" for name, ms in timings.items()),
        }
        return Response(result.data, media_type=result.media_type, headers=headers)

    @api.get("/readyz")
    async def readyz() -> dict:
        return {"status": "ready"}

    return api


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.naive_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--styles-dir", default=str(DEFAULT_STYLES_DIR), help="registry.json and weights")
    parser.add_argument("--load-per-request", action="store_true", help="(d): new Pipeline per request, serial")
    parser.add_argument("--serial", action="store_true", help="one request at a time with the model loaded once")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default (all cores)")
    parser.add_argument("--process-side", type=int, default=PipelineSettings.process_side)
    parser.add_argument("--tile", type=int, default=PipelineSettings.tile)
    parser.add_argument("--halo", type=int, default=PipelineSettings.halo)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = PipelineSettings(process_side=args.process_side, tile=args.tile, halo=args.halo)
    app = create_app(args.styles_dir, settings, args.load_per_request, args.serial)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
