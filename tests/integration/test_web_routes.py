"""The web page's and the docs' routes over HTTP: every file they need comes from the service."""

import re

import pytest


def test_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<base href="/">' in page.text
    linked = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
    assert sorted(linked) == ["static/app.css", "static/app.js"]
    media_types = {".js": "text/javascript", ".css": "text/css"}
    for name in ("app.js", "app.css", "api.js", "store.js", "video.js", "zip.js"):
        served = client.get(f"/static/{name}")
        assert served.status_code == 200
        assert served.headers["content-type"].startswith(media_types[name[name.rindex("."):]])
    assert "https://" not in client.get("/static/app.js").text


def test_page_under_a_route_prefix_links_within_it(base_url, client):
    page = client.get(f"{base_url}/overloaded/")
    assert '<base href="/overloaded/">' in page.text
    assert client.get(f"{base_url}/overloaded/static/app.js").status_code == 200


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/index.html", "/docs/assets/index.html"])
def test_unknown_file_is_json_404(client, path):
    missing = client.get(path)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_docs_load_nothing_from_other_hosts(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert sources and all(source.startswith("/docs/assets/") for source in sources)
    for source in sources:
        assert client.get(source).status_code == 200
    assert "cdn" not in docs.text
    assert client.get("/redoc").status_code == 404
