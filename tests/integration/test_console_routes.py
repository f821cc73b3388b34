"""The support console's files on the internal port: served without the token (the page holds no
data), with a Content-Security-Policy that forbids inline script and other origins, and nothing
else on that port becomes reachable without the token."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.support.helpers import RunningService
from tests.support.service_fixtures import service_fixture
from worker.api.console import ASSETS, load_assets

service = service_fixture(worker=False)

CONSOLE = Path(__file__).resolve().parents[2] / "worker" / "console"


async def _get(service: RunningService, path: str, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
    async with service.http.get(f"{service.api_url}{path}", allow_redirects=False, **kwargs) as resp:
        return resp.status, dict(resp.headers), await resp.read()


@pytest.mark.parametrize(
    ("path", "media"),
    [("/console/", "text/html"), *((f"/console/{name}", media) for name, media in ASSETS.items())],
)
async def test_console_files_need_no_token_and_forbid_inline_script_and_other_origins(
    service: RunningService, path: str, media: str
):
    status, headers, body = await _get(service, path)
    assert status == 200 and headers["Content-Type"].startswith(media)
    csp = {d.split()[0]: d.split()[1:] for d in headers["Content-Security-Policy"].split("; ")}
    assert csp["default-src"] == ["'none'"]
    for directive in ("script-src", "style-src", "connect-src"):
        assert csp[directive] == ["'self'"], directive  # no 'unsafe-inline', no other origin
    assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert body == load_assets()[path.removeprefix("/console/") or "index.html"]


async def test_console_redirect_and_unknown_file(service: RunningService):
    status, headers, _ = await _get(service, "/console")
    assert (status, headers["Location"]) == (308, "/console/")
    status, _, body = await _get(service, "/console/secrets.json")
    assert status == 404 and b'"code":"not_found"' in body.replace(b" ", b"")


@pytest.mark.parametrize(
    "path",
    [
        "/console/../v1/dead-letters",
        "/console/%2e%2e/v1/dead-letters",
        "/console/..%2fv1%2fdead-letters",
        "/console%2f..%2fv1/dead-letters",
        "//console/../v1/dead-letters",
    ],
)
async def test_the_console_opens_no_way_around_the_token(service: RunningService, path: str):
    async with service.http.get(f"{service.api_url}{path}") as resp:
        body = await resp.text()
    assert resp.status in (401, 404), (resp.status, body)
    assert "dead_letters" not in body
    # The JSON API itself still wants the token, for a POST under /console/ too.
    status, body = await service.api("GET", "/v1/dead-letters", token=None)
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    status, _ = await service.api("POST", "/console/", token=None)
    assert status == 401


class _Page(HTMLParser):
    """What of the page the CSP would block: inline scripts, style elements or attributes, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script":
            self.scripts.append(names.get("src") or "")
            self._in_script = True
        if tag == "style" or "style" in names:
            self.inline.append(f"<{tag}> style")
        self.inline += [f"<{tag}> {n}" for n in names if n.startswith("on")]
        self.inline += [f"<{tag}> {n}" for n, v in attrs if v and v.strip().lower().startswith("javascript:")]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("inline <script> body")


def test_the_page_has_nothing_inline_and_nothing_from_elsewhere():
    page = _Page()
    page.feed((CONSOLE / "index.html").read_text())
    assert page.scripts == ["console.js"] and page.inline == []
    for name in ASSETS:
        text = (CONSOLE / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), f"{name} refers to another origin"
    modules = [name for name, media in ASSETS.items() if media == "text/javascript"]
    # The entry imports the other modules, by relative path only (same origin, no bare specifiers).
    imported = set(
        re.findall(r'^import .* from "\./([a-z]+\.js)";$', (CONSOLE / "console.js").read_text(), re.M)
    )
    assert imported | {"console.js"} <= set(modules) and len(imported) >= 3
    for name in modules:
        script = (CONSOLE / name).read_text()
        assert all(spec.startswith("./") for spec in re.findall(r'from "([^"]+)"', script)), name
        # The token stays in the tab: sessionStorage, never localStorage, a cookie or a URL; API text as text.
        for forbidden in (
            "localStorage",
            "document.cookie",
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "eval(",
            "new Function",
        ):
            assert forbidden not in script, (name, forbidden)
