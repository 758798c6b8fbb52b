"""Retraining a style updates its registry entry and keeps the entry's picture settings."""

import json

import pytest

from tools.train_style import update_registry


def test_retraining_keeps_a_styles_picture_settings_and_updates_its_width(tmp_path):
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"default": "toon", "styles": [
        {"name": "toon", "head": "toon.safetensors", "background": "toon.safetensors", "width": 16,
         "finish": "toon", "tone": "photo", "wash": True},
        {"name": "comic", "head": "comic.safetensors", "background": "comic.safetensors", "width": 16,
         "finish": "comic", "tone": "photo", "min_background_scale": 1.0, "wash": True},
    ]}))

    update_registry(tmp_path, "comic", 8)

    document = json.loads(registry.read_text())
    comic = next(entry for entry in document["styles"] if entry["name"] == "comic")
    assert comic["width"] == 8
    assert (comic["tone"], comic["wash"], comic["min_background_scale"]) == ("photo", True, 1.0)
    assert [entry["name"] for entry in document["styles"]] == ["toon", "comic"]
    assert document["default"] == "toon"


def test_a_new_style_gets_an_entry_of_its_own(tmp_path):
    update_registry(tmp_path, "sketch", 12)

    document = json.loads((tmp_path / "registry.json").read_text())
    assert [(entry["name"], entry["width"]) for entry in document["styles"]] == [("sketch", 12)]
    assert document["default"] == "sketch"


def test_a_background_model_changes_only_the_background_of_its_style(tmp_path):
    update_registry(tmp_path, "toon", 16)

    update_registry(tmp_path, "toon", 8, part="background")

    (toon,) = json.loads((tmp_path / "registry.json").read_text())["styles"]
    assert (toon["head"], toon["width"]) == ("toon.safetensors", 16)
    assert (toon["background"], toon["background_width"]) == ("toon_background.safetensors", 8)


def test_a_background_model_needs_its_style_first(tmp_path):
    with pytest.raises(ValueError, match="train --part both first"):
        update_registry(tmp_path, "toon", 8, part="background")
