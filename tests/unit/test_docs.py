"""The docs stay true to the tree: knobs documented, links and commands that lead somewhere."""

import re
from pathlib import Path

from deployments.settings import AppArgs, BatchingConfig

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The project's own packages; `python -m pytest` and the like are not ours to check.
OWN_PACKAGES = ("cartoon", "benchmarks", "tools", "serve_app", "deployments")


def test_deploy_guide_documents_every_config_knob():
    deploy_guide = (ROOT / "docs" / "DEPLOY.md").read_text()
    missing = [name for model in (AppArgs, BatchingConfig) for name in model.model_fields
               if f"| `{name}` |" not in deploy_guide]
    assert missing == []


def test_every_relative_link_of_the_docs_leads_to_a_file():
    broken = [(page.name, target) for page in PAGES
              for target in re.findall(r"\]\(([^)#\s]+)", page.read_text())
              if "://" not in target and not (page.parent / target).exists()]
    assert broken == []


def test_every_python_m_command_of_the_docs_names_a_module_of_the_tree():
    missing = []
    for page in PAGES:
        for module in re.findall(r"python -m ([\w.]+)", page.read_text()):
            path = ROOT.joinpath(*module.split("."))
            if module.split(".")[0] in OWN_PACKAGES and not (
                    path.with_suffix(".py").exists() or (path / "__main__.py").exists()):
                missing.append((page.name, module))
    assert missing == []
