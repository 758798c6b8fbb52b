"""The API key check, the key's sources, and the middleware's answers, on a real ASGI app."""

import hmac
import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from deployments.settings import AppArgs
from serve_app import access


def test_the_environment_variable_wins_over_the_key_file(tmp_path):
    (tmp_path / "key").write_text("from-file\n")
    args = AppArgs(api_key_file=str(tmp_path / "key"))
    assert access.resolve_api_key(args, {}) == "from-file"
    assert access.resolve_api_key(args, {access.API_KEY_ENV: "from-env"}) == "from-env"
    assert access.resolve_api_key(AppArgs(), {}) is None


def test_keys_are_compared_in_constant_time(monkeypatch):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", spy)
    assert access.authorized("Bearer s3cret", "s3cret")
    assert access.authorized("bearer  s3cret", "s3cret")
    assert not access.authorized("Bearer s3cre", "s3cret")
    assert not access.authorized("Basic s3cret", "s3cret")
    assert len(compared) == 3


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(access.AccessMiddleware)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/boom")
    async def boom():
        raise RuntimeError("a bug")

    return app


def configure(app: FastAPI, **args) -> TestClient:
    access.install(AppArgs(**args))
    return TestClient(app, raise_server_exceptions=False)


def test_an_unhandled_error_is_a_json_500(app):
    response = configure(app).get("/boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal"


def test_with_a_key_only_the_probes_are_open_and_the_key_is_never_logged(app, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(access.API_KEY_ENV, "s3cret-key")
    client = configure(app)
    with caplog.at_level(logging.INFO, logger="ray.serve"):
        assert client.get("/healthz").status_code == 200
        refused = client.get("/boom")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        assert refused.headers["www-authenticate"] == "Bearer"
        assert client.get("/boom", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/boom", headers={"Authorization": "Bearer s3cret-key"}).status_code == 500
    assert "GET /boom 401" in caplog.text
    assert "s3cret-key" not in caplog.text


def test_cors_is_off_by_default_and_on_for_listed_origins_only(app):
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    closed = configure(app).options("/healthz", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    client = configure(app, cors_origins=["https://app.example.com"])
    opened = client.options("/healthz", headers=preflight)
    assert opened.status_code == 200
    assert opened.headers["access-control-allow-origin"] == "https://app.example.com"
    other = client.options("/healthz", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
