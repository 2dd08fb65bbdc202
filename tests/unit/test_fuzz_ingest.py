"""Property-based fuzzing of POST /v1/reports against the real HTTP app and a real Aggregator.

Garbage bytes, arbitrary JSON, packed bodies whole, cut short and with bytes flipped, mutated valid reports (wrong types, huge numbers, unicode names,
missing and extra keys) and hostile headers, with a valid report sent between them: the service
must answer every one with a 2xx or a 4xx (never a 5xx, never a crash), keep every valid report,
and still expose /metrics that Prometheus' own checker accepts.

``GRADWATCH_FUZZ_EXAMPLES`` sets the number of generated payloads (default 10,000).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import shutil
import subprocess
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gradwatch.agents import packed
from gradwatch.service.aggregator import Aggregator
from gradwatch.service.backends import LocalBackend
from gradwatch.service.config import LimitsConfig, ServiceConfig
from gradwatch.service.http import make_app
from gradwatch.wire import PACKED_CONTENT_TYPE

EXAMPLES = int(os.environ.get("GRADWATCH_FUZZ_EXAMPLES", "10000"))
LEDGER_RUN = "fuzz-ledger"  # the run of the valid reports sent between fuzzed ones
VALID_EVERY = 10

# --- strategies ----------------------------------------------------------------------------------------------------
# Hypothesis draws the kind of payload and a seed; the payload is then built with random.Random(seed). Drawing
# every field through Hypothesis costs ~40 ms an example on a CI runner, this well under 1 ms, and a failure
# still reproduces (the seed is part of the example).

HUGE = [2**63, -(2**63) - 1, 10**30, 1e308, -1e308, 5e-324, math.nan, math.inf, -math.inf, -1, 0, 2**31, 10**400]
ODD_NAMES = [
    "a\nb",
    'q"uote',
    "back\\slash",
    "\x00",
    "\r\n",
    "../../etc",
    "<script>",
    "é-run",
    "𝔘𝔫𝔦",
    "",
    " ",
    "x" * 300,
]
RUN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@+=/-"


def _name(rnd: random.Random) -> str:
    kind = rnd.random()
    if kind < 0.3:
        return rnd.choice(ODD_NAMES)
    if kind < 0.6:  # any code point, surrogates and controls included
        return "".join(chr(rnd.randrange(0x110000)) for _ in range(rnd.randrange(1, 12)))
    return "".join(rnd.choice(RUN_ALPHABET) for _ in range(rnd.randrange(1, 16)))


def _float(rnd: random.Random) -> float | None:
    kind = rnd.random()
    if kind < 0.1:
        return None
    if kind < 0.2:
        return rnd.choice([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324])
    return rnd.uniform(-1e3, 1e3) * 10 ** rnd.randrange(-20, 20)


def _value(rnd: random.Random, depth: int = 0):
    kind = rnd.randrange(8 if depth < 3 else 6)
    return [
        lambda: None,
        lambda: rnd.random() < 0.5,
        lambda: rnd.choice(HUGE),
        lambda: _float(rnd),
        lambda: _name(rnd),
        lambda: rnd.randrange(-(2**70), 2**70),
        lambda: [_value(rnd, depth + 1) for _ in range(rnd.randrange(4))],
        lambda: {_name(rnd): _value(rnd, depth + 1) for _ in range(rnd.randrange(4))},
    ][kind]()


def _valid_report(rnd: random.Random) -> dict:
    width = rnd.randrange(7)
    layer_names = list(dict.fromkeys(_name(rnd)[:256] or "l" for _ in range(width)))
    width = len(layer_names)
    steps = []
    for step in sorted(rnd.sample(range(10**6), rnd.randrange(6))):
        record: dict = {"step": step, "loss": _float(rnd), "lr": _float(rnd)}
        if width and rnd.random() < 0.5:
            record["layers"] = {"names": layer_names, "numel": [rnd.randrange(10**9) for _ in range(width)]}
            for column in ("grad_norm", "grad_max_abs", "weight_norm", "weight_max_abs"):
                record["layers"][column] = [_float(rnd) for _ in range(width)]
        steps.append(record)
    return {
        "v": 1,
        "run": "fz-" + "".join(rnd.choice(RUN_ALPHABET) for _ in range(rnd.randrange(1, 30))),
        "rank": rnd.randrange(4),
        "world_size": 4,
        "host": _name(rnd)[:200],
        "session": _name(rnd)[:10],
        "steps": steps,
    }


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _mutated_report(rnd: random.Random) -> dict:
    report = _valid_report(rnd)
    for _ in range(rnd.randrange(1, 4)):
        paths = [p for p in _paths(report) if p]
        path = rnd.choice(paths)
        parent = report
        for key in path[:-1]:
            parent = parent[key]
        action = rnd.choice(["replace", "delete", "add", "huge", "duplicate"])
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[_name(rnd)] = _value(rnd)
        elif action == "huge":
            parent[path[-1]] = rnd.choice(HUGE)
        elif action == "duplicate" and isinstance(parent, list):
            parent.extend([parent[path[-1]]] * rnd.randrange(1, 50))
        else:
            parent[path[-1]] = _value(rnd)
    return report


def _dump(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


def _packed(rnd: random.Random) -> bytes:
    """A valid report in the agent's packed encoding (a JSON one where only JSON can carry it)."""
    report = _valid_report(rnd)
    try:
        return packed.encode({k: v for k, v in report.items() if k != "steps"}, report["steps"])
    except ValueError:  # a NUL or a lone surrogate in a layer name
        return _dump(report)


