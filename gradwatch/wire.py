"""The wire schema between the agent and the aggregator.

A leaf module: it imports pydantic and the standard library, nothing of ours,
so that both sides can depend on it without depending on each other.

Encoding. Reports travel as JSON. NaN and Inf are the signal this project
exists to carry, so floats are written with the JSON extensions that Python's
``json`` module, JavaScript's ``JSON5`` and pydantic all read: ``NaN``,
``Infinity`` and ``-Infinity``. ``null`` means "not measured" (a frozen layer
has no gradient); it is never used for a non-finite value.

Layout. Per-layer statistics are columnar: one array per statistic, aligned
with ``LayerStats.names``. A thousand-layer report is then a handful of arrays
rather than a thousand objects, which keeps both encoding and ingest cheap.

Packed encoding. Agents send the same report in a binary form beside JSON
(``Content-Type: application/vnd.gradwatch.packed``): the statistics rows as
raw little-endian float64 arrays, which the service reads without parsing a
number. Its layout is described at :data:`PACKED_CONTENT_TYPE`; the envelope
and the step records stay JSON, validated by the same :class:`Report`.

Versioning. ``Report.v`` names the schema version. A service accepts the
versions listed in ``SUPPORTED_VERSIONS`` and rejects others with a 4xx that
says which versions it reads.
"""

from __future__ import annotations

import re
import zlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1
#: Ray namespace of the aggregator actors, and the name of the one behind
#: ``gradwatch serve --name NAME``: agents inside the same Ray cluster (Ray
#: Train workers) may hand reports to it directly (``endpoint="actor://NAME"``).
AGGREGATOR_NAMESPACE = "gradwatch"


def aggregator_actor_name(service_name: str, shard: int = 0, shards: int = 1) -> str:
    """The Ray actor name of one aggregator shard (a single shard keeps the plain name)."""
    if shards <= 1:
        return f"gradwatch-aggregator-{service_name}"
    return f"gradwatch-aggregator-{service_name}-{shard}of{shards}"


def shard_of(run: str, shards: int) -> int:
    """The aggregator shard that holds ``run``: the same answer in every process (CRC-32, not ``hash``)."""
    return zlib.crc32(run.encode("utf-8")) % shards if shards > 1 else 0


#: Port the service listens on and agents send to unless told otherwise.
DEFAULT_PORT = 8617
SUPPORTED_VERSIONS = (1,)

#: Longest run name accepted. Run names become Prometheus label values and URL
#: path segments, so they are kept short and printable.
MAX_RUN_NAME = 128
#: Layer names are module paths ("encoder.layers.11.attn.q_proj").
MAX_LAYER_NAME = 256
MAX_LAYERS_PER_REPORT = 20_000
MAX_STEPS_PER_REPORT = 10_000
MAX_SCALARS_PER_STEP = 32
MAX_SCALAR_NAME = 64
#: Integers are bounded so that they fit the service's int64 arrays (and a
#: JavaScript number): an unbounded one is a 422, not an overflow inside.
MAX_INT = 2**53
MAX_WORLD_SIZE = 1 << 20

RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+=/-]*$"
_RUN_NAME_RE = re.compile(RUN_NAME_PATTERN)
_SCALAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

RunName = Annotated[str, Field(min_length=1, max_length=MAX_RUN_NAME, pattern=RUN_NAME_PATTERN)]

# A float that may be NaN or +-Inf (that is data here), or None when absent.
MaybeFloat = float | None

_WIRE_CONFIG = ConfigDict(
    extra="forbid",
    frozen=True,
    ser_json_inf_nan="constants",
    allow_inf_nan=True,
)


def is_valid_run_name(name: str) -> bool:
    """True when ``name`` is acceptable as a run name."""
    return 0 < len(name) <= MAX_RUN_NAME and _RUN_NAME_RE.match(name) is not None


def is_valid_scalar_name(name: str) -> bool:
    """True when ``name`` is acceptable as the name of a step's scalar."""
    return len(name) <= MAX_SCALAR_NAME and _SCALAR_NAME_RE.match(name) is not None


