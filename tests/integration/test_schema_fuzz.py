"""Requests generated from the service's own OpenAPI schema, checked with every schemathesis check.

Bounded for CI; `docs/RELIABILITY.md` gives the command of the long run.
"""

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

# Examples per operation and generation mode; the docs' run uses the CLI with more.
CI_EXAMPLES = 6


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def operations(base_url):
    config = schemathesis.Config.from_path(ROOT / "schemathesis.toml")
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda mode: mode.value)
def test_generated_requests_pass_every_check(operations, mode):
    """schemathesis's checks (server errors, statuses, content types, schemas, data acceptance)."""
    assert {operation.label for operation in operations} >= {"POST /v1/cartoonize", "POST /v1/cartoonize/batch"}
    checked = []
    for operation in operations:

        @settings(max_examples=CI_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case):
            response = case.call_and_validate(timeout=120)
            if response.status_code >= 400:
                (content_type,) = response.headers["content-type"]
                assert content_type.startswith("application/json"), response.text
                assert set(response.json()["error"]) == {"code", "message"}

        try:
            check()
        except Unsatisfiable:
            # No invalid request exists for an operation without parameters or body.
            assert mode == GenerationMode.NEGATIVE and not operation.definition.raw.get("parameters")
            continue
        checked.append(operation.label)
    assert {"POST /v1/cartoonize", "POST /v1/cartoonize/batch"} <= set(checked)


def test_the_schema_tells_the_truth(client):
    document = client.get("/openapi.json").json()
    styles = [style["name"] for style in client.get("/v1/styles").json()["styles"]]
    for path in ("/v1/cartoonize", "/v1/cartoonize/batch"):
        operation = document["paths"][path]["post"]
        (style,) = [p for p in operation["parameters"] if p["name"] == "style"]
        assert style["schema"]["enum"] == styles
        assert {"400", "413", "415", "422", "503"} <= set(operation["responses"])
        error = operation["responses"]["400"]["content"]["application/json"]["schema"]
        assert error["required"] == ["error"]
    batch = document["paths"]["/v1/cartoonize/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert batch["schema"]["properties"]["images"]["minItems"] == 1
