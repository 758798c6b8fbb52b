"""Live: camera clients replaying a clip at 30 frames/s over ``GET /v1/live``.

    python -m benchmarks.live                                  # serve_config.yaml, started here
    python -m benchmarks.live --url http://127.0.0.1:8000      # a running service
    python -m benchmarks.live --sessions 1,2,4,8 --sizes 640x360 --seconds 30
    python -m benchmarks.live --preset gpu                     # configs/gpu.yaml: 1..16 sessions at 640x360

Each client sends every frame of the clip on the camera's clock (30 frames/s, never
waiting for an answer, as a camera does) and reads every cartoon that comes back. Per
row: frames/s delivered to each session (mean over sessions), latency from the frame's
send to its cartoon's arrival (p50, p95 over all sessions' frames: glass to glass less
the camera's capture and the screen's display), and the share of sent frames that never
came back (the service keeps the newest frame of each session and drops the rest).
The clip is Grace Hopper's portrait under a slow handheld camera move (``tests.clips``),
or ``--clip``; frames are JPEG, quality 80, as the page sends them.
"""

import argparse
import asyncio
import json
import time

import numpy as np
import websockets

from benchmarks import common
from benchmarks.common import fmt, markdown_table
from cartoon.image.compose import resize_to
from cartoon.video import media
from tests import clips, photos

CAMERA_FPS = 30.0
WARM_UP_S = 3.0  # the first seconds: styles load, tracks start, rates settle
# The per-frame timings the service reports (cartoon.video.live.LiveSession.cartoonize).
FRAME_STAGES = ("wait", "decode", "track", "align", "background", "unet", "stylize", "finish", "compose", "encode",
                "total")


def clip_frames(clip: str | None, width: int, height: int, count: int) -> list[bytes]:
    """``count`` JPEG frames of the clip at width x height (a camera's)."""
    if clip:
        decoded = media.frames(clip, media.probe(clip).rotation)
        rgbs = [resize_to(frame.rgb, height, width) for frame, _ in zip(decoded, range(count))]
        decoded.close()
    else:
        rgbs = clips.camera_move(photos.grace_hopper(), count, width, height)
    # Forwards then backwards, so the loop has no jump (a jump would be a shot cut).
    rgbs = rgbs + rgbs[-2:0:-1]
    return [photos.encode(rgb, "JPEG", quality=80) for rgb in rgbs]


async def camera_client(url: str, frames: list[bytes], size: int, seconds: float, api_key: str | None) -> dict:
    """One session for ``seconds`` after the warm-up; what it measured after the warm-up."""
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    stage_ms: dict[str, list[float]] = {}
    received = 0
    measuring_from = None
    sent_measured = 0
    async with websockets.connect(url, max_size=None) as socket:
        hello = {"size": size, "format": "jpeg", "quality": 80}
        if api_key:
            hello["api_key"] = api_key
        await socket.send(json.dumps(hello))
        while json.loads(await socket.recv()).get("type") != "ready":
            pass
        start = time.perf_counter()
        end = start + WARM_UP_S + seconds
        measuring_from = start + WARM_UP_S

        async def send() -> None:
            nonlocal sent_measured
            seq = 0
            while (now := time.perf_counter()) < end:
                sent_at[seq] = now
                await socket.send(frames[seq % len(frames)])
                if now >= measuring_from:
                    sent_measured += 1
                seq += 1
                await asyncio.sleep(max(0.0, start + seq / CAMERA_FPS - time.perf_counter()))

        async def receive() -> None:
            nonlocal received
            announced = None
            async for message in socket:
                if isinstance(message, str):
                    parsed = json.loads(message)
                    if parsed.get("type") == "frame":
                        announced = parsed
                    continue
                now = time.perf_counter()
                if announced is not None and sent_at[announced["seq"]] >= measuring_from:
                    received += 1
                    latencies.append((now - sent_at[announced["seq"]]) * 1000.0)
                    for stage, ms in announced.get("timings", {}).items():
                        stage_ms.setdefault(stage, []).append(ms)
                announced = None

        receiver = asyncio.ensure_future(receive())
        await send()
        await asyncio.sleep(1.0)  # the last answers
        receiver.cancel()
    return {"received": received, "sent": sent_measured, "latencies": latencies, "seconds": seconds,
            "stage_ms": stage_ms}