class LayerStats(BaseModel):
    """Per-layer statistics at one step, one array entry per layer.

    A layer is a module that owns parameters; its statistics combine all its
    own parameter tensors (the norm over their concatenation, the max of their
    max-abs). Layers are listed in model order, input side first.
    """

    model_config = _WIRE_CONFIG

    names: list[Annotated[str, Field(min_length=1, max_length=MAX_LAYER_NAME)]] = Field(
        max_length=MAX_LAYERS_PER_REPORT
    )
    #: Number of parameter elements per layer; lets the service compare layers
    #: of different sizes by root-mean-square rather than raw norm.
    numel: list[Annotated[int, Field(ge=0, le=MAX_INT)]]
    grad_norm: list[MaybeFloat]
    grad_max_abs: list[MaybeFloat]
    weight_norm: list[MaybeFloat]
    weight_max_abs: list[MaybeFloat]
    #: ||w_after - w_before|| / ||w_before||, only on sampled steps.
    update_ratio: list[MaybeFloat] | None = None
    #: Indices of the layers that got no gradient this step although the
    #: watched optimizer trains them (their parameters require a gradient and
    #: sit in its param groups): the loss does not reach them (a ``.detach()``,
    #: ``torch.no_grad()``, a branch the forward pass skips). None: not
    #: checked (no optimizer watched). A layer frozen with
    #: ``requires_grad_(False)`` is never listed.
    grad_missing: list[Annotated[int, Field(ge=0, lt=MAX_LAYERS_PER_REPORT)]] | None = Field(
        default=None, max_length=MAX_LAYERS_PER_REPORT
    )

    @model_validator(mode="after")
    def _columns_align(self) -> LayerStats:
        n = len(self.names)
        for column in ("numel", "grad_norm", "grad_max_abs", "weight_norm", "weight_max_abs"):
            if len(getattr(self, column)) != n:
                raise ValueError(f"layers.{column} has {len(getattr(self, column))} entries, layers.names has {n}")
        if self.update_ratio is not None and len(self.update_ratio) != n:
            raise ValueError(f"layers.update_ratio has {len(self.update_ratio)} entries, layers.names has {n}")
        if self.grad_missing and max(self.grad_missing) >= n:
            raise ValueError(f"layers.grad_missing has an index past the {n} layers")
        if len(set(self.names)) != n:
            raise ValueError("layers.names must be unique")
        return self


class StepRecord(BaseModel):
    """What the agent saw at one optimizer step."""

    model_config = _WIRE_CONFIG

    step: int = Field(ge=0, le=MAX_INT)
    loss: MaybeFloat = None
    val_loss: MaybeFloat = None
    lr: MaybeFloat = None
    #: Wall-clock seconds since the previous step, measured on the host.
    step_time: MaybeFloat = None
    #: Global gradient L2 norm over all layers: the training loop's own (what
    #: it clipped with) or, on steps with layer stats, the agent's.
    grad_norm: MaybeFloat = None
    #: True when the optimizer did not step (a GradScaler skip, say).
    skipped: bool = False
    #: This rank's own gradients held NaN/Inf *before* the data-parallel
    #: reduction (seen by a DDP communication hook); None where not checked.
    #: After the reduction every rank has the NaN; this says where it began.
    local_grad_nonfinite: bool | None = None
    #: How much gradient reaches the first time step of the model's worst
    #: recurrence: RMS gradient at the first step / at the last (the input
    #: sequence of an RNN/LSTM/GRU, or the outputs of a module a loop calls
    #: repeatedly). Only on statistics steps of models that have one.
    recurrent_grad_ratio: MaybeFloat = None
    #: The module ``recurrent_grad_ratio`` was measured on.
    recurrent_module: str | None = Field(default=None, min_length=1, max_length=MAX_LAYER_NAME)
    #: That module has gates (an LSTM or GRU, or their cells) that can learn to carry gradient back.
    recurrent_gated: bool | None = None
    scalars: dict[str, MaybeFloat] = Field(default_factory=dict, max_length=MAX_SCALARS_PER_STEP)
    layers: LayerStats | None = None

    @field_validator("scalars")
    @classmethod
    def _scalar_names(cls, value: dict[str, MaybeFloat]) -> dict[str, MaybeFloat]:
        for name in value:
            if not is_valid_scalar_name(name):
                raise ValueError(
                    f"scalar name {name[:80]!r} must match [A-Za-z_][A-Za-z0-9_]* (at most {MAX_SCALAR_NAME} chars)"
                )
        return value


class ShardInfo(BaseModel):
    """This rank holds one shard of every layer (FSDP); the service combines the shards.

    Layer norms from a shard are norms of the local piece; the service squares
    and sums them over the ``count`` shards of a step (and takes the max of
    max-abs) to get the true per-layer values, with no collective in training.
    """

    model_config = _WIRE_CONFIG

    index: int = Field(ge=0)
    count: int = Field(ge=1, le=65536)

    @model_validator(mode="after")
    def _index_in_count(self) -> ShardInfo:
        if self.index >= self.count:
            raise ValueError(f"shard index {self.index} is not below shard count {self.count}")
        return self


class Report(BaseModel):
    """One POST from one agent: a batch of consecutive step records."""

    model_config = _WIRE_CONFIG

    v: Literal[1] = 1
    run: RunName
    rank: int = Field(default=0, ge=0, le=MAX_WORLD_SIZE)
    world_size: int = Field(default=1, ge=1, le=MAX_WORLD_SIZE)
    host: str = Field(default="", max_length=255)
    #: Rank within the node (torchrun's LOCAL_RANK), for finding the GPU.
    local_rank: int | None = Field(default=None, ge=0)
    #: Set when the layer statistics are one shard's (FSDP); see ShardInfo.
    shard: ShardInfo | None = None
    #: Agent library version, for support questions.
    agent: str = Field(default="", max_length=64)
    #: Random id of the sending monitor. A record re-sent by the same session
    #: (a retry after a lost answer) is recognised and ignored; a new session
    #: whose steps go back is a restarted training.
    session: str = Field(default="", max_length=64)
    #: Records the agent dropped (buffer full, service unreachable) since the
    #: last report it delivered.
    dropped: int = Field(default=0, ge=0, le=MAX_INT)
    steps: list[StepRecord] = Field(max_length=MAX_STEPS_PER_REPORT)
    #: The agent closed: this rank sends no more steps (a finished run is not
    #: a silent one).
    final: bool = False

    @model_validator(mode="after")
    def _rank_in_world(self) -> Report:
        if self.rank >= self.world_size:
            raise ValueError(f"rank {self.rank} is not below world_size {self.world_size}")
        return self


