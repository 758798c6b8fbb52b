"""The web page and the offline API docs: Ingress routes serving files packaged with the project.

The page (``serve_app/static``) is plain HTML, CSS and JavaScript calling the JSON API;
nothing is built and nothing comes from another host. The Swagger UI files for ``/docs``
come from the installed ``fastapi-offline`` package, so the docs render without internet
access.
"""

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from serve_app.errors import ApiError

STATIC_DIR = Path(__file__).parent / "static"
SWAGGER_DIR = Path(str(resources.files("fastapi_offline") / "static"))
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
PAGE_FILES = {path.name: path for path in STATIC_DIR.iterdir() if path.suffix in MEDIA_TYPES}
DOCS_FILES = {name: SWAGGER_DIR / name for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")}
# The page may talk to its own origin only; blob: and data: are the results it shows
# (media-src: the clip chosen and its cartoon, played from object URLs).
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
INDEX_HTML = (STATIC_DIR / "index.html").read_text()

router = APIRouter(include_in_schema=False)


def _root(request: Request) -> str:
    """The app's route prefix ('' at /), so links work under any prefix."""
    return request.scope.get("root_path", "").rstrip("/")


def _file(files: dict[str, Path], name: str) -> FileResponse:
    path = files.get(name)
    if path is None:
        raise ApiError(404, "not_found", f"there is no file {name!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})


@router.get("/")
async def page(request: Request) -> HTMLResponse:
    """The web page: one photo or a batch, calling the JSON API."""
    html = INDEX_HTML.replace("<head>", f'<head>\n  <base href="{_root(request)}/">', 1)
    return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"})


@router.get("/static/{name}")
async def page_file(name: str) -> FileResponse:
    """The page's scripts and style sheet."""
    return _file(PAGE_FILES, name)


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI, its files served from here."""
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title="Portrait cartoonization: API",
        swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/assets/favicon.png",
    )


@router.get("/docs/assets/{name}")
async def docs_file(name: str) -> FileResponse:
    """Swagger UI's script, style sheet and icon, from the fastapi-offline package."""
    return _file(DOCS_FILES, name)
