"""Placement policy: where should this run live, given prices, availability and what moving costs?

The cost of finishing the job on a candidate market is

    price_per_hour x (hours to finish there + hours lost to the move, if it is a move)

- hours to finish: remaining steps x step time. The step time is the roofline of the candidate's
  :class:`~agnostic_rt.targets.Target` (max of FLOPs / (peak x MFU) and bytes / bandwidth), replaced
  by the run's measured step time on that target when it has one.
- a move costs checkpoint size / bandwidth (written here, read there), provisioning, recompiling,
  and the steps since the last checkpoint (zero when the move follows a notice: we checkpoint first).
- spot markets carry an expected-interruption term: hazard per hour x hours x move time.

Hysteresis keeps flickering prices from thrashing the run: while the current market is available,
the policy moves only when the best candidate is cheaper by ``margin`` (a fraction) *and* the run
has stayed at least ``min_dwell_h`` where it is. An unavailable current market (a spot notice)
always moves.

    policy = PlacementPolicy()
    decision = policy.decide(feed.offers(), job, current=offer_we_run_on, since_move_h=3.0)
    agnostic_rt.select_device(policy)          # as a device policy over the local devices
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..targets import KNOWN_TARGETS, Target
from .feeds import Offer

if TYPE_CHECKING:
    from agnostic_rt.training.devices import Device

__all__ = ["JobProfile", "MoveCosts", "Hysteresis", "Quote", "Decision", "PlacementPolicy", "DEFAULT_MFU"]

log = logging.getLogger("agnostic_rt.placement.policy")

# Fraction of peak bf16 a training step reaches, per vendor, when nothing was measured. AMD's lower
# figure reflects public MI300X training reports (software maturity, not silicon); measure to replace it.
DEFAULT_MFU: dict[str, float] = {"nvidia": 0.40, "amd": 0.30, "cpu": 0.50}


@dataclass(frozen=True)
class JobProfile:
    """What is left of a training run, in the units the roofline needs.

    >>> job = JobProfile.from_gpu_hours(100.0)            # 100 H100-hours of work
    >>> round(job.hours_to_finish(KNOWN_TARGETS["h100"]), 6)
    100.0
    """

    remaining_steps: int
    flops_per_step: float
    bytes_per_step: float = 0.0  # device-memory traffic per step (the roofline's other axis)
    checkpoint_bytes: float = 0.0
    dtype: str = "bfloat16"
    mfu: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MFU))
    measured_step_s: Mapping[str, float] = field(default_factory=dict)  # Target.name -> seconds per step

    def __post_init__(self) -> None:
        if self.remaining_steps < 0:
            raise ValueError(f"remaining_steps={self.remaining_steps} is negative; expected >= 0")
        if self.flops_per_step <= 0 and not self.measured_step_s:
            raise ValueError(f"flops_per_step={self.flops_per_step} must be > 0 (or give measured_step_s)")

    @classmethod
    def from_gpu_hours(cls, gpu_hours: float, reference: str = "h100", flops_per_step: float = 1e15,
                       **kw) -> JobProfile:
        """A job that takes ``gpu_hours`` on one ``reference`` GPU by the roofline (the simulator's unit)."""
        if gpu_hours <= 0:
            raise ValueError(f"gpu_hours={gpu_hours} must be > 0")
        probe = cls(remaining_steps=1, flops_per_step=flops_per_step, **kw)
        steps = gpu_hours * 3600.0 / probe.step_time(KNOWN_TARGETS[reference])
        # Keep the exact figure: a whole number of steps would make "100 GPU-hours" 99.99.
        whole_steps = max(1, round(steps))
        return cls(remaining_steps=whole_steps, flops_per_step=flops_per_step * steps / whole_steps, **kw)

    def step_time(self, target: Target) -> float:
        """Seconds per step on ``target``: measured if known, else the roofline."""
        measured = self.measured_step_s.get(target.name)
        if measured is not None:
            return float(measured)
        mfu = self.mfu.get(target.vendor, 0.3)
        compute = self.flops_per_step / (target.flops(self.dtype) * mfu)
        memory = self.bytes_per_step / target.mem_bandwidth if self.bytes_per_step else 0.0
        return max(compute, memory)

    def hours_to_finish(self, target: Target) -> float:
        return self.remaining_steps * self.step_time(target) / 3600.0

    def after(self, steps_done: int) -> JobProfile:
        """The same job with ``steps_done`` fewer steps left."""
        return replace(self, remaining_steps=max(0, self.remaining_steps - steps_done))


@dataclass(frozen=True)
class MoveCosts:
    """What a move from one machine to another costs, in time (the new machine bills meanwhile).

    >>> job = JobProfile(1, 1e12, checkpoint_bytes=9e9)
    >>> MoveCosts(bandwidth=1e9, provision_s=0, recompile_s=60).move_hours(job, KNOWN_TARGETS["h100"]) * 3600
    78.0
    """

    bandwidth: float = 1e9  # bytes/s to write and read the checkpoint through the bucket
    provision_s: float = 300.0  # SkyPilot finding and booting the next machine
    recompile_s: float = 120.0  # torch.compile on the new target (cold cache)
    lost_steps: int = 0  # steps since the last checkpoint that a move throws away

    def move_hours(self, job: JobProfile, to: Target) -> float:
        io = 2.0 * job.checkpoint_bytes / self.bandwidth if job.checkpoint_bytes else 0.0
        lost = self.lost_steps * job.step_time(to)
        return (io + self.provision_s + self.recompile_s + lost) / 3600.0


@dataclass(frozen=True)
class Hysteresis:
    """Move only for a saving of at least ``margin`` (fraction) after at least ``min_dwell_h`` in place."""

    margin: float = 0.10
    min_dwell_h: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"hysteresis margin={self.margin} must be in [0, 1)")
        if self.min_dwell_h < 0:
            raise ValueError(f"min_dwell_h={self.min_dwell_h} must be >= 0")


