"""``gradwatch dashboards push`` against a recorded contract of Grafana's HTTP API.

No Grafana server can run here, so a small in-test HTTP server answers the
exact requests grafana-client 5.x sends, with the status codes and bodies
Grafana documents (docs: HTTP API, Folder API and Dashboard API):

- ``GET  /api/frontend/settings`` -> 200 with ``buildInfo``; 401 for a bad token
- ``GET  /api/folders/<uid>``     -> 200 folder, or 404 ``{"message": "folder not found"}``
- ``POST /api/folders``           -> 200 folder; 403 without permission
- ``POST /api/dashboards/db``     -> 200 ``{id, uid, url, status: "success", version, slug}``;
  412 when the uid exists and ``overwrite`` is false; 403 without permission
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gradwatch import cli
from gradwatch.dashboards import DASHBOARDS, DEFAULT_OUTPUT, generate_all
from gradwatch.dashboards.push import PushError, check_url, folder_uid, push
from tests.integration.external import free_port

EDITOR = "glsa_editor_token"
VIEWER = "glsa_viewer_token"


class FakeGrafana:
    """Grafana's folder and dashboard API as recorded above, in memory."""

    def __init__(self, *, html: bool = False) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: Any) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length)) if length else None
                outer.requests.append((method, self.path, payload))
                if html:
                    return self._answer(200, "<html>not grafana</html>")
                status, body = outer.route(method, self.path, self.headers.get("Authorization", ""), payload)
                self._answer(status, body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def route(self, method: str, path: str, auth: str, payload: Any) -> tuple[int, Any]:
        role = {f"Bearer {EDITOR}": "Editor", f"Bearer {VIEWER}": "Viewer"}.get(auth)
        if role is None:
            return 401, {"message": "Invalid API key", "messageId": "api-keys.invalid", "statusCode": 401}
        denied = 403, {"message": "You'll need additional permissions to perform this action."}
        if (method, path) == ("GET", "/api/frontend/settings"):
            return 200, {"buildInfo": {"version": "11.3.0", "edition": "Open Source"}, "appSubUrl": ""}
        if method == "GET" and path.startswith("/api/folders/"):
            uid = path.rsplit("/", 1)[1]
            if uid in self.folders:
                return 200, self.folders[uid]
            return 404, {"message": "folder not found", "status": "not-found"}
        if (method, path) == ("POST", "/api/folders"):
            if role != "Editor":
                return denied
            uid = payload["uid"]
            folder = {"id": len(self.folders) + 1, "uid": uid, "title": payload["title"], "version": 1}
            folder["url"] = f"/dashboards/f/{uid}/"
            self.folders[uid] = folder
            return 200, folder
        if (method, path) == ("POST", "/api/dashboards/db"):
            if role != "Editor":
                return denied
            model = payload["dashboard"]
            uid = model["uid"]
            if payload.get("folderUid") not in self.folders:
                return 400, {"message": "folder not found", "status": "not-found"}
            old = self.dashboards.get(uid)
            if old is not None and not payload.get("overwrite"):
                return 412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
            version = old["version"] + 1 if old else 1
            ident = old["id"] if old else len(self.dashboards) + 1
            self.dashboards[uid] = {"id": ident, "version": version, "payload": payload}
            slug = model["title"].lower().replace(" / ", "-").replace(" ", "-")
            return 200, {
                "id": ident,
                "uid": uid,
                "url": f"/d/{uid}/{slug}",
                "status": "success",
                "version": version,
                "slug": slug,
            }
        return 404, {"message": "Not found"}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()
    yield fake
    fake.close()


def test_first_push_creates_the_folder_and_dashboards_and_a_second_push_updates_them(grafana):
    committed = {name: (DEFAULT_OUTPUT / name).read_text() for name in DASHBOARDS}
    first = push(grafana.url, EDITOR, committed)
    assert [(m, p) for m, p, _ in grafana.requests] == [
        ("GET", "/api/frontend/settings"),
        ("GET", "/api/folders/gradwatch"),
        ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * 3,
    ]
    assert grafana.requests[2][2] == {"title": "gradwatch", "uid": "gradwatch"}
    for (_, _, body), name in zip(grafana.requests[3:], DASHBOARDS, strict=True):
        assert body["overwrite"] is True and body["folderUid"] == "gradwatch"
        assert body["dashboard"] == {**json.loads(committed[name]), "id": None}
    assert [p.version for p in first] == [1, 1, 1]

    grafana.requests.clear()
    second = push(grafana.url, EDITOR, committed)
    assert [(m, p) for m, p, _ in grafana.requests] == [
        ("GET", "/api/frontend/settings"),
        ("GET", "/api/folders/gradwatch"),
        *[("POST", "/api/dashboards/db")] * 3,
    ]
    assert [p.uid for p in second] == [p.uid for p in first] == ["gradwatch-run", "gradwatch-layers", "gradwatch-fleet"]
    assert [p.version for p in second] == [2, 2, 2]
    assert len(grafana.dashboards) == 3 and len(grafana.folders) == 1
    assert second[0].url.startswith("/d/gradwatch-run/")


def test_a_bad_token_is_one_clear_line_and_writes_nothing(grafana):
    with pytest.raises(PushError) as info:
        push(grafana.url, "wrong", generate_all())
    message = str(info.value)
    assert "HTTP 401" in message and "GRAFANA_TOKEN" in message and "\n" not in message
    assert [p for _, p, _ in grafana.requests] == ["/api/frontend/settings"]
    assert not grafana.dashboards and not grafana.folders


def test_missing_permissions_say_which_role_is_needed(grafana):
    with pytest.raises(PushError) as info:
        push(grafana.url, VIEWER, generate_all())
    assert "HTTP 403" in str(info.value) and "Editor" in str(info.value)
    assert not grafana.dashboards


def test_an_existing_folder_is_reused_not_recreated(grafana):
    grafana.folders["team-ml"] = {"id": 7, "uid": "team-ml", "title": "Team ML", "version": 3}
    push(grafana.url, EDITOR, generate_all(), folder="Team ML")
    assert ("POST", "/api/folders") not in [(m, p) for m, p, _ in grafana.requests]
    assert {d["payload"]["folderUid"] for d in grafana.dashboards.values()} == {"team-ml"}


@pytest.mark.parametrize(
    "url", ["grafana:3000", "ftp://grafana", "http://", "http://grafana:notaport", "http://g/?x=1"]
)
def test_bad_urls_are_refused_before_any_request(url):
    with pytest.raises(PushError, match="bad Grafana URL"):
        push(url, EDITOR, generate_all())


def test_an_unreachable_server_is_named():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PushError, match=r"cannot reach Grafana at .*: Connection refused"):
        push(url, EDITOR, generate_all(), timeout=2)