#: Content type of the packed encoding. A body is, in order:
#:
#: 1. :data:`PACKED_MAGIC` (4 bytes), then the header's length in bytes as a
#:    little-endian uint32;
#: 2. the header, UTF-8 JSON matching :class:`PackedHeader`: the report with no
#:    ``layers`` in its steps, the layouts, and the statistics rows;
#: 3. per layout, in header order: its names as UTF-8 joined by NUL
#:    (``names_bytes`` long), then its ``layers`` element counts as int64;
#: 4. per row, in header order: its statistics as float64, one block of
#:    ``layers`` values per statistic, in :data:`LAYER_STATISTICS` order (the
#:    update ratio only where ``update_ratio`` is true).
#:
#: Numbers are little-endian; the body ends with the last row. A value the
#: agent did not measure (``null`` in JSON) is listed in the row's ``absent``,
#: its slot holds NaN; a NaN not listed there is data.
PACKED_CONTENT_TYPE = "application/vnd.gradwatch.packed"
PACKED_MAGIC = b"GWP1"
#: The per-layer statistics of a row, in the order packed bodies (and the service's arrays) hold them.
LAYER_STATISTICS = ("grad_norm", "grad_max_abs", "weight_norm", "weight_max_abs", "update_ratio")
LayerStatistic = Literal["grad_norm", "grad_max_abs", "weight_norm", "weight_max_abs", "update_ratio"]
#: Separates layer names in a layout's block: a module name never holds one.
PACKED_NAME_SEPARATOR = "\x00"


class PackedLayout(BaseModel):
    """The layer names and sizes shared by the rows that point at it."""

    model_config = _WIRE_CONFIG

    layers: int = Field(ge=0, le=MAX_LAYERS_PER_REPORT)
    names_bytes: int = Field(ge=0, le=MAX_LAYERS_PER_REPORT * MAX_LAYER_NAME * 4)


class PackedRow(BaseModel):
    """One step's statistics: ``steps[step].layers`` of the JSON encoding."""

    model_config = _WIRE_CONFIG

    #: Index into ``report.steps`` (not the step number).
    step: int = Field(ge=0, lt=MAX_STEPS_PER_REPORT)
    #: Index into ``layouts``.
    layout: int = Field(ge=0, lt=MAX_STEPS_PER_REPORT)
    update_ratio: bool = False
    #: ``layers.grad_missing`` of the JSON encoding.
    grad_missing: list[Annotated[int, Field(ge=0, lt=MAX_LAYERS_PER_REPORT)]] | None = Field(
        default=None, max_length=MAX_LAYERS_PER_REPORT
    )
    #: Per statistic, the layers with no value (``null`` in JSON).
    absent: dict[LayerStatistic, list[Annotated[int, Field(ge=0, lt=MAX_LAYERS_PER_REPORT)]]] = Field(
        default_factory=dict
    )


class PackedHeader(BaseModel):
    """The JSON header of a packed body (see :data:`PACKED_CONTENT_TYPE`)."""

    model_config = _WIRE_CONFIG

    report: Report
    layouts: list[PackedLayout] = Field(default_factory=list, max_length=MAX_STEPS_PER_REPORT)
    rows: list[PackedRow] = Field(default_factory=list, max_length=MAX_STEPS_PER_REPORT)

    @model_validator(mode="after")
    def _rows_point_inside(self) -> PackedHeader:
        steps, seen = len(self.report.steps), set()
        for i, row in enumerate(self.rows):
            if row.step >= steps:
                raise ValueError(f"rows[{i}].step {row.step} is past the report's {steps} steps")
            if row.step in seen:
                raise ValueError(f"rows[{i}].step {row.step}: that step already has a row")
            seen.add(row.step)
            if row.layout >= len(self.layouts):
                raise ValueError(f"rows[{i}].layout {row.layout} is past the {len(self.layouts)} layouts")
            if self.report.steps[row.step].layers is not None:
                raise ValueError(f"report.steps[{row.step}] has layers in JSON and a packed row")
            layers = self.layouts[row.layout].layers
            for statistic, indices in row.absent.items():
                if statistic == "update_ratio" and not row.update_ratio:
                    raise ValueError(f"rows[{i}].absent lists update_ratio, which the row does not carry")
                if any(index >= layers for index in indices):
                    raise ValueError(f"rows[{i}].absent.{statistic} has an index past the layout's {layers} layers")
            if row.grad_missing and max(row.grad_missing) >= layers:
                raise ValueError(f"rows[{i}].grad_missing has an index past the layout's {layers} layers")
        return self


class Accepted(BaseModel):
    """The service's answer to a report it ingested."""

    accepted: int
    run: str
