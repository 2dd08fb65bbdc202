"""The packed encoding: the agent's bytes read back as the very arrays a JSON body gives, and bad bodies refused."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gradwatch.agents import packed as agent_packed
from gradwatch.service.columns import ColumnarReport, LayoutCache
from gradwatch.service.packed import PackedError, decode
from gradwatch.wire import PACKED_MAGIC, Report

ENVELOPE = {"v": 1, "run": "packed-run", "rank": 1, "world_size": 2, "session": "s1", "dropped": 3}


def _layers(names, values, update=None):
    n = len(names)
    layers = {
        "names": names,
        "numel": [7 * (i + 1) for i in range(n)],
        "grad_norm": values[:n],
        "grad_max_abs": values[n : 2 * n] or [1.0] * n,
        "weight_norm": [2.0] * n,
        "weight_max_abs": [0.5] * n,
    }
    if update is not None:
        layers["update_ratio"] = update
    return layers


def _assert_same(packed: ColumnarReport, json_path: ColumnarReport) -> None:
    assert packed.report.model_dump_json() == json_path.report.model_dump_json()  # NaN != NaN in ==
    assert len(packed.rows) == len(json_path.rows)
    for a, b in zip(packed.rows, json_path.rows, strict=True):
        if b is None:
            assert a is None
            continue
        assert a.names == b.names and a.numel.tolist() == b.numel.tolist()
        np.testing.assert_array_equal(a.values, b.values)  # NaN == NaN here: the slots match one for one
        np.testing.assert_array_equal(a.present, b.present)
        assert a.has_update_ratio == b.has_update_ratio
        assert a.grad_missing == b.grad_missing


def _both(steps, envelope=ENVELOPE):
    body = agent_packed.encode(envelope, steps)
    from_json = ColumnarReport.of(Report.model_validate_json(json.dumps({**envelope, "steps": steps})))
    return decode(body, LayoutCache()), from_json


floats = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308]),
)


@settings(max_examples=200, deadline=None)
@given(
    widths=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    data=st.data(),
)
def test_packed_and_json_give_the_same_arrays(widths, data):
    steps = []
    for step, width in enumerate(widths):
        record = {"step": 10 + step, "loss": data.draw(floats), "grad_norm": data.draw(floats)}
        if data.draw(st.booleans()):
            # Two widths of one model share a layout; another width is another model.
            names = [f"block.{i}" for i in range(width)]
            values = data.draw(st.lists(floats, min_size=2 * width, max_size=2 * width))
            update = data.draw(st.one_of(st.none(), st.lists(floats, min_size=width, max_size=width)))
            record["layers"] = _layers(names, values, update)
            missing = data.draw(st.one_of(st.none(), st.lists(st.integers(0, max(width - 1, 0)), unique=True)))
            if missing is not None and width:
                record["layers"]["grad_missing"] = sorted(missing)
        steps.append(record)
    _assert_same(*_both(steps))


def test_null_stays_not_measured_and_nan_stays_data():
    steps = [
        {"step": 0, "layers": _layers(["a", "b", "c"], [1.0, None, math.nan, 2.0, None, math.inf], [None, 0.1, 0.2])}
    ]
    packed, from_json = _both(steps)
    _assert_same(packed, from_json)
    row = packed.rows[0]
    assert row.grad_norm.present.tolist() == [True, False, True]
    assert math.isnan(row.grad_norm.values[2]) and row.grad_max_abs.values[2] == math.inf
    assert row.update_ratio is not None and row.update_ratio.present.tolist() == [False, True, True]


def test_layers_missing_a_gradient_travel_in_both_encodings_and_an_index_past_the_layers_is_refused():
    layers = {**_layers(["a", "b", "c"], [None, 1.0, None] * 2), "grad_missing": [0, 2]}
    packed, from_json = _both([{"step": 0, "layers": layers}])
    _assert_same(packed, from_json)
    assert packed.rows[0].grad_missing == (0, 2)
    for bad in ([3], [-1]):
        steps = [{"step": 0, "layers": {**layers, "grad_missing": bad}}]
        with pytest.raises(ValueError, match="grad_missing"):
            agent_packed.encode(ENVELOPE, steps)
        with pytest.raises(ValidationError, match="grad_missing"):
            Report.model_validate({**ENVELOPE, "steps": steps})


def test_rows_of_one_model_carry_its_names_once_and_the_service_reads_them_once():
    names = [f"encoder.layers.{i}.attn.q_proj" for i in range(200)]
    one = agent_packed.encode(ENVELOPE, [{"step": 0, "layers": _layers(names, [1.0] * 400)}])
    two = agent_packed.encode(ENVELOPE, [{"step": s, "layers": _layers(names, [float(s)] * 400)} for s in range(2)])
    layout_bytes = len(("\x00".join(names)).encode()) + 8 * len(names)
    assert len(two) - len(one) < layout_bytes  # the second row added its values, not the names again
    layouts = LayoutCache()
    first, second = decode(one, layouts), decode(two, layouts)
    assert second.rows[0].names is first.rows[0].names is second.rows[1].names
    assert not second.rows[0].numel.flags.writeable  # shared between reports: nobody may write into it


def test_a_layer_name_holding_nul_is_left_to_json():
    with pytest.raises(agent_packed.NotPackable):
        agent_packed.encode(ENVELOPE, [{"step": 0, "layers": _layers(["a\x00b"], [1.0, 1.0])}])


def test_the_agent_refuses_what_json_would_refuse():
    with pytest.raises(ValidationError):
        agent_packed.encode({**ENVELOPE, "run": "no spaces allowed"}, [{"step": 0}])
    with pytest.raises(ValueError, match="grad_norm has 1 entries"):
        agent_packed.encode(ENVELOPE, [{"step": 0, "layers": {**_layers(["a", "b"], [1.0] * 4), "grad_norm": [1.0]}}])


# --- bad bodies ----------------------------------------------------------------------------------------------------


def _body(header: dict, *blocks: bytes) -> bytes:
    head = json.dumps(header).encode()
    return PACKED_MAGIC + struct.pack("<I", len(head)) + head + b"".join(blocks)


def _layout(*names: str) -> bytes:
    return "\x00".join(names).encode() + np.arange(1, len(names) + 1, dtype="<i8").tobytes()


GOOD_HEADER = {
    "report": {"run": "r", "steps": [{"step": 0}]},
    "layouts": [{"layers": 2, "names_bytes": 3}],
    "rows": [{"step": 0, "layout": 0}],
}
GOOD_ROW = np.ones(8, dtype="<f8").tobytes()


def test_the_hand_built_body_these_cases_start_from_is_valid():
    report = decode(_body(GOOD_HEADER, _layout("a", "b"), GOOD_ROW), LayoutCache())
    assert report.rows[0].names == ("a", "b") and report.rows[0].numel.tolist() == [1, 2]


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"GWP", 400, "must start with"),
        (b'{"run": "r", "steps": []}', 400, "must start with"),
        (PACKED_MAGIC + struct.pack("<I", 10_000) + b"{}", 400, "runs past the body"),
        (_body(GOOD_HEADER, _layout("a", "b")), 422, "rows[0] runs past"),
        (_body(GOOD_HEADER, _layout("a", "b")[:-3]), 422, "layouts[0] runs past"),
        (_body(GOOD_HEADER, _layout("a", "b"), GOOD_ROW, b"\x00"), 422, "1 bytes after the last row"),
        (
            _body({**GOOD_HEADER, "layouts": [{"layers": 2, "names_bytes": 1}]}, b"a" + _layout("b")[1:], GOOD_ROW),
            422,
            "1 names for 2",
        ),
        (_body(GOOD_HEADER, _layout("a", "a")[:3] + _layout("a", "a")[3:], GOOD_ROW), 422, "unique"),
        (_body(GOOD_HEADER, b"\xff\x00b" + _layout("a", "b")[3:], GOOD_ROW), 422, "not UTF-8"),
        (_body(GOOD_HEADER, b"a\x00b" + np.array([1, -5], dtype="<i8").tobytes(), GOOD_ROW), 422, "element counts"),
        (_body({**GOOD_HEADER, "layouts": [{"layers": 0, "names_bytes": 1}], "rows": []}, b"a"), 422, "names for 0"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(body, status, fragment):
    with pytest.raises(PackedError) as raised:
        decode(body, LayoutCache())
    assert raised.value.status == status and fragment in raised.value.reason, raised.value.reason


@pytest.mark.parametrize(
    "header, fragment",
    [
        ({**GOOD_HEADER, "rows": [{"step": 1, "layout": 0}]}, "past the report's 1 steps"),
        ({**GOOD_HEADER, "rows": [{"step": 0, "layout": 1}]}, "past the 1 layouts"),
        ({**GOOD_HEADER, "rows": [{"step": 0, "layout": 0}, {"step": 0, "layout": 0}]}, "already has a row"),
        ({**GOOD_HEADER, "rows": [{"step": 0, "layout": 0, "absent": {"grad_norm": [2]}}]}, "index past"),
        ({**GOOD_HEADER, "rows": [{"step": 0, "layout": 0, "absent": {"update_ratio": [0]}}]}, "does not carry"),
        ({**GOOD_HEADER, "rows": [{"step": 0, "layout": 0, "grad_missing": [1, 2]}]}, "grad_missing has an index past"),
        ({**GOOD_HEADER, "rows": [{"step": 0, "layout": 0, "absent": {"loss": [0]}}]}, "absent"),
        ({**GOOD_HEADER, "report": {"run": "bad run", "steps": [{"step": 0}]}}, "report.run"),
        ({**GOOD_HEADER, "extra": 1}, "extra"),
    ],
)
def test_bad_headers_are_schema_errors(header, fragment):
    with pytest.raises(ValidationError) as raised:
        decode(_body(header, _layout("a", "b"), GOOD_ROW), LayoutCache())
    assert fragment in str(raised.value), str(raised.value)


def test_a_signalling_nan_from_the_wire_becomes_a_quiet_one():
    signalling = struct.pack("<Q", 0x7FF0000000000001)  # exponent all ones, quiet bit clear
    row = np.frombuffer(GOOD_ROW, dtype="<f8").copy()
    body = _body(GOOD_HEADER, _layout("a", "b"), signalling + row[1:].tobytes())
    values = decode(body, LayoutCache()).rows[0].values
    assert math.isnan(values[0, 0])
    assert values[:, :1].view(np.uint64)[0, 0] == np.array([np.nan]).view(np.uint64)[0]
    with np.errstate(all="raise"):
        values * values  # a signalling NaN would raise here