def test_something_that_is_not_grafana_is_named():
    fake = FakeGrafana(html=True)
    try:
        with pytest.raises(PushError, match="does not look like Grafana"):
            push(fake.url, EDITOR, generate_all())
    finally:
        fake.close()


def test_no_token_is_refused_with_a_hint():
    with pytest.raises(PushError, match="GRAFANA_TOKEN"):
        push("http://grafana:3000", "", generate_all())


def test_cli_push_reads_the_token_from_the_environment(grafana, monkeypatch, capsys):
    monkeypatch.setenv("GRAFANA_TOKEN", EDITOR)
    assert cli.main(["dashboards", "push", "--url", grafana.url + "/"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["gradwatch-run", "gradwatch-layers", "gradwatch-fleet"]
    assert all(line.split()[1] == "v1" for line in out)
    assert cli.main(["dashboards", "push", "--url", grafana.url, "--folder", "ML / prod"]) == 0
    assert "ml-prod" in grafana.folders
    assert {d["version"] for d in grafana.dashboards.values()} == {2}


def test_cli_push_errors_are_one_line_on_stderr(grafana, monkeypatch, capsys):
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert cli.main(["dashboards", "push", "--url", grafana.url, "--token", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gradwatch dashboards push: ") and err.count("\n") == 1 and "401" in err


def test_cli_generate_writes_the_committed_files(tmp_path, capsys):
    assert cli.main(["dashboards", "generate", "--output", str(tmp_path)]) == 0
    for name in DASHBOARDS:
        assert (tmp_path / name).read_text() == (DEFAULT_OUTPUT / name).read_text()
    assert cli.main(["dashboards"]) == 2


def test_url_and_folder_helpers():
    assert check_url("https://grafana.example.com/grafana/") == "https://grafana.example.com/grafana"
    assert folder_uid("gradwatch") == "gradwatch" and folder_uid("  ML / prod ") == "ml-prod"
    assert len(folder_uid("x" * 100)) == 40
