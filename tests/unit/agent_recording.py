"""An agent whose transport keeps what it posts: the unit tests' seam between the agent and the service."""

import json

from gradwatch.agents.monitor import Monitor
from gradwatch.agents.options import AgentOptions


class Recorder:
    """A transport that keeps every posted body (the unit-test seam of the sender)."""

    def __init__(self, status=202):
        self.bodies = []
        self.status = status

    def __call__(self, body, timeout):
        self.bodies.append(json.loads(body))
        return self.status, "{}"

    @property
    def steps(self):
        return [s for b in self.bodies for s in b["steps"]]


def recording_monitor(model, optimizer, **options):
    """A Monitor posting to a Recorder (every 10 ms), and the Recorder."""
    recorder = Recorder()
    opts = AgentOptions(flush_interval=0.01, **options)
    return Monitor(model, optimizer, run="unit", endpoint="http://unused:1", options=opts, transport=recorder), recorder
