"""Bad input to POST /v1/reports gets a 4xx with a reason, and the service keeps serving."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

GOOD = {"v": 1, "run": "it-bad-input", "steps": [{"step": 0, "loss": 1.0}]}


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"", 400, "empty body"),
        (b"this is not json", 400, "not valid JSON"),
        (b'{"run": "x", ', 400, "not valid JSON"),
        (b"[1, 2, 3]", 422, "wire schema"),
        (json.dumps({"run": "r", "steps": "many"}).encode(), 422, "steps"),
        (json.dumps({"run": "r", "steps": [{"step": "zero"}]}).encode(), 422, "step"),
        (json.dumps({"run": "r", "v": 99, "steps": []}).encode(), 400, "schema version"),
        (json.dumps({"run": "x" * 10_000, "steps": []}).encode(), 422, "run"),
        (json.dumps({"run": "<script>alert(1)</script>", "steps": []}).encode(), 422, "run"),
        (json.dumps({"run": "a\nb", "steps": []}).encode(), 422, "run"),
        (
            json.dumps(
                {
                    "run": "r",
                    "steps": [
                        {
                            "step": 0,
                            "layers": {
                                "names": ["a"],
                                "numel": [1],
                                "grad_norm": [],
                                "grad_max_abs": [],
                                "weight_norm": [],
                                "weight_max_abs": [],
                            },
                        }
                    ],
                }
            ).encode(),
            422,
            "layers",
        ),
        (b"\xff\xfe\x00garbage", 400, "not valid JSON"),
    ],
)
def test_bad_reports_get_a_4xx_with_a_reason(http, body, status, fragment):
    got, raw = http.request("POST", "/v1/reports", body, {"Content-Type": "application/json"})
    assert got == status, raw
    reply = json.loads(raw)
    text = reply["error"] + " " + " ".join(reply.get("details", []))
    assert fragment in text


def test_oversized_body_is_413_and_the_service_still_serves(http, service):
    limit = service.service.config.limits.max_body_bytes
    got, raw = http.request("POST", "/v1/reports", b" " * (limit + 1), {"Content-Type": "application/json"})
    assert got == 413, raw
    assert "max_body_bytes" in json.loads(raw)["error"]
    got, _ = http.request("POST", "/v1/reports", json.dumps(GOOD).encode(), {"Content-Type": "application/json"})
    assert got == 202


def test_absurd_run_name_in_the_path_is_400(http):
    status, body = http.get_json("/v1/runs/%3Cscript%3E/diagnoses")
    assert status == 400 and "invalid run name" in body["error"]


def test_a_burst_of_bad_reports_loses_none_of_the_good_ones(http):
    for i in range(50):
        http.request("POST", "/v1/reports", b"{broken", {"Content-Type": "application/json"})
        good = {"v": 1, "run": "it-burst", "steps": [{"step": i, "loss": 1.0 / (i + 1)}]}
        status, _ = http.request("POST", "/v1/reports", json.dumps(good).encode(), {"Content-Type": "application/json"})
        assert status == 202
    status, runs = http.get_json("/v1/runs")
    entry = next(r for r in runs if r["run"] == "it-burst")
    assert entry["reports"] == 50 and entry["step"] == 49
    metrics = http.metrics()
    assert 'gradwatch_ingest_rejected_reports_total{reason="invalid_json"}' in metrics
