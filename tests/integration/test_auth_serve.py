"""gradwatch serve with access control as an operator runs it: refusals, token, TLS, nothing secret logged."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.integration.external import binary, free_port, wait_ready
from tests.integration.test_cli import _wait_healthy, ray_tmp  # noqa: F401 - fixture
from tests.unit.live_app import self_signed_cert

pytestmark = pytest.mark.integration

GRADWATCH = [sys.executable, "-m", "gradwatch.cli"]
SECRET = "op-Token-7f3a9c2e5b1d"


def _serve(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*GRADWATCH, "serve", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3"])
def test_serve_refuses_a_non_loopback_address_without_a_token(host):
    env = {k: v for k, v in os.environ.items() if k != "GRADWATCH_TOKEN"}
    result = subprocess.run([*GRADWATCH, "serve", "--host", host], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "refusing to listen" in lines[0] and "--token-file" in lines[0] and "--insecure" in lines[0]


def test_serve_refuses_half_configured_security(tmp_path):
    assert "--protect-metrics needs a token" in _serve("--protect-metrics").stderr
    assert "both --tls-cert and --tls-key" in _serve("--tls-cert", str(tmp_path / "c.pem")).stderr
    empty = tmp_path / "token"
    empty.write_text("")
    result = _serve("--token-file", str(empty))
    assert result.returncode == 2 and "empty" in result.stderr


def test_serve_with_token_and_tls_over_the_real_service(tmp_path, ray_tmp):  # noqa: F811
    cert, key = self_signed_cert(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    port = free_port()
    process = subprocess.Popen(
        [
            *GRADWATCH,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--token-file",
            str(token_file),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--protect-metrics",
            "--log-level",
            "DEBUG",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        env={**os.environ, "RAY_TMPDIR": str(ray_tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    context = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{port}"

    def call(path: str, token: str | None, body: bytes | None = None) -> int | None:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None  # not listening yet

    try:
        deadline = time.monotonic() + 90
        while call("/healthz", None) != 200:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "gradwatch serve did not become healthy"
            time.sleep(0.5)
        report = json.dumps({"v": 1, "run": "tls-run", "steps": [{"step": 0, "loss": 1.0}]}).encode()
        assert call("/v1/reports", None, report) == 401
        assert call("/v1/reports", "wrong-" + SECRET, report) == 401
        assert call("/v1/reports", SECRET, report) == 202
        assert call("/v1/runs", None) == 401 and call("/v1/runs", SECRET) == 200
        assert call("/metrics", None) == 401 and call("/metrics", SECRET) == 200
        _scrape_with_the_documented_prometheus_config(tmp_path, port, token_file, cert)
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert f"serving on {url}" in output
    assert SECRET not in output  # not even at DEBUG
    assert (tmp_path / "state" / "default" / "aggregator.snapshot").exists()  # the snapshot written on the way out


def _scrape_with_the_documented_prometheus_config(tmp_path: Path, port: int, token_file: Path, cert: Path) -> None:
    """Real Prometheus, configured with docs/operations.md's snippet, scrapes the protected HTTPS /metrics."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    snippet = re.search(r"### Prometheus with a protected `/metrics`\n\n```yaml\n(.*?)```", doc, re.S).group(1)
    config = (
        snippet.replace("/etc/prometheus/gradwatch.token", str(token_file))
        .replace("/etc/prometheus/gradwatch-ca.pem", str(cert))
        .replace("gradwatch.internal:8617", f"127.0.0.1:{port}")
    )
    config = "global:\n  scrape_interval: 1s\n" + config
    (tmp_path / "prometheus.yml").write_text(config)
    prom_port = free_port()
    prometheus = subprocess.Popen(
        [
            binary("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_ready(f"http://127.0.0.1:{prom_port}/-/ready", prometheus)
        query = urllib.parse.urlencode({"query": 'gradwatch_run_steps_total{run="tls-run"}'})
        deadline = time.monotonic() + 30
        result: list = []
        while not result and time.monotonic() < deadline:
            time.sleep(0.5)
            with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query?{query}", timeout=5) as response:
                result = json.loads(response.read())["data"]["result"]
        assert result and result[0]["value"][1] == "1", "Prometheus did not scrape the protected /metrics"
    finally:
        prometheus.terminate()
        prometheus.wait(10)