@dataclass(frozen=True)
class Quote:
    """The cost of finishing the job on one offer."""

    offer: Offer
    run_hours: float  # training time there
    move_hours: float  # time lost to getting there (0 when staying)
    cost_usd: float

    @property
    def hours(self) -> float:
        return self.run_hours + self.move_hours


@dataclass(frozen=True)
class Decision:
    """``action`` is "start" (no current market), "stay" or "move"; ``quote`` is where to run next."""

    action: str
    quote: Quote
    current: Quote | None
    ranked: tuple[Quote, ...]
    reason: str

    @property
    def offer(self) -> Offer:
        return self.quote.offer


@dataclass
class PlacementPolicy:
    """Ranks offers by the cost of finishing the job there, moves with hysteresis.

    Also a device policy: ``select_device(policy)`` calls it with the local devices and it returns
    the one that finishes ``job`` cheapest at ``local_prices`` (USD/h by Target name or vendor) or,
    with no prices at all, soonest.

    >>> PlacementPolicy().decide(TableFeed().offers(), JobProfile.from_gpu_hours(10)).offer.accelerator
    'MI300X'
    """

    move: MoveCosts = field(default_factory=MoveCosts)
    hysteresis: Hysteresis = field(default_factory=Hysteresis)
    spot_hazard_per_hour: float = 0.05  # expected interruptions per hour on a spot market
    vendors: tuple[str, ...] = ("nvidia", "amd")
    allow_spot: bool = True
    allow_on_demand: bool = True
    job: JobProfile | None = None  # for use as a device policy
    local_prices: Mapping[str, float] = field(default_factory=dict)

    def quote(self, offer: Offer, job: JobProfile, current: Offer | None = None) -> Quote:
        """The cost of finishing ``job`` on ``offer`` (a move unless ``offer`` is ``current``'s market)."""
        target = offer.target
        run_h = job.hours_to_finish(target)
        moving = current is None or offer.key != current.key
        move_h = self.move.move_hours(job, target) if moving else 0.0
        if offer.spot:
            # Each interruption costs about one move (we checkpoint on the notice, so no lost steps).
            move_h += self.spot_hazard_per_hour * run_h * self.move.move_hours(job, target)
        return Quote(offer, run_h, move_h, offer.price_per_hour * (run_h + move_h))

    def eligible(self, offer: Offer) -> bool:
        if not offer.available or offer.target.vendor not in self.vendors:
            return False
        return self.allow_spot if offer.spot else self.allow_on_demand

    def rank(self, offers: Sequence[Offer], job: JobProfile, current: Offer | None = None) -> list[Quote]:
        """Eligible offers, cheapest finish first (ties: sooner finish)."""
        quotes = [self.quote(o, job, current) for o in offers if self.eligible(o)]
        return sorted(quotes, key=lambda q: (q.cost_usd, q.hours, q.offer.key))

    def decide(self, offers: Sequence[Offer], job: JobProfile, current: Offer | None = None,
               since_move_h: float = math.inf) -> Decision:
        """Stay or move. ``current`` is the market the run is on (None before it starts); an entry of
        ``offers`` with the same market replaces it (its price and availability are the fresh ones)."""
        if current is not None:
            current = next((o for o in offers if o.key == current.key), current)
        ranked = self.rank(offers, job, current)
        if not ranked:
            raise LookupError(
                f"no eligible offer among {len(offers)} (vendors={self.vendors}, spot={self.allow_spot}, "
                f"on-demand={self.allow_on_demand}, available={sum(o.available for o in offers)})"
            )
        best = ranked[0]
        if current is None:
            return Decision("start", best, None, tuple(ranked), f"start on {best.offer}")
        if not current.available or not self.eligible(current):
            return Decision("move", best, None, tuple(ranked),
                            f"{current} is unavailable; move to {best.offer}")
        here = self.quote(current, job, current)
        if best.offer.key == current.key:
            return Decision("stay", here, here, tuple(ranked), f"{current} is the cheapest finish")
        saving = 1.0 - best.cost_usd / here.cost_usd if here.cost_usd > 0 else 0.0
        if saving < self.hysteresis.margin:
            return Decision("stay", here, here, tuple(ranked),
                            f"{best.offer} saves {saving:.1%} < margin {self.hysteresis.margin:.0%}")
        if since_move_h < self.hysteresis.min_dwell_h:
            return Decision("stay", here, here, tuple(ranked),
                            f"{best.offer} saves {saving:.1%} but only {since_move_h:.2f} h since the "
                            f"last move (< {self.hysteresis.min_dwell_h} h)")
        log.info("move %s -> %s saves %.1f%% ($%.2f -> $%.2f)", current, best.offer, 100 * saving,
                 here.cost_usd, best.cost_usd)
        return Decision("move", best, here, tuple(ranked), f"{best.offer} saves {saving:.1%}")

    # -- as a device policy for agnostic_rt.select_device -------------------------------------------
    def __call__(self, candidates: Sequence[Device]) -> Device:
        """Pick the local device that finishes ``self.job`` cheapest (or soonest when nothing is priced)."""
        if not candidates:
            raise LookupError("no candidate devices to place the job on")
        job = self.job or JobProfile(remaining_steps=1, flops_per_step=1e12)

        def price(d: Device) -> float | None:
            p = self.local_prices.get(d.target.name, self.local_prices.get(d.vendor))
            return None if p is None else float(p)

        priced = [(price(d) * job.hours_to_finish(d.target), d.index, d)
                  for d in candidates if price(d) is not None]
        if priced:
            return min(priced, key=lambda t: (t[0], t[1]))[2]
        return min(candidates, key=lambda d: (job.hours_to_finish(d.target), d.index))
