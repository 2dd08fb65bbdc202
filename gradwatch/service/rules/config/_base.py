"""The base of every rule's settings model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _RuleConfig(BaseModel):
    """Common model settings: strict keys, immutable, validated on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class _SymptomConfig(_RuleConfig):
    """Settings of one symptom's rule."""

    enabled: bool = Field(
        default=True,
        description=(
            "Judge this symptom at all. Off, it is never reported (nor masks another); for runs whose loss is "
            "not a supervised loss (a PPO surrogate, a TD loss against a synced target network), turn "
            "loss_spike off for those runs only ([[run_rules]], docs/rules.md)."
        ),
    )
