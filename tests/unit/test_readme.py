from pathlib import Path

from deployments.settings import AppArgs, BatchingConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_documents_every_config_knob():
    missing = [name for model in (AppArgs, BatchingConfig) for name in model.model_fields
               if f"| `{name}` |" not in README]
    assert missing == []
