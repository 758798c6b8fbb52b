"""Requests generated from the service's own OpenAPI schema, checked with every schemathesis check.

Bounded for CI; `docs/RELIABILITY.md` gives the command of the long run.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

# Per operation and generation phase; the docs' run uses schemathesis's CLI with more.
CI_EXAMPLES = 8


@pytest.fixture(scope="module")
def api_schema(base_url):
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=CI_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_meet_the_schema(case):
    response = case.call(timeout=120)
    case.validate_response(response)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), response.text
        assert set(response.json()["error"]) == {"code", "message"}


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
