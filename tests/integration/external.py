"""Real Prometheus and Alertmanager processes (Debian packages) on loopback, with the project's configs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    message = f"{names[0]} is not installed (Debian package; `make test` installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)  # CI installs it: missing there is a broken set-up, not a reason to skip
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited early: {process.stdout.read() if process.stdout else ''}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


class Webhook:
    """An HTTP server that records every Alertmanager notification it receives, with its arrival time."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict]] = []
        self.arrived = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.arrived:
                    outer.received.append((time.time(), json.loads(body)))
                    outer.arrived.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/gradwatch"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def alerts(self, **labels: str) -> list[tuple[float, dict, dict]]:
        """(arrival time, notification, alert) for every received alert whose labels include ``labels``."""
        with self.arrived:
            return [
                (t, n, a)
                for t, n in self.received
                for a in n["alerts"]
                if all(a["labels"].get(k) == v for k, v in labels.items())
            ]

    def wait_for(self, timeout: float, **labels: str) -> list[tuple[float, dict, dict]]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not self.alerts(**labels):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self.arrived.wait(remaining)
        return self.alerts(**labels)

    def close(self) -> None:
        self._server.shutdown()


class Alertmanager:
    """deploy/alertmanager/alertmanager.yml with its webhook pointed at ``webhook_url``."""

    def __init__(self, webhook_url: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gw-am-"))
        shutil.copytree(DEPLOY / "alertmanager" / "templates", self.dir / "templates")
        config = (DEPLOY / "alertmanager" / "alertmanager.yml").read_text()
        assert "http://127.0.0.1:5001/gradwatch" in config
        (self.dir / "alertmanager.yml").write_text(config.replace("http://127.0.0.1:5001/gradwatch", webhook_url))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                binary("prometheus-alertmanager", "alertmanager"),
                f"--config.file={self.dir / 'alertmanager.yml'}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_ready(f"{self.url}/-/ready", self.process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Prometheus:
    """deploy/prometheus/prometheus.yml pointed at a gradwatch service and an Alertmanager on loopback."""

    def __init__(self, service_ports: list[int], alertmanager_port: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gw-prom-"))
        shutil.copytree(DEPLOY / "prometheus" / "rules", self.dir / "rules")
        config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
        targets = ", ".join(f'"127.0.0.1:{port}"' for port in service_ports)
        assert '["127.0.0.1:8617"]' in config
        config = config.replace('["127.0.0.1:8617"]', f"[{targets}]")
        config = config.replace("127.0.0.1:9093", f"127.0.0.1:{alertmanager_port}")
        (self.dir / "prometheus.yml").write_text(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_ready(f"{self.url}/-/ready", self.process)

    def query(self, promql: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())["data"]["result"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
