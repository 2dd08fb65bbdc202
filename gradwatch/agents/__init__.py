"""The in-process agent: torch and the standard library only (plus the wire schema)."""

from gradwatch.agents.monitor import Monitor, NullMonitor, watch
from gradwatch.agents.options import AgentOptions

__all__ = ["AgentOptions", "Monitor", "NullMonitor", "watch"]
