"""agnostic-rt: compile for whatever GPU is here, move live training state between vendors,
and prove the numerics on every target.

    torch.compile(model, backend="agnostic")
    state = agnostic_rt.migrate(state, to="rocm")
"""

from __future__ import annotations

from .config import Options
from .targets import KNOWN_TARGETS, Target, current_target, get_target

__version__ = "0.1.0"

__all__ = ["Options", "Target", "KNOWN_TARGETS", "current_target", "get_target", "__version__"]
