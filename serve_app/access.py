"""Around every route: the API key, CORS, one access-log line, JSON for anything unhandled.

A pure ASGI middleware, so it sees every answer (404 and 405 included) and streams
bodies untouched. Its settings come from the Ingress replica (``install``), since the
FastAPI app is built at import, before the config is known; they are held by this
module, as Serve serves a copy of the app object (one Ingress replica per process).

Serve's proxy already gives every answer an ``X-Request-Id`` (the client's, if it sent
one) and puts it in the request context, which the ``ray.serve`` logger writes on each
line; the access line below is logged there for that reason. No line holds a header or
a body: neither the key nor image bytes reach the logs.
"""

import hmac
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments import metrics
from deployments.settings import AppArgs
from serve_app.errors import ApiError

API_KEY_ENV = "CARTOON_API_KEY"
# Probes need no key: orchestrators call them without one. The web page, the docs page
# and the schema it renders hold no data; they must load to ask the person for the key
# (the docs' Authorize button), and every call they make to the API carries it.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/", "/docs", "/openapi.json"})
PUBLIC_PREFIXES = ("/static/", "/docs/assets/")
# Headers a browser page may read from answers when CORS is on.
EXPOSED_HEADERS = ["X-Request-Id", "X-Faces", "X-Batch-Sizes", "Server-Timing", "Retry-After"]

_logger = logging.getLogger("ray.serve")


def resolve_api_key(args: AppArgs, environ: dict[str, str] = os.environ) -> str | None:
    """The API key: ``CARTOON_API_KEY`` if set, else the content of ``args.api_key_file``; None = open."""
    key = environ.get(API_KEY_ENV, "").strip()
    if not key and args.api_key_file:
        key = Path(args.api_key_file).read_text().strip()
    return key or None


def authorized(authorization: str, key: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <key>``, compared in constant time."""
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


@dataclass(frozen=True)
class AccessSettings:
    api_key: str | None
    cors_origins: tuple[str, ...]


_settings: AccessSettings | None = None


def install(args: AppArgs) -> None:
    """Gives ``AccessMiddleware`` its settings; called once per Ingress replica."""
    global _settings
    _settings = AccessSettings(resolve_api_key(args), tuple(args.cors_origins))


def _current() -> AccessSettings:
    if _settings is None:
        raise RuntimeError("access.install was not called")
    return _settings


def is_public(path: str) -> bool:
    """Whether a route path is served without the API key."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _route_path(scope: Scope) -> str:
    """The path under the app's route prefix, as the routes see it."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] or "/" if root and path.startswith(root) else path


class AccessMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app
        self._cors: tuple[tuple[str, ...], ASGIApp] | None = None

    def _guarded(self, settings: AccessSettings) -> ASGIApp:
        """The app behind the key check, behind CORS when origins are configured."""
        if not settings.cors_origins:
            return self._checked
        if self._cors is None or self._cors[0] != settings.cors_origins:
            cors = CORSMiddleware(
                self._checked,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-Id"],
                expose_headers=EXPOSED_HEADERS,
            )
            self._cors = (settings.cors_origins, cors)
        return self._cors[1]

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = _current()
        if settings.api_key and not is_public(_route_path(scope)):
            headers = dict(scope["headers"])
            if not authorized(headers.get(b"authorization", b"").decode("latin-1"), settings.api_key):
                error = ApiError(401, "unauthorized", "send Authorization: Bearer <API key>",
                                 {"WWW-Authenticate": "Bearer"})
                metrics.record_error(error.status, error.code)
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 0}

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._guarded(_current())(scope, receive, watched_send)
        except Exception:
            _logger.exception("unhandled error in %s %s", scope["method"], _route_path(scope))
            if not status["code"]:
                error = ApiError(500, "internal", "the request could not be handled; this is our bug")
                metrics.record_error(error.status, error.code)
                await error.response()(scope, receive, watched_send)
        finally:
            _logger.info(
                "%s %s %s %.1f ms", scope["method"], _route_path(scope), status["code"] or "-",
                (time.perf_counter() - start) * 1000.0,
            )
