from pathlib import Path

from deployments.settings import AppArgs, BatchingConfig

DEPLOY_GUIDE = (Path(__file__).resolve().parents[2] / "docs" / "DEPLOY.md").read_text()


def test_deploy_guide_documents_every_config_knob():
    missing = [name for model in (AppArgs, BatchingConfig) for name in model.model_fields
               if f"| `{name}` |" not in DEPLOY_GUIDE]
    assert missing == []
