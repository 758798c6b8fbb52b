"""What every benchmark shares: photos, statistics, tables, and servers to measure.

Nothing here asserts a time: the benchmarks print what they measured and plot it.
"""

import copy
import io
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import yaml
from PIL import Image

from serve_app.local import free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
SERVE_CONFIG = ROOT / "serve_config.yaml"
DEFAULT_STYLES_DIR = ROOT / "cartoon" / "styles"
CARTOONIZE_PATH = "/v1/cartoonize"


# --- photos -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Photo:
    """One upload: a real portrait resized so its long side is ``side``."""

    name: str
    side: int
    width: int
    height: int
    data: bytes
    content_type: str

    @property
    def label(self) -> str:
        return f"{self.name} {self.width}x{self.height}"


def _source_photos() -> dict[str, np.ndarray]:
    from tests import photos  # the real portraits the tests use

    return {"astronaut": photos.astronaut(), "grace_hopper": photos.grace_hopper()}


def portraits(sides: list[int], image_format: str = "jpeg", quality: int = 95) -> list[Photo]:
    """The two real portraits (astronaut, Grace Hopper) at each long side, encoded once.

    Upscaled with cv2.INTER_CUBIC from the 512 px originals; JPEG by default, as
    phone photos arrive.
    """
    result = []
    for side in sides:
        for name, rgb in _source_photos().items():
            height, width = rgb.shape[:2]
            scale = side / max(height, width)
            size = (round(width * scale), round(height * scale))
            resized = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
            buffer = io.BytesIO()
            if image_format == "jpeg":
                Image.fromarray(resized).save(buffer, format="JPEG", quality=quality)
            else:
                Image.fromarray(resized).save(buffer, format="PNG")
            result.append(
                Photo(name, side, size[0], size[1], buffer.getvalue(), f"image/{image_format}")
            )
    return result


def parse_ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


# --- statistics and tables ----------------------------------------------------------------


