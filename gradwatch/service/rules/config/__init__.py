"""Validated settings for the symptom rules: one pydantic model per rule.

The service loads these from the ``[rules]`` table of its TOML config, e.g.::

    [rules.loss_spike]
    z_threshold = 12

Defaults are chosen to be right for most runs (see ``docs/rules.md``). Every
model forbids unknown keys so a typo in a config file is an error that names
the key instead of a setting that silently does nothing.
"""

from __future__ import annotations

from pydantic import Field

from ._base import _RuleConfig
from .gradients import ExplodingGradientConfig, NonfiniteConfig, VanishingGradientConfig
from .loss import LossSpikeConfig, OverfittingConfig, StagnationConfig

__all__ = [
    "ExplodingGradientConfig",
    "LossSpikeConfig",
    "NonfiniteConfig",
    "OverfittingConfig",
    "RulesConfig",
    "StagnationConfig",
    "VanishingGradientConfig",
]


class RulesConfig(_RuleConfig):
    """All rule settings, one section per symptom (the ``[rules]`` TOML table)."""

    exploding_gradient: ExplodingGradientConfig = Field(default_factory=ExplodingGradientConfig)
    vanishing_gradient: VanishingGradientConfig = Field(default_factory=VanishingGradientConfig)
    nonfinite: NonfiniteConfig = Field(default_factory=NonfiniteConfig)
    loss_spike: LossSpikeConfig = Field(default_factory=LossSpikeConfig)
    overfitting: OverfittingConfig = Field(default_factory=OverfittingConfig)
    stagnation: StagnationConfig = Field(default_factory=StagnationConfig)
