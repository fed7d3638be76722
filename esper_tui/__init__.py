"""esper-tui: the terminal dashboard for the esper engine. Never imports torch."""

from engine import __version__

__all__ = ["__version__"]
