"""Validation of the rule settings: defaults, bad values, unknown keys, TOML."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from gradwatch.service.rules import SYMPTOMS, RulesConfig
from gradwatch.service.rules.config import LossSpikeConfig, OverfittingConfig


def test_every_symptom_has_a_section_with_documented_fields() -> None:
    cfg = RulesConfig()
    assert set(RulesConfig.model_fields) == set(SYMPTOMS)
    for name in SYMPTOMS:
        section = getattr(cfg, name)
        assert isinstance(section, BaseModel)
        for field_name, info in type(section).model_fields.items():
            assert info.description, f"{name}.{field_name} has no description"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("loss_spike.z_threshold", 10.0),
        ("loss_spike.baseline_steps", 50),
        ("loss_spike.min_history", 20),
        ("exploding_gradient.growth_factor", 30.0),
        ("exploding_gradient.weight_growth_factor", 3.0),
        ("exploding_gradient.depth_ratio", 1e3),
        ("exploding_gradient.max_update_ratio", 1.0),
        ("vanishing_gradient.depth_ratio", 1e-3),
        ("vanishing_gradient.patience_rows", 3),
        ("overfitting.min_val_points", 4),
        ("overfitting.patience", 3),
        ("stagnation.window_steps", 16),
        ("stagnation.min_update_ratio", 1e-5),
        ("stagnation.decay_tail_fraction", 0.05),
    ],
)
def test_defaults(path: str, value: Any) -> None:
    section, field_name = path.split(".")
    assert getattr(getattr(RulesConfig(), section), field_name) == value


BAD: list[tuple[dict[str, Any], str]] = [
    ({"loss_spike": {"z_threshold": 0}}, "z_threshold"),
    ({"loss_spike": {"min_rel_jump": -0.1}}, "min_rel_jump"),
    ({"loss_spike": {"recovery_fraction": 1.5}}, "recovery_fraction"),
    ({"exploding_gradient": {"growth_factor": 1.0}}, "growth_factor"),
    ({"exploding_gradient": {"rise_rows": 0}}, "rise_rows"),
    ({"vanishing_gradient": {"depth_ratio": 2.0}}, "depth_ratio"),
    ({"vanishing_gradient": {"min_layers": 1}}, "min_layers"),
    ({"overfitting": {"rel_tolerance": -1}}, "rel_tolerance"),
    ({"stagnation": {"window_steps": 3}}, "window_steps"),
    ({"stagnation": {"decay_tail_fraction": 1.0}}, "decay_tail_fraction"),
    ({"stagnation": {"min_update_ratio": "tiny"}}, "min_update_ratio"),
    ({"nonfinite": {"max_layers_listed": 0}}, "max_layers_listed"),
]


@pytest.mark.parametrize(("data", "field_name"), BAD, ids=lambda x: str(x))
def test_bad_value_names_the_field(data: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name):
        RulesConfig.model_validate(data)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"loss_spike": {"z_treshold": 3}}, "z_treshold"),
        ({"loss_spikes": {}}, "loss_spikes"),
        ({"stagnation": {"window": 10}}, "window"),
    ],
    ids=lambda x: str(x),
)
def test_unknown_key_is_rejected_by_name(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=rf"{key}\s+Extra inputs are not permitted"):
        RulesConfig.model_validate(data)


def test_cross_field_checks_name_both_fields() -> None:
    with pytest.raises(ValueError, match=r"min_history.*baseline_steps"):
        LossSpikeConfig(min_history=60, baseline_steps=50)
    with pytest.raises(ValueError, match=r"patience.*min_val_points"):
        OverfittingConfig(patience=4, min_val_points=4)


def test_config_is_immutable() -> None:
    cfg = RulesConfig()
    with pytest.raises(ValueError, match="frozen"):
        cfg.loss_spike.z_threshold = 3  # type: ignore[misc]


def test_toml_rules_table_maps_onto_config() -> None:
    text = """
[rules.loss_spike]
z_threshold = 12

