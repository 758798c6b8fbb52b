"""How far reduced-precision UNets land from the fp32 CPU result, on the shipped styles.

    python -m tests.gpu.precision --device cpu     # bf16 and fp16 on this CPU
    python -m tests.gpu.precision --device cuda    # fp32, bf16 and fp16 on the GPU

The reference is fp32 on the CPU: on CUDA, fp32 convolutions may run in TF32.
Inputs: the aligned heads of the astronaut and Grace Hopper, and the astronaut's
background at a 256 px short side; outputs are compared in uint8 levels.
"""

import argparse
from functools import cache

import numpy as np
import torch

from cartoon.image.background import shrink, split, stitch
from cartoon.model.inference import InferenceMode
from cartoon.image.pipeline import Options, Preparer
from cartoon.image.styles import StyleRegistry, Stylizer
from tests import photos

@cache
def inputs() -> dict[str, np.ndarray]:
    preparer = Preparer()
    heads = [preparer.prepare_array(photo, Options()).heads[0] for photo in (photos.astronaut(), photos.grace_hopper())]
    return {"head": np.stack(heads), "background": shrink(photos.astronaut(), 256)}


def stylize(style: str, device: str, precision: str) -> dict[str, np.ndarray]:
    # Loaded in fp32 on the CPU first, then cast once to the precision under test; the
    # mode is built directly since choose_mode refuses fp16 on a CPU.
    loaded = Stylizer.from_style(StyleRegistry.from_directory().get(style), "cpu", "fp32")
    mode = InferenceMode(torch.device(device), precision, channels_last=False, reason="precision test")
    stylizer = Stylizer(loaded.models["head"], loaded.models["background"], device, mode)
    pieces, plan = split(inputs()["background"])
    return {
        "head": stylizer.run(inputs()["head"], "head"),
        "background": stitch(stylizer.run(pieces, "background"), plan),
    }


def errors(style: str, device: str, precision: str) -> dict[str, tuple[int, float]]:
    """Per kind: (max, mean) absolute difference from fp32 on the CPU, in uint8 levels."""
    reference = stylize(style, "cpu", "fp32")
    result = stylize(style, device, precision)
    out = {}
    for kind in ("head", "background"):
        difference = np.abs(result[kind].astype(int) - reference[kind])
        out[kind] = (int(difference.max()), float(difference.mean()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    precisions = ("bf16", "fp16") if args.device == "cpu" else ("fp32", "bf16", "fp16")
    print(f"| style | precision on {args.device} | head max | head mean | background max | background mean |")
    print("| --- | --- | --- | --- | --- | --- |")
    for style in StyleRegistry.from_directory().names():
        for precision in precisions:
            found = errors(style, args.device, precision)
            cells = [f"{found[kind][0]} | {found[kind][1]:.3f}" for kind in ("head", "background")]
            print(f"| {style} | {precision} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