async def run_row(url: str, frames: list[bytes], size: int, sessions: int, seconds: float,
                  api_key: str | None) -> dict:
    results = await asyncio.gather(*(camera_client(url, frames, size, seconds, api_key) for _ in range(sessions)))
    latencies = [latency for result in results for latency in result["latencies"]]
    sent = sum(result["sent"] for result in results)
    received = sum(result["received"] for result in results)
    stage_ms: dict[str, list[float]] = {}
    for result in results:
        for stage, values in result["stage_ms"].items():
            stage_ms.setdefault(stage, []).extend(values)
    return {
        "stages": {stage: float(np.mean(values)) for stage, values in stage_ms.items()},
        "fps": float(np.mean([result["received"] / result["seconds"] for result in results])),
        "p50": common.percentile(latencies, 50),
        "p95": common.percentile(latencies, 95),
        "dropped": 1.0 - received / sent if sent else float("nan"),
    }


def measure(url: str, args) -> tuple[list[list], list[list]]:
    """The table's rows, and per row the service's own mean milliseconds per stage of a frame."""
    live_url = url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + "/v1/live"
    rows, stage_rows = [], []
    for size in args.sizes:
        width, height = size
        frames = clip_frames(args.clip, width, height, args.clip_frames)
        for sessions in args.sessions:
            row = asyncio.run(run_row(live_url, frames, max(width, height), sessions, args.seconds, args.api_key))
            rows.append([f"{width}x{height}", sessions, fmt(row["fps"]), fmt(row["p50"], 0), fmt(row["p95"], 0),
                         f"{row['dropped'] * 100:.0f} %"])
            stage_rows.append([f"{width}x{height}", sessions,
                               *(fmt(row["stages"].get(stage, float("nan")), 0) for stage in FRAME_STAGES)])
            print(rows[-1], flush=True)
    return rows, stage_rows


def parse_sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(side) for side in part.split("x")) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service; default: serve_config.yaml started here")
    parser.add_argument("--api-key", help="the service's API key, when it has one")
    parser.add_argument("--clip", help="a video file to replay; default: a camera move over a portrait")
    parser.add_argument("--clip-frames", type=int, default=60, help="frames of the clip to loop over")
    parser.add_argument("--sessions", type=common.parse_ints)
    parser.add_argument("--sizes", type=parse_sizes)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per row, after a warm-up")
    parser.add_argument("--preset", choices=["cpu", "gpu"], default="cpu",
                        help="gpu: configs/gpu.yaml, 1, 4, 8 and 16 sessions at 640x360 (unless given)")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                        help="override serve_config.yaml (as benchmarks.common.apply_overrides)")
    args = parser.parse_args()
    gpu = args.preset == "gpu"
    args.sessions = args.sessions or ([1, 4, 8, 16] if gpu else [1, 2, 4])
    args.sizes = args.sizes or ([(640, 360)] if gpu else [(480, 270), (640, 360)])
    print(common.machine_description(), flush=True)
    if args.url:
        rows, stage_rows = measure(args.url, args)
    else:
        config = common.load_serve_config(common.ROOT / "configs" / "gpu.yaml" if gpu else common.SERVE_CONFIG)
        config = common.apply_overrides(config, args.set)
        with common.served_graph(config, ray_gpus=1 if gpu else None) as url:
            rows, stage_rows = measure(url, args)
    print(markdown_table(["frame", "sessions", "frames/s each", "latency p50 ms", "latency p95 ms", "dropped"], rows))
    print()
    print("Mean ms per delivered frame, as the service timed it (stylize holds align, background and unet):")
    print(markdown_table(["frame", "sessions", *FRAME_STAGES], stage_rows))


if __name__ == "__main__":
    main()
