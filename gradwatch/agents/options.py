"""Options of the agent, validated once at ``watch()`` time."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gradwatch.wire import DEFAULT_PORT

ENDPOINT_ENV = "GRADWATCH_ENDPOINT"
TOKEN_ENV = "GRADWATCH_TOKEN"


def default_token() -> SecretStr | None:
    """``$GRADWATCH_TOKEN``, when set."""
    value = os.environ.get(TOKEN_ENV, "").strip()
    return SecretStr(value) if value else None


def default_endpoint() -> str:
    """``$GRADWATCH_ENDPOINT``, else the service's default address on this host."""
    return os.environ.get(ENDPOINT_ENV) or f"http://127.0.0.1:{DEFAULT_PORT}"


class AgentOptions(BaseModel):
    """Everything ``gradwatch.watch(..., **options)`` accepts besides model, optimizer, run and endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stats_every: int = Field(
        default=5,
        ge=1,
        description=(
            "Compute per-layer gradient and weight statistics every N optimizer steps. "
            "Loss and non-finite loss checks happen every step regardless."
        ),
    )
    update_ratio_every: int = Field(
        default=4,
        ge=0,
        description=(
            "Sample the update ratio ||dw||/||w|| on every Nth statistics step (0 turns it off). "
            "A sampled step holds a temporary copy of the weights (of a stride sample of 65,536 elements of "
            "each tensor past 4M elements) across optimizer.step()."
        ),
    )
    flush_interval: float = Field(default=0.5, gt=0, le=60, description="Seconds between background sends.")
    buffer_steps: int = Field(
        default=20_000,
        ge=16,
        description=(
            "Step records kept while the service is slow or gone; the oldest are dropped (and counted) past this."
        ),
    )
    max_steps_per_post: int = Field(
        default=1_000, ge=1, le=10_000, description="Step records per HTTP request at most."
    )
    request_timeout: float = Field(default=2.0, gt=0, le=60, description="Seconds an HTTP request may take.")
    close_timeout: float = Field(
        default=5.0, ge=0, le=300, description="Seconds close() waits to deliver what is buffered."
    )
    max_backoff: float = Field(
        default=2.0, gt=0, le=60, description="Longest wait between retries while the service is unreachable."
    )
    enabled: bool = Field(default=True, description="False returns a monitor that does nothing.")
    token: SecretStr | None = Field(
        default_factory=default_token,
        description=(
            "Bearer token the service requires (gradwatch serve --token-file); default $GRADWATCH_TOKEN. "
            "Never logged or shown in a repr."
        ),
    )
    ca_file: str | None = Field(
        default=None, description="PEM file of the CA that signed an https endpoint's certificate (a private CA)."
    )
