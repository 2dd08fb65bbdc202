"""Reports straight to the aggregator actor, for agents inside the same Ray cluster (Ray Train workers).

``gradwatch.watch(..., endpoint="actor://NAME")`` sends each report to the
actor of ``gradwatch serve --name NAME`` with a Ray call instead of an HTTP
POST: no HTTP hop, no port to open between workers and the service. The body
is validated here exactly as the HTTP front validates it, so the actor only
ever receives a typed :class:`~gradwatch.wire.Report`.

Diagnoses fired this way reach ``/v1`` and ``/metrics`` at once; the service
pushes them to Alertmanager on its next refresh of active alerts.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from gradwatch.wire import AGGREGATOR_NAMESPACE, Report, aggregator_actor_name, shard_of

SCHEME = "actor://"


class RayActorTransport:
    """A :data:`~gradwatch.agents.sender.Transport` that calls the aggregator actor's ``ingest``."""

    def __init__(self, endpoint: str) -> None:
        name = endpoint[len(SCHEME) :] if endpoint.startswith(SCHEME) else ""
        if not name or "/" in name:
            raise ValueError(f"endpoint {endpoint!r} must look like actor://NAME (the name given to gradwatch serve)")
        self._service = name
        self._actor_name = aggregator_actor_name(name)
        self._actor: Any = None

    def __call__(self, body: bytes, timeout: float) -> tuple[int, str]:
        try:
            report = Report.model_validate_json(body)
        except ValidationError as exc:
            return 400, json.dumps({"error": str(exc)[:500]})
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayError

        try:
            if self._actor is None:
                self._actor_name = self._find_actor_name(report.run)
                self._actor = ray.get_actor(self._actor_name, namespace=AGGREGATOR_NAMESPACE)
            ray.get(self._actor.ingest.remote(report), timeout=timeout)
        except (GetTimeoutError, RayActorError, ValueError) as exc:
            # ValueError: no such actor (yet). Unreachable, like a refused connection: retried.
            self._actor = None
            raise OSError(f"aggregator actor {self._actor_name}: {exc}") from exc
        except RayError as exc:
            status = getattr(exc, "status", None) or getattr(getattr(exc, "cause", None), "status", None)
            if isinstance(status, int):
                cause = getattr(exc, "cause", None)
                return status, json.dumps({"error": str(getattr(cause, "reason", exc))[:500]})
            raise OSError(f"aggregator actor {self._actor_name}: {type(exc).__name__}") from exc
        return 202, json.dumps({"accepted": len(report.steps), "run": report.run})

    def _find_actor_name(self, run: str) -> str:
        """The run's shard: the single actor, or shard_of(run, N) of the service's N shard actors."""
        import ray

        prefix = aggregator_actor_name(self._service) + "-"
        for actor in ray.util.list_named_actors(all_namespaces=True):
            name = actor["name"]
            if actor["namespace"] == AGGREGATOR_NAMESPACE and name.startswith(prefix):
                index, _, count = name[len(prefix) :].partition("of")
                if index.isdigit() and count.isdigit():
                    shards = int(count)
                    return aggregator_actor_name(self._service, shard_of(run, shards), shards)
        return aggregator_actor_name(self._service)

    def close(self) -> None:
        self._actor = None
