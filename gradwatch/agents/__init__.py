"""The in-process agent: torch and the standard library only (plus the wire schema)."""

from gradwatch.agents.monitor import Monitor
from gradwatch.agents.options import AgentOptions
from gradwatch.agents.watching import NullMonitor, watch

__all__ = ["AgentOptions", "Monitor", "NullMonitor", "watch"]
