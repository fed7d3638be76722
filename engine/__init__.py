"""esper engine: grow a network by grafting seeds into a host's slots, judged by quality gates.

Headless PyTorch; never imports the dashboard. Importing `engine` (or its pure core: lifecycle,
gates, alpha, metrics, config) does not import torch: the torch-backed names below load on first use
(PEP 562), so the torch-free dashboard can use the core and the contract.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.alpha import AlphaSchedule, alpha_at
from engine.config import LifecycleConfig
from engine.gates import GateCheck, GateInputs, GateResult, GateThresholds
from engine.lifecycle import Stage, check_transition
from engine.metrics import BiasCorrectedEMA, SeedMetrics, gradient_ratio

__version__ = "0.1.0"

# name → module that defines it; imported (with torch) only when first touched.
_LAZY = {
    "CNNHost": "engine.hosts",
    "TransformerHost": "engine.hosts",
    "Host": "engine.hosts",
    "SeedSlot": "engine.slot",
    "TransitionRecord": "engine.slot",
}
_LAZY_MODULES = {"blueprints", "hosts", "slot", "isolation"}

if TYPE_CHECKING:
    from engine import blueprints
    from engine.hosts import CNNHost, Host, TransformerHost
    from engine.slot import SeedSlot, TransitionRecord


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _LAZY_MODULES:
        return importlib.import_module(f"engine.{name}")
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = [
    "AlphaSchedule",
    "BiasCorrectedEMA",
    "CNNHost",
    "GateCheck",
    "GateInputs",
    "GateResult",
    "GateThresholds",
    "Host",
    "LifecycleConfig",
    "SeedMetrics",
    "SeedSlot",
    "Stage",
    "TransformerHost",
    "TransitionRecord",
    "__version__",
    "alpha_at",
    "blueprints",
    "check_transition",
    "gradient_ratio",
]