[rules.exploding_gradient]
growth_factor = 100.0
rise_rows = 3
"""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the service reads TOML the same way
    cfg = RulesConfig.model_validate(tomllib.loads(text)["rules"])
    assert cfg.loss_spike.z_threshold == 12
    assert cfg.loss_spike.baseline_steps == 50  # untouched fields keep their defaults
    assert cfg.exploding_gradient.growth_factor == 100.0 and cfg.exploding_gradient.rise_rows == 3


# --- settings for some runs only: [[run_rules]] ------------------------------------------------------------------


def test_run_rules_apply_to_matching_runs_in_order_over_the_rules_table(tmp_path) -> None:
    from gradwatch.service.config import load_config

    path = tmp_path / "gradwatch.toml"
    path.write_text(
        "[rules.loss_spike]\nz_threshold = 12\n\n"
        '[[run_rules]]\nmatch = "ppo-*"\nloss_spike = { enabled = false }\n\n'
        '[[run_rules]]\nmatch = "ppo-long-*"\n[run_rules.stagnation]\nwindow_steps = 64\n'
        "[run_rules.loss_spike]\nenabled = true\n"
    )
    config = load_config(path)
    assert config.rules_for("supervised").loss_spike.z_threshold == 12
    assert config.rules_for("supervised").loss_spike.enabled
    assert not config.rules_for("ppo-1").loss_spike.enabled
    assert config.rules_for("ppo-1").loss_spike.z_threshold == 12  # [rules] stays underneath
    long_run = config.rules_for("ppo-long-3")
    assert long_run.loss_spike.enabled and long_run.stagnation.window_steps == 64  # the later table wins
    assert config.rules_for("PPO-1").loss_spike.enabled  # patterns are case-sensitive


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"match": "x", "loss_spike": {"z_treshold": 3}}, "run_rules[0] (match 'x'): loss_spike.z_treshold"),
        ({"match": "x", "loss_spike": {"z_threshold": 0}}, "run_rules[0] (match 'x'): loss_spike.z_threshold"),
        ({"match": "x", "loss_spiek": {}}, "run_rules.0.loss_spiek"),
        ({"loss_spike": {}}, "run_rules.0.match"),
        ({"match": "x", "loss_spike": {"min_history": 60}}, "must not exceed loss_spike.baseline_steps"),
    ],
)
def test_a_bad_run_rules_table_fails_at_start_up_naming_it(tmp_path, table: dict[str, Any], message: str) -> None:
    import tomllib

    from gradwatch.service.config import ConfigError, ServiceConfig, describe, load_config

    with pytest.raises(Exception) as caught:
        ServiceConfig.model_validate({"run_rules": [table]})
    assert message in describe(caught.value)
    # The same through a TOML file, as `gradwatch serve --config` reads it.
    path = tmp_path / "bad.toml"
    lines = ["[[run_rules]]"] + [f"{k} = {_toml(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    assert tomllib.loads(path.read_text()) == {"run_rules": [table]}
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return f'"{value}"' if isinstance(value, str) else str(value)


def test_tables_that_clash_on_one_run_skip_the_later_one_for_it_with_a_warning(caplog) -> None:
    from gradwatch.service.config import ServiceConfig

    # Each valid over [rules]; together min_history (40) would exceed baseline_steps (30).
    config = ServiceConfig.model_validate(
        {
            "run_rules": [
                {"match": "*", "loss_spike": {"min_history": 40}},
                {"match": "ppo-*", "loss_spike": {"baseline_steps": 30}, "stagnation": {"enabled": False}},
                {"match": "ppo-*", "nonfinite": {"enabled": False}},
            ]
        }
    )
    with caplog.at_level("WARNING", logger="gradwatch.service"):
        settings = config.rules_for("ppo-1")  # never raises into the aggregator
    assert settings.loss_spike.min_history == 40 and settings.loss_spike.baseline_steps == 50
    assert settings.stagnation.enabled and not settings.nonfinite.enabled  # the clashing table alone is skipped
    assert "run_rules[1] (match 'ppo-*') is skipped for run 'ppo-1'" in caplog.text
    assert config.rules_for("sup").loss_spike.min_history == 40


def test_every_bad_table_is_named_at_start_up() -> None:
    from gradwatch.service.config import ServiceConfig, describe

    tables = [{"match": "a", "loss_spike": {"z_threshold": 0}}, {"match": "b", "stagnation": {"window_steps": 1}}]
    with pytest.raises(ValidationError) as caught:
        ServiceConfig.model_validate({"run_rules": tables})
    assert "run_rules[0] (match 'a')" in describe(caught.value) and "run_rules[1] (match 'b')" in describe(caught.value)


def test_a_copy_with_other_run_rules_does_not_read_the_first_ones_resolved_settings() -> None:
    from gradwatch.service.config import RunRules, ServiceConfig

    config = ServiceConfig.model_validate({"run_rules": [{"match": "a*", "loss_spike": {"enabled": False}}]})
    assert not config.rules_for("a1").loss_spike.enabled
    other = config.model_copy(update={"run_rules": [RunRules(match="b*", loss_spike={"enabled": False})]})
    assert other.rules_for("a1").loss_spike.enabled
    assert not config.rules_for("a1").loss_spike.enabled


def test_a_disabled_symptom_is_never_reported() -> None:
    from rule_views import decaying_loss, make_view

    from gradwatch.service.rules import evaluate

    loss = decaying_loss(t=300)
    loss[250] *= 6.0
    view = make_view(loss, new_loss_from=245)
    assert evaluate(view)["loss_spike"] is not None
    off = RulesConfig.model_validate({"loss_spike": {"enabled": False}})
    assert evaluate(view, off)["loss_spike"] is None
    assert evaluate(view, RulesConfig.model_validate({"stagnation": {"enabled": False}}))["loss_spike"] is not None
