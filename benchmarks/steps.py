"""What each step of one picture costs, in process at c=1: CPU milliseconds per 1024 px portrait.

    python -m benchmarks.steps                    # toon and comic, the machine's own precision
    python -m benchmarks.steps --precision fp32 --repeats 5
    python -m benchmarks.steps --styles toon --styles-dir /tmp/slim   # another registry's models

Each step runs on its own, in the order the pipeline runs them, on the two shipped
portraits (astronaut, Grace Hopper) upscaled to 1024 px: HOG alone and HOG with the MTCNN
cascade, the tone map and its application (the lifted shadows' quieting separately), head
and background UNet forwards, the calm areas' wash, the finish, compose and the PNG
encode. CPU time of this process (``time.process_time``), the median over ``--repeats``
runs, so other work on a shared machine weighs less than in wall time; the detection's
wall time beside it (HOG and the cascade run on two threads at once).
"""

import argparse
import time
from dataclasses import replace

import cv2
import numpy as np
import torch

from benchmarks import common
from cartoon.image import codec, finish, tone
from cartoon.image.align import face_interior_mask
from cartoon.image.faces import FaceDetector
from cartoon.image.pipeline import Options, Pipeline, PipelineSettings
from cartoon.image.styles import StyleRegistry


def median_ms(step, repeats: int, clock=time.process_time) -> float:
    """Median milliseconds of ``step()`` over ``repeats`` runs by ``clock`` (CPU time by
    default, ``time.perf_counter`` for wall time), after one warm-up."""
    step()
    samples = []
    for _ in range(repeats):
        start = clock()
        step()
        samples.append((clock() - start) * 1000.0)
    return float(np.median(samples))


def step_costs(pipeline: Pipeline, rgb: np.ndarray, style: str, repeats: int) -> dict[str, float]:
    preparer = pipeline.preparer
    stylizer = pipeline.stylizer(style)
    hog_only = FaceDetector(replace(preparer.detector.config, cascade=False))
    faces = preparer.detector.detect(rgb)
    boxes = [face.box for face in faces]
    tone_map = tone.tone_map(rgb, boxes, pipeline.settings.tone)
    job = preparer.prepare_array(rgb, Options(style=style), faces=faces)
    heads = stylizer.generate(job.heads, "head") if len(job.heads) else job.heads
    background = stylizer.generate(job.background, "background")
    background_photo = job.background
    lift = cv2.resize(tone_map.gain, rgb.shape[1::-1], interpolation=cv2.INTER_LINEAR) - np.float32(tone_map.exposure)
    costs = {
        "detect (HOG)": median_ms(lambda: hog_only.detect(rgb), repeats),
        "detect (HOG + MTCNN)": median_ms(lambda: preparer.detector.detect(rgb), repeats),
        "detect (HOG + MTCNN), wall ms (on two threads)": median_ms(lambda: preparer.detector.detect(rgb), repeats, time.perf_counter),
        "tone map": median_ms(lambda: tone.tone_map(rgb, boxes, pipeline.settings.tone), repeats),
        "tone apply (whole photo)": median_ms(lambda: tone.apply_tone(rgb, tone_map), repeats),
        "of which quieting": median_ms(lambda: tone._quieted(rgb, lift), repeats),
        "prepare (all of the above, align, shrink)": median_ms(
            lambda: preparer.prepare_array(rgb, Options(style=style)), repeats),
        "UNet heads": median_ms(lambda: stylizer.generate(job.heads, "head"), repeats) if len(job.heads) else 0.0,
        "UNet background": median_ms(lambda: stylizer.generate(job.background, "background"), repeats),
    }
    if stylizer.wash is not None:
        wash = stylizer.wash
        keep = face_interior_mask(job.heads.shape[1])
        costs["wash heads"] = median_ms(lambda: finish.wash_batch(heads, job.heads, wash, keep), repeats)
        costs["wash background"] = median_ms(lambda: finish.wash_batch(background, background_photo, wash), repeats)
    if stylizer.finish is not None:
        costs["finish heads + background"] = median_ms(
            lambda: (finish.apply_batch(heads, stylizer.finish), finish.apply_batch(background, stylizer.finish)),
            repeats)
    stylized = replace(job, heads=heads, background=background, paste_mask=stylizer.paste_mask)
    picture = pipeline.composer.picture(stylized)
    costs["compose"] = median_ms(lambda: pipeline.composer.picture(stylized), repeats)
    costs["encode (PNG)"] = median_ms(lambda: codec.encode(picture, "png", 90), repeats)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.steps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--styles", default="toon,comic")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--styles-dir", default=common.DEFAULT_STYLES_DIR, help="the registry to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    print(common.machine_description(), flush=True)
    pipeline = Pipeline(StyleRegistry.from_directory(args.styles_dir),
                        PipelineSettings(device="cpu", precision=args.precision))
    photos = {photo.name: codec.decode(photo.data).rgb for photo in common.portraits([args.side])}
    styles = args.styles.split(",")
    columns = [(style, name) for style in styles for name in photos]
    measured = [step_costs(pipeline, photos[name], style, args.repeats) for style, name in columns]
    steps = list(dict.fromkeys(step for costs in measured for step in costs))
    mode = pipeline.stylizer(styles[0]).mode
    print(f"{mode.precision} on {mode.device}, {args.threads} threads, {args.side} px portraits, "
          f"CPU ms per picture (median of {args.repeats}):")
    rows = [[step, *(common.fmt(costs[step], 0) if step in costs else "-" for costs in measured)] for step in steps]
    print(common.markdown_table(["step", *(f"{style} {name}" for style, name in columns)], rows))


if __name__ == "__main__":
    main()
