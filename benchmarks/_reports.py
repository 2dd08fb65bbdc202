"""Agent-shaped report bodies for the aggregator benchmarks, assembled cheaply around pre-encoded rows.

A 1,000-layer statistics row is encoded once per variant, by the agent's own
encoders (pydantic JSON, and :mod:`gradwatch.agents.packed`); a report then
adds only its step records around it. The benchmarks' clients share the
machine with the service they measure, so assembling must cost next to nothing.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass

from gradwatch.agents import packed
from gradwatch.wire import PACKED_MAGIC, LayerStats, Report


@dataclass(frozen=True)
class Variant:
    """One pre-encoded statistics row in both encodings, and its global gradient norm."""

    json: str
    layout_meta: str
    layout_block: bytes
    values_block: bytes
    row_meta: dict
    grad_norm: float


def layer_variants(layers: int, count: int, seed: int) -> list[Variant]:
    """``count`` statistics rows of one model (healthy-looking values), encoded as the agent encodes them."""
    rng = random.Random(seed)
    names = [
        f"model.layers.{i // 8}.{('attn.q', 'attn.k', 'attn.v', 'attn.o', 'mlp.up', 'mlp.down', 'ln1', 'ln2')[i % 8]}"
        for i in range(layers)
    ]
    numel = [4096 if i % 8 in (6, 7) else 4096 * 4096 for i in range(layers)]
    base_grad = [10 ** rng.uniform(-3, -1) for _ in range(layers)]
    base_weight = [10 ** rng.uniform(0, 2) for _ in range(layers)]
    out = []
    for v in range(count):
        grad = [g * rng.lognormvariate(0, 0.1) for g in base_grad]
        weight = [w * (1 + 1e-4 * v) for w in base_weight]
        stats = LayerStats.model_validate(
            {
                "names": names,
                "numel": numel,
                "grad_norm": grad,
                "grad_max_abs": [g / 50 for g in grad],
                "weight_norm": weight,
                "weight_max_abs": [w / 40 for w in weight],
                "update_ratio": [10 ** rng.uniform(-4, -3) for _ in range(layers)] if v % 4 == 0 else None,
            }
        )
        # The agent's own encoder, once; a report then reuses the blocks after the header.
        body = packed.encode({"run": "variant"}, [{"step": 0, "layers": stats.model_dump(exclude_none=True)}])
        header_end = 8 + int.from_bytes(body[4:8], "little")
        header = json.loads(body[8:header_end])
        layout_bytes = header["layouts"][0]["names_bytes"] + 8 * layers
        out.append(
            Variant(
                json=stats.model_dump_json(exclude_none=True),
                layout_meta=json.dumps(header["layouts"][0]),
                layout_block=body[header_end : header_end + layout_bytes],
                values_block=body[header_end + layout_bytes :],
                row_meta=header["rows"][0],
                grad_norm=sum(g * g for g in grad) ** 0.5,
            )
        )
    return out


class ReportMaker:
    """Bodies of consecutive agent reports for one run, JSON or packed (assembled around pre-encoded rows).

    Assembling is cheap on purpose: the clients share the machine with the service they measure.
    """

    def __init__(
        self, run: str, variants: list[Variant], steps_per_row: int, rows_per_report: int, encoding: str = "packed"
    ) -> None:
        self._envelope = (
            f'"v":1,"run":"{run}","rank":0,"world_size":1,"host":"bench","agent":"bench",'
            f'"session":"{uuid.uuid4().hex}","dropped":0'
        )
        self._variants = variants
        self._steps_per_row = steps_per_row
        self._rows = rows_per_report
        self._packed = encoding == "packed"
        self._step = 0
        self._report = 0

    def next(self) -> bytes:
        variant = self._variants[self._report % len(self._variants)]
        records, rows = [], []
        for _ in range(self._rows):
            for i in range(self._steps_per_row):
                step, self._step = self._step, self._step + 1
                loss = 2.0 + 1.0 / (1 + step / 500) + 0.01 * ((step * 7919) % 13)
                record = f'"step":{step},"loss":{loss:.6f},"lr":0.0003,"step_time":0.2,"skipped":false'
                if i == self._steps_per_row - 1:
                    record += f',"grad_norm":{variant.grad_norm!r}'
                    if self._packed:
                        rows.append({**variant.row_meta, "step": len(records)})
                    else:
                        record += f',"layers":{variant.json}'
                records.append("{" + record + "}")
        self._report += 1
        report = "{" + self._envelope + ',"steps":[' + ",".join(records) + "]}"
        if not self._packed:
            return report.encode()
        header = f'{{"report":{report},"layouts":[{variant.layout_meta}],"rows":{json.dumps(rows)}}}'.encode()
        return b"".join(
            [PACKED_MAGIC, len(header).to_bytes(4, "little"), header, variant.layout_block]
            + [variant.values_block] * len(rows)
        )


def check_encodings_agree(variants: list[Variant], steps_per_row: int, rows: int) -> None:
    """The benchmark's assembled bodies are real reports, and both encodings carry the same arrays."""
    from gradwatch.service.columns import ColumnarReport, LayoutCache
    from gradwatch.service.packed import decode

    json_body = ReportMaker("check", variants, steps_per_row, rows, "json").next()
    packed_body = ReportMaker("check", variants, steps_per_row, rows, "packed").next()
    a = ColumnarReport.of(Report.model_validate_json(json_body))
    b = decode(packed_body, LayoutCache())
    assert a.report.model_dump_json(exclude={"session"}) == b.report.model_dump_json(exclude={"session"})
    for x, y in zip(a.rows, b.rows, strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.names == y.names and (x.values.tobytes(), x.present.tobytes()) == (
                y.values.tobytes(),
                y.present.tobytes(),
            )
