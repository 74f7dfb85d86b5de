"""agnostic-rt: compile for whatever GPU is here, move live training state between vendors,
and prove the numerics on every target.

    torch.compile(model, backend="agnostic")
    state = agnostic_rt.migrate(state, to="rocm")
"""

from __future__ import annotations

from .config import Options
from .placement import JobProfile, PlacementPolicy
from .targets import KNOWN_TARGETS, Target, current_target, get_target
from .training.checkpoint import (
    Checkpoint,
    CheckpointCorruptError,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load,
    save,
)
from .training.devices import Device, devices, select_device
from .training.migrate import EXIT_HANDOFF, EXIT_PREEMPTED, migrate, resume
from .training.preempt import spot_guard
from .training.state import StateError, TrainingState

__version__ = "0.1.0"

__all__ = ["Options", "Target", "KNOWN_TARGETS", "current_target", "get_target", "__version__"]
__all__ += [
    "Device", "devices", "select_device", "TrainingState", "StateError", "Checkpoint", "CheckpointError",
    "CheckpointCorruptError", "save", "load", "list_checkpoints", "latest_checkpoint", "migrate", "resume",
    "spot_guard", "EXIT_PREEMPTED", "EXIT_HANDOFF",
]
__all__ += ["PlacementPolicy", "JobProfile"]