def _build(kind: str, rnd: random.Random) -> bytes:
    if kind == "packed":
        return _packed(rnd)
    if kind == "packed_truncated":
        body = _packed(rnd)
        return body[: rnd.randrange(len(body))]
    if kind == "packed_flipped":
        body = bytearray(_packed(rnd))
        for _ in range(rnd.randrange(1, 4)):
            body[rnd.randrange(len(body))] = rnd.randrange(256)
        return bytes(body)
    if kind == "garbage":
        return rnd.randbytes(rnd.randrange(600))
    if kind == "json":
        return _dump(_value(rnd))
    if kind == "valid":
        return _dump(_valid_report(rnd))
    if kind == "truncated":
        body = _dump(_valid_report(rnd))
        return body[: rnd.randrange(len(body))]
    if kind == "flipped":
        body = bytearray(_dump(_valid_report(rnd)))
        for _ in range(rnd.randrange(1, 4)):
            body[rnd.randrange(len(body))] = rnd.randrange(256)
        return bytes(body)
    return _dump(_mutated_report(rnd))


bodies = st.one_of(
    st.tuples(
        st.sampled_from(
            [
                *("garbage", "json", "valid", "truncated", "flipped", "mutated", "mutated", "mutated"),
                *("packed", "packed_truncated", "packed_flipped", "packed_flipped"),
            ]
        ),
        st.integers(0, 2**64 - 1),
    ).map(lambda args: _build(args[0], random.Random(args[1]))),
    st.binary(max_size=64),
    st.sampled_from([b"", b"{", b"[]" * 10_000, b"[" * 5_000 + b"]" * 5_000, b'{"v": 1e999999}', b"\xef\xbb\xbf{}"]),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json",
        "text/plain",
        "application/x-pickle",
        PACKED_CONTENT_TYPE,
        PACKED_CONTENT_TYPE,
        "",
        "application/json; charset=latin-1",
    ]
)


# --- the test ------------------------------------------------------------------------------------------------------


class Harness:
    """One app, one aggregator and one client for the whole run (starting them per example would dominate)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.aggregator = Aggregator(ServiceConfig(limits=LimitsConfig(max_body_bytes=256 * 1024, max_runs=5_000)))
        app = make_app(LocalBackend(self.aggregator), self.aggregator.config)
        self.client = TestClient(TestServer(app), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())
        self.statuses: dict[int, int] = {}
        self.examples = 0
        self.valid_sent = 0
        self.valid_steps = 0
        self.packed_accepted = 0

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        async def call():
            response = await self.client.post("/v1/reports", data=body, headers=headers)
            return response.status, await response.read()

        return self.loop.run_until_complete(call())

    def send_valid(self) -> None:
        step = self.valid_sent
        report = {"v": 1, "run": LEDGER_RUN, "session": "ledger", "steps": [{"step": step, "loss": 1.0 / (step + 1)}]}
        status, raw = self.post(_dump(report), {"Content-Type": "application/json"})
        assert status == 202, raw
        self.valid_sent += 1
        self.valid_steps += 1

    def get(self, path: str) -> tuple[int, str]:
        async def call():
            response = await self.client.get(path)
            return response.status, await response.text()

        return self.loop.run_until_complete(call())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def harness():
    h = Harness()
    yield h
    h.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(body=bodies, content_type=content_types)
def _fuzz(harness: Harness, body: bytes, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    status, raw = harness.post(body, headers)
    harness.statuses[status] = harness.statuses.get(status, 0) + 1
    harness.examples += 1
    harness.packed_accepted += status == 202 and content_type == PACKED_CONTENT_TYPE
    assert status < 500, (status, body[:300], raw[:300])
    assert status in (202, 400, 413, 415, 422, 429), (status, raw[:300])
    reply = json.loads(raw)  # every answer is strict JSON
    assert ("accepted" in reply) if status == 202 else reply["error"]
    if harness.examples % VALID_EVERY == 0:
        harness.send_valid()


def test_fuzzed_reports_get_4xx_and_no_valid_report_is_lost(harness):
    started = time.perf_counter()
    _fuzz(harness)
    elapsed = time.perf_counter() - started
    assert harness.examples >= EXAMPLES
    assert harness.packed_accepted > 0  # packed bodies reached the aggregator, not only the 4xx paths
    # Every valid report sent between the fuzzed ones was kept, once.
    [ledger] = [r for r in harness.aggregator.runs() if r["run"] == LEDGER_RUN]
    assert ledger["reports"] == harness.valid_sent
    assert ledger["step"] == harness.valid_sent - 1
    snapshot = next(r for r in harness.aggregator.snapshot().runs if r.run == LEDGER_RUN)
    assert snapshot.steps_received == harness.valid_steps
    # Whatever got in, /metrics still renders and Prometheus' own checker reads it.
    status, text = harness.get("/metrics")
    assert status == 200
    families = {f.name for f in text_string_to_metric_families(text)}
    assert "gradwatch_loss" in families
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (make system-deps installs it)"
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=120)
    problems = [line for line in (check.stdout + check.stderr).splitlines() if "error" in line.lower()]
    assert not problems, problems[:5]
    print(
        f"\nfuzz: {harness.examples} payloads in {elapsed:.0f} s, statuses {dict(sorted(harness.statuses.items()))}, "
        f"{harness.valid_sent} valid reports between them all kept, {len(harness.aggregator.runs())} runs held"
    )
    assert math.isfinite(elapsed)