def parse_server_timing(header: str) -> dict[str, float]:
    """``"decode;dur=27.1, detect;dur=54.0"`` -> {"decode": 27.1, "detect": 54.0}."""
    timings = {}
    for entry in header.split(","):
        name, _, rest = entry.strip().partition(";")
        if rest.startswith("dur="):
            timings[name] = float(rest[4:])
    return timings


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def fmt(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_description() -> str:
    """One line: CPU model, cores, memory, load average when the run started."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB; load average at start {load}"


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path, title: str) -> None:
    """Titles, lays out, writes and closes a figure."""
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot().close(figure)


def source_commit() -> str:
    """The commit the figures are measured on, "-dirty" when tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown"
    return (commit or "unknown") + ("-dirty" if commit and changed else "")


def write_json(path: Path, document: dict) -> None:
    """Writes a results file, stamped with the commit it was measured on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"commit": source_commit(), **document}, indent=1, default=str))


def output_path(given: str | None, default_name: str) -> Path:
    path = Path(given) if given else RESULTS_DIR / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --- pictures -------------------------------------------------------------------------------


def psnr(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Peak signal-to-noise ratio of uint8 pixels in dB (inf when equal)."""
    mse = float(np.mean((reference.astype(np.float64) - candidate.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def face_mask(rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool: the faces the pipeline's detector finds, each box grown to the pasted head.

    A head is pasted with a feathered ellipse of about 0.8 x 0.98 of its crop, which
    spans about 1.6 x 1.9 of the detector's face box; that area counts as "face".
    """
    from cartoon.image.faces import FaceDetector

    mask = np.zeros(rgb.shape[:2], bool)
    for face in FaceDetector().detect(rgb):
        left, top, right, bottom = face.box
        centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
        half_width, half_height = (right - left) * 0.8, (bottom - top) * 0.95
        mask[max(0, round(centre_y - half_height)):max(0, round(centre_y + half_height)),
             max(0, round(centre_x - half_width)):max(0, round(centre_x + half_width))] = True
    return mask


def picture_cost(reference: np.ndarray, candidate: np.ndarray, faces: np.ndarray) -> dict[str, float]:
    """PSNR and the largest channel difference of ``candidate`` against ``reference``, faces and the rest apart.

    Args:
        reference, candidate: (H, W, 3) uint8 of one size.
        faces: (H, W) bool from ``face_mask``.
    """
    difference = np.abs(reference.astype(np.int16) - candidate.astype(np.int16)).max(axis=-1)
    cost = {}
    for part, where in (("faces", faces), ("background", ~faces)):
        if where.any():
            cost[f"{part}_psnr"] = psnr(reference[where], candidate[where])
            cost[f"{part}_max"] = float(difference[where].max())
    return cost


# --- styles and config ----------------------------------------------------------------------


def resolve_styles_dir(given: str | None) -> str:
    """The styles directory to benchmark: the flag, else the shipped default styles."""
    directory = Path(given) if given else DEFAULT_STYLES_DIR
    if not (directory / "registry.json").is_file():
        raise SystemExit(
            f"no registry.json in {directory}; train the default styles first or pass --styles-dir"
        )
    return str(directory.resolve())


def load_serve_config(path: Path = SERVE_CONFIG) -> dict:
    return yaml.safe_load(path.read_text())


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Applies ``key.path=value`` overrides to the first application of a Serve config.

    ``args.cpu_threads=2`` sets an AppArgs field; ``Cartoonizer.user_config.max_batch_size=4``
    or ``FaceAligner.ray_actor_options.num_cpus=1`` set a deployment's option. Values are
    parsed as YAML scalars.
    """
    config = copy.deepcopy(config)
    app = config["applications"][0]
    deployments = {deployment["name"]: deployment for deployment in app["deployments"]}
    for override in overrides:
        path, _, raw = override.partition("=")
        keys = path.split(".")
        if keys[0] == "args":
            target = app.setdefault("args", {})
        elif keys[0] in deployments:
            target = deployments[keys[0]]
        else:
            raise SystemExit(f"override {override!r}: start with 'args.' or a deployment name")
        for key in keys[1:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = yaml.safe_load(raw)
    return config


def app_args(config: dict) -> dict:
    return dict(config["applications"][0].get("args") or {})


def deployment(config: dict, name: str) -> dict:
    return next(d for d in config["applications"][0]["deployments"] if d["name"] == name)


def cartoonizer_threads(config: dict) -> int:
    """The torch thread count the Cartoonizer of ``config`` uses on a CPU."""
    threads = int(app_args(config).get("cpu_threads", 0))
    cpus = deployment(config, "Cartoonizer").get("ray_actor_options", {}).get("num_cpus", 1)
    return threads or max(1, math.ceil(cpus))


def pipeline_settings(config: dict):
    """The PipelineSettings the served app of ``config`` runs with."""
    from deployments.settings import AppArgs

    return AppArgs(**app_args(config)).pipeline_settings()


# --- servers --------------------------------------------------------------------------------


def wait_ready(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Polls ``url`` until it answers 200; fails early if ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} before {url} was ready")
        try:
            if httpx.get(url, timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


@contextmanager
def served_graph(config: dict, ray_cpus: int | None = None, ready_timeout_s: float = 300.0,
                 ray_gpus: int | None = None):
    """Deploys ``config`` in this process the way ``serve run`` does; yields the base URL.

    Like tests/integration/conftest.py: start Ray, then ``serve_app.local.deploy_config``.
    The HTTP port is a free one; every application's ``/readyz`` must answer 200 first.
    ``ray_gpus`` declares logical GPUs (for a simulated forward on a machine without one).
    """
    import ray
    from ray import serve

    from serve_app.local import deploy_config

    config = copy.deepcopy(config)
    port = free_port()
    config["http_options"]["port"] = port
    config["http_options"]["host"] = "127.0.0.1"
    # Replicas import serve_app.app from the repository; they inherit this environment.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    temp_dir = tempfile.mkdtemp(prefix="raybench")
    ray.init(
        num_cpus=ray_cpus or os.cpu_count(),
        num_gpus=ray_gpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        _temp_dir=temp_dir,
    )
    try:
        deploy_config(config)
        url = f"http://127.0.0.1:{port}"
        for app in config["applications"]:
            wait_ready(f"{url}{app.get('route_prefix', '/').rstrip('/')}/readyz", ready_timeout_s)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@contextmanager
def child_server(args: list[str], ready_timeout_s: float = 120.0, log_path: Path | None = None):
    """Runs ``python -m benchmarks.naive_server ARGS --port P``; yields its base URL."""
    port = free_port()
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.naive_server", *args, "--port", str(port)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(f"{url}/readyz", ready_timeout_s, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log_path:
            log.close()
