"""The dashboard's widgets. Each is thin: `show(state, selected)` pushes the reduced state down,
messages (e.g. `SlotCard.Selected`) go up. No widget imports a screen or the app, and none holds a
colour: styles name theme variables.
"""

from esper_tui.widgets.alpha_plot import AlphaPlot
from esper_tui.widgets.event_log import EventLog
from esper_tui.widgets.gate_panel import GatePanel
from esper_tui.widgets.header import RunHeader
from esper_tui.widgets.metrics_plot import MetricsPlot
from esper_tui.widgets.network import NetworkView
from esper_tui.widgets.ratio_sparkline import RatioLine
from esper_tui.widgets.slot_card import SlotCard
from esper_tui.widgets.timeline import Timeline

__all__ = ["AlphaPlot", "EventLog", "GatePanel", "MetricsPlot", "NetworkView", "RatioLine", "RunHeader", "SlotCard",
           "Timeline"]
