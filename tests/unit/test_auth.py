"""Access control and TLS: bearer tokens on ingest and the API, open /healthz, JSON only, HTTPS."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import ssl
import urllib.error
import urllib.request

import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer
from torch import nn

import gradwatch
from gradwatch.service.aggregator import Aggregator
from gradwatch.service.auth import (
    AuthError,
    Token,
    is_loopback,
    listen_policy_error,
    load_token,
    ssl_context,
)
from gradwatch.service.backends import LocalBackend
from gradwatch.service.config import ServiceConfig
from gradwatch.service.http import make_app
from tests.unit.live_app import LiveApp, self_signed_cert

SECRET = "s3cr3t-Tok3n-value-0123456789"
REPORT = json.dumps({"v": 1, "run": "auth", "steps": [{"step": 0, "loss": 1.0}]}).encode()
JSON = {"Content-Type": "application/json"}


def _app(token: str | None = SECRET, protect_metrics: bool = False):
    aggregator = Aggregator()
    app = make_app(
        LocalBackend(aggregator),
        ServiceConfig(),
        token=Token(token) if token else None,
        protect_metrics=protect_metrics,
    )
    return app, aggregator


def _run(scenario):
    asyncio.run(scenario())


@pytest.mark.parametrize("protect_metrics", [False, True])
def test_every_route_but_healthz_needs_the_token(protect_metrics):
    async def scenario():
        app, aggregator = _app(protect_metrics=protect_metrics)
        async with TestClient(TestServer(app)) as client:
            good = {"Authorization": f"Bearer {SECRET}", **JSON}
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": SECRET}, {"X-Token": SECRET}):
                response = await client.post("/v1/reports", data=REPORT, headers={**headers, **JSON})
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert "bearer token" in (await response.json())["error"]
                for path in ("/v1/runs", "/v1/runs/auth/diagnoses", "/v1/runs/auth/layers", "/"):
                    assert (await client.get(path, headers=headers)).status == 401, path
            assert aggregator.runs() == []  # nothing got in
            assert (await client.get("/healthz")).status == 200
            metrics = await client.get("/metrics")
            assert metrics.status == (401 if protect_metrics else 200)
            assert (await client.post("/v1/reports", data=REPORT, headers=good)).status == 202
            assert (
                await client.post("/v1/reports", data=REPORT, headers={**good, "Authorization": f"bearer  {SECRET}"})
            ).status == 202
            runs = await client.get("/v1/runs", headers=good)
            assert runs.status == 200 and (await runs.json())[0]["run"] == "auth"
            text = await (await client.get("/metrics", headers=good)).text()
            assert 'gradwatch_ingest_rejected_reports_total{reason="unauthorized"} 4.0' in text
            assert SECRET not in text

    _run(scenario)


def test_without_a_token_the_api_is_open_as_before():
    async def scenario():
        app, _ = _app(token=None)
        async with TestClient(TestServer(app)) as client:
            assert (await client.post("/v1/reports", data=REPORT, headers=JSON)).status == 202
            assert (await client.get("/v1/runs")).status == 200

    _run(scenario)


def test_ingest_reads_json_only_never_pickle():
    async def scenario():
        app, aggregator = _app(token=None)
        pickled = pickle.dumps({"v": 1, "run": "p", "steps": [{"step": 0}]})
        async with TestClient(TestServer(app)) as client:
            for content_type in (
                "application/python-pickle",
                "application/x-pickle",
                "application/yaml",
                "application/msgpack",
                "multipart/form-data; boundary=x",
            ):
                response = await client.post("/v1/reports", data=REPORT, headers={"Content-Type": content_type})
                assert response.status == 415, content_type
                assert "application/json" in (await response.json())["error"]
            response = await client.post("/v1/reports", data=pickled, headers=JSON)
            assert response.status == 400 and "not valid JSON" in (await response.json())["error"]
            # A body without a declared type is still read as JSON (curl -d, simple clients).
            assert (await client.post("/v1/reports", data=REPORT)).status == 202
            assert [r["run"] for r in aggregator.runs()] == ["auth"]
            text = await (await client.get("/metrics")).text()
            assert 'gradwatch_ingest_rejected_reports_total{reason="content_type"} 5.0' in text

    _run(scenario)


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("gradwatch.internal", False),
    ],
)
def test_only_loopback_hosts_may_listen_without_a_token(host, loopback):
    assert is_loopback(host) is loopback
    error = listen_policy_error(host, None, insecure=False)
    assert (error is None) is loopback
    if error:
        assert "--token-file" in error and "--insecure" in error and "\n" not in error
    assert listen_policy_error(host, Token("t"), insecure=False) is None
    assert listen_policy_error(host, None, insecure=True) is None


def test_tokens_load_from_a_file_or_the_environment_and_never_show(tmp_path):
    path = tmp_path / "token"
    path.write_text(f"  {SECRET}\n")
    token = load_token(str(path), environ={"GRADWATCH_TOKEN": "other"})
    assert token is not None and token.matches(SECRET) and not token.matches("other")
    assert not token.matches(SECRET[:-1]) and not token.matches("")
    assert SECRET not in repr(token) and SECRET not in str(token) and SECRET not in f"{token}"
    assert load_token(None, environ={"GRADWATCH_TOKEN": SECRET}).matches(SECRET)
    assert load_token(None, environ={}) is None
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(AuthError, match="empty"):
        load_token(str(empty), environ={})
    with pytest.raises(AuthError, match="cannot read token file"):
        load_token(str(tmp_path / "missing"), environ={})
    with pytest.raises(AuthError, match="one line"):
        Token("two words")


def test_agent_options_hide_the_token(monkeypatch):
    monkeypatch.setenv("GRADWATCH_TOKEN", SECRET)
    options = gradwatch.AgentOptions()
    assert options.token is not None and options.token.get_secret_value() == SECRET
    assert SECRET not in repr(options) and SECRET not in str(options.model_dump())


def _train(mon, model, optimizer, steps):
    for _ in range(steps):
        loss = model(torch.randn(4, 3)).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mon.step(loss)


def test_agent_sends_the_token_and_a_wrong_one_is_one_warning_not_an_exception(caplog):
    app, aggregator = _app()
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with LiveApp(app) as live, caplog.at_level(logging.DEBUG):
        mon = gradwatch.watch(model, optimizer, run="agent-ok", endpoint=live.url, token=SECRET, flush_interval=0.01)
        _train(mon, model, optimizer, 30)
        mon.close(timeout=5)
        assert mon.delivered == 30 and mon.dropped == 0
        bad = gradwatch.watch(model, optimizer, run="agent-bad", endpoint=live.url, token="nope", flush_interval=0.01)
        _train(bad, model, optimizer, 30)
        bad.close(timeout=5)
        assert bad.delivered == 0 and bad.dropped == 30
    assert [r["run"] for r in aggregator.runs()] == ["agent-ok"]
    warnings = [r.getMessage() for r in caplog.records if "refused this agent's token" in r.getMessage()]
    assert len(warnings) == 1 and "HTTP 401" in warnings[0]
    assert not any(SECRET in r.getMessage() or "nope" in r.getMessage() for r in caplog.records)


def test_https_with_a_self_signed_certificate(tmp_path, caplog):
    cert, key = self_signed_cert(tmp_path)
    app, aggregator = _app()
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with LiveApp(app, ssl_context(str(cert), str(key))) as live:
        assert live.url.startswith("https://")
        mon = gradwatch.watch(
            model, optimizer, run="tls", endpoint=live.url, token=SECRET, ca_file=str(cert), flush_interval=0.01
        )
        _train(mon, model, optimizer, 20)
        mon.close(timeout=5)
        assert mon.delivered == 20
        # A client that does not trust the certificate gets nowhere, and training still runs.
        with caplog.at_level(logging.WARNING, logger="gradwatch.agent"):
            untrusting = gradwatch.watch(
                model,
                optimizer,
                run="tls-untrusted",
                endpoint=live.url,
                token=SECRET,
                flush_interval=0.01,
                max_backoff=0.05,
            )
            _train(untrusting, model, optimizer, 20)
            untrusting.close(timeout=1)
        assert untrusting.delivered == 0 and untrusting.dropped == 20
        assert any("CERTIFICATE_VERIFY_FAILED" in r.getMessage() for r in caplog.records)
        # Plain HTTP to the TLS port is not served.
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(live.url.replace("https", "http") + "/healthz", timeout=5)
        context = ssl.create_default_context(cafile=str(cert))
        request = urllib.request.Request(live.url + "/v1/runs", headers={"Authorization": f"Bearer {SECRET}"})
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            assert [r["run"] for r in json.loads(response.read())] == ["tls"]
    assert [r["run"] for r in aggregator.runs()] == ["tls"]


def test_tls_needs_both_files(tmp_path):
    with pytest.raises(AuthError, match="both"):
        ssl_context(str(tmp_path / "cert.pem"), None)
    with pytest.raises(AuthError, match="cannot load"):
        ssl_context(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    assert ssl_context(None, None) is None
