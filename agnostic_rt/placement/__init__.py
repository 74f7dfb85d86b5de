"""Spot-aware placement across clouds and vendors.

    feeds     where a GPU can be had and at what price (table, AWS spot history, SkyPilot's catalog)
    policy    the cost of finishing the job on each offer, moves with hysteresis
    skypilot  the managed spot job that carries the run to the next machine
    trace     price/availability traces: read, write, generate
    simulate  replay a trace under each policy (`agnostic-rt simulate`)
"""

from __future__ import annotations

from .feeds import (
    AwsSpotFeed,
    CombinedFeed,
    Feed,
    FeedWarning,
    Offer,
    SkyPilotCatalogFeed,
    TableFeed,
    default_feed,
)
from .policy import Decision, Hysteresis, JobProfile, MoveCosts, PlacementPolicy, Quote
from .skypilot import HandOff, build_task_config, launch, plan_next_machine, task_yaml, validate_task_config

__all__ = [
    "Offer", "Feed", "FeedWarning", "TableFeed", "AwsSpotFeed", "SkyPilotCatalogFeed", "CombinedFeed",
    "default_feed",
    "JobProfile", "MoveCosts", "Hysteresis", "Quote", "Decision", "PlacementPolicy",
    "HandOff", "build_task_config", "validate_task_config", "task_yaml", "launch", "plan_next_machine",
]
