"""Where styles live: the shipped registry folder, its file name, and the precisions an entry may ask for."""

from pathlib import Path

DEFAULT_STYLES_DIR = Path(__file__).parents[1] / "styles"
REGISTRY_FILE = "registry.json"
# What a registry entry may ask for: "auto" takes the config's choice (bf16 on CPUs with
# native bf16, fp16 on CUDA); a style whose parity matters pins fp32.
STYLE_PRECISIONS = ("auto", "fp32", "bf16")
# A registry entry without "precision": an imported DCT-Net style (mode tf1) runs fp32,
# the precision its TensorFlow parity is measured in (bf16: 3/255 apart, 65-76 % exact).
DEFAULT_PRECISION = {"native": "auto", "tf1": "fp32"}
