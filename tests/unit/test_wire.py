"""The wire schema: NaN/Inf survive the trip, bad reports are refused with a reason."""

import json
import math

import pytest
from pydantic import ValidationError

from gradwatch.wire import LayerStats, Report, StepRecord, is_valid_run_name


def _layers(**overrides):
    fields = dict(
        names=["enc.0", "enc.1"],
        numel=[10, 20],
        grad_norm=[1.0, None],
        grad_max_abs=[0.5, None],
        weight_norm=[2.0, 3.0],
        weight_max_abs=[1.0, 1.5],
    )
    fields.update(overrides)
    return LayerStats(**fields)


def test_non_finite_values_round_trip_losslessly():
    report = Report(
        run="r1",
        steps=[
            StepRecord(step=0, loss=math.nan, val_loss=math.inf, lr=-math.inf, scalars={"acc": math.nan}),
            StepRecord(
                step=1, loss=1.5, layers=_layers(grad_norm=[math.inf, None], weight_max_abs=[math.nan, -math.inf])
            ),
        ],
    )
    text = report.model_dump_json()
    back = Report.model_validate_json(text)
    first, second = back.steps
    assert math.isnan(first.loss) and first.val_loss == math.inf and first.lr == -math.inf
    assert math.isnan(first.scalars["acc"])
    assert second.layers.grad_norm == [math.inf, None]
    assert math.isnan(second.layers.weight_max_abs[0]) and second.layers.weight_max_abs[1] == -math.inf
    # The same text is readable by Python's json module, the other likely client.
    assert math.isnan(json.loads(text)["steps"][0]["loss"])


def test_null_means_absent_not_nan():
    back = Report.model_validate_json(Report(run="r", steps=[StepRecord(step=3, layers=_layers())]).model_dump_json())
    assert back.steps[0].layers.grad_norm[1] is None


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ({"run": "", "steps": []}, "run"),
        ({"run": "bad name with spaces", "steps": []}, "run"),
        ({"run": "x" * 129, "steps": []}, "run"),
        ({"run": "../../etc", "steps": []}, "run"),
        ({"run": "r", "steps": [{"step": -1}]}, "step"),
        ({"run": "r", "rank": 4, "world_size": 4, "steps": []}, "rank 4"),
        ({"run": "r", "v": 2, "steps": []}, "v"),
        ({"run": "r", "steps": [], "surprise": 1}, "surprise"),
        ({"run": "r", "steps": [{"step": 0, "scalars": {"bad name": 1.0}}]}, "scalar name"),
    ],
)
def test_bad_reports_are_refused_with_the_field_named(payload, fragment):
    with pytest.raises(ValidationError) as info:
        Report.model_validate_json(json.dumps(payload))
    assert fragment in str(info.value)


def test_layer_columns_must_align():
    with pytest.raises(ValidationError, match="grad_norm has 1 entries"):
        _layers(grad_norm=[1.0])
    with pytest.raises(ValidationError, match="unique"):
        _layers(names=["a", "a"])


@pytest.mark.parametrize(
    "name, ok", [("resnet-lr0.1", True), ("team/exp:42@v2", True), ("-x", False), ("a b", False), ("é", False)]
)
def test_run_names(name, ok):
    assert is_valid_run_name(name) is ok
