"""The gradwatch command as a user runs it: serve (with clean shutdown) and demo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

GRADWATCH = [sys.executable, "-m", "gradwatch.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_mentioning(text: str) -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                out.append(f"{entry.name}: {cmdline[:200]}")
    return out


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gradwatch serve exited early: {process.communicate()[0]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail("gradwatch serve did not become healthy")


@pytest.fixture
def ray_tmp():
    # Ray's socket paths must stay under 107 bytes: pytest's tmp_path is too deep.
    path = Path(tempfile.mkdtemp(prefix="gw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_serve_ingests_and_shuts_down_on_sigterm_without_orphans(ray_tmp):
    port = _free_port()
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    process = subprocess.Popen(
        [*GRADWATCH, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        assert _processes_mentioning(str(ray_tmp)), "the embedded Ray instance should run under RAY_TMPDIR"
        report = {
            "v": 1,
            "run": "cli-run",
            "steps": [{"step": s, "loss": float("nan") if s == 3 else 1.0} for s in range(5)],
        }
        body = json.dumps(report).encode()  # Python writes NaN as the NaN constant the schema reads
        request = urllib.request.Request(url + "/v1/reports", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
        with urllib.request.urlopen(url + "/v1/runs/cli-run/diagnoses", timeout=10) as response:
            items = json.loads(response.read())
        assert [(i["symptom"], i["step"]) for i in items] == [("nonfinite", 3)]
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert "DIAGNOSIS run=cli-run symptom=nonfinite" in output  # the service log names it
    deadline = time.monotonic() + 20
    while _processes_mentioning(str(ray_tmp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_mentioning(str(ray_tmp)) == []


def test_serve_rejects_a_bad_config_file_with_the_key_named(tmp_path):
    config = tmp_path / "gradwatch.toml"
    config.write_text("[rules.loss_spike]\nz_treshold = 3\n")
    result = subprocess.run([*GRADWATCH, "serve", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "z_treshold" in result.stderr


def test_help_explains_the_commands():
    result = subprocess.run([*GRADWATCH, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "serve" in result.stdout and "demo" in result.stdout
    result = subprocess.run([*GRADWATCH, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert "--address" in result.stdout and "--config" in result.stdout


def test_demo_finishes_on_its_own_within_two_minutes_and_shows_diagnoses(ray_tmp):
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    started = time.monotonic()
    result = subprocess.run([*GRADWATCH, "demo"], capture_output=True, text=True, timeout=170, env=env)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 120, f"demo took {elapsed:.0f} s"
    out = result.stdout
    for run, symptom in [
        ("demo-vanishing", "vanishing_gradient"),
        ("demo-exploding", "exploding_gradient"),
        ("demo-nan", "nonfinite"),
    ]:
        assert any(run in line and symptom in line and "DIAGNOSIS" in line for line in out.splitlines()), out
    assert "evidence:" in out and "advice:" in out and "/metrics" in out
    assert not any("DIAGNOSIS" in line and "demo-healthy" in line for line in out.splitlines())


def test_serve_rejects_a_bad_alertmanager_url():
    result = subprocess.run(
        [*GRADWATCH, "serve", "--alertmanager", "ftp://am:9093"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "must start with http:// or https://" in result.stderr
