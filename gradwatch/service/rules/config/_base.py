"""The base of every rule's settings model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _RuleConfig(BaseModel):
    """Common model settings: strict keys, immutable, validated on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
