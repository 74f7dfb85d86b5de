"""Price and availability traces: what the simulator replays.

A trace is a list of rows ``time, cloud, region, accelerator, spot_price, available`` (plus an
optional ``on_demand_price``), prices in USD per accelerator-hour. A row sets its market's state from
its time on, until that market's next row: a trace that lists every market at every tick (what the
generator writes) and an exported price history that lists only changes read the same way.

``time`` is hours from the start (a number) or an ISO-8601 timestamp (hours since the first row).

Accepted inputs (:func:`read_trace`):

- this CSV format (what :func:`write_trace` and the generator write);
- an AWS spot price history export, ``aws ec2 describe-spot-price-history --output json > f.json``
  (``{"SpotPriceHistory": [{"AvailabilityZone", "InstanceType", "SpotPrice", "Timestamp"}, ...]}``):
  GPU instance types become per-GPU prices in the zone's region; AWS exports carry no availability,
  so every quoted market counts as available.

The synthetic generator (:func:`generate_trace`, parameters in :class:`TraceParams`) models each
spot market as a mean-reverting (Ornstein-Uhlenbeck) price in log space around a fraction of its
on-demand price, and its capacity as a two-state Markov chain: a reclaim rate per hour takes it
away (a preemption for whoever runs there) and outages last ``mean_outage_h`` on average.

    trace = generate_trace(TraceParams(hours=96, seed=7))
    write_trace(trace, "spot.csv")
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from .feeds import ACCELERATOR_TARGETS, AWS_GPU_INSTANCES

__all__ = ["TraceRow", "Trace", "MarketSpec", "TraceParams", "generate_trace", "read_trace", "write_trace",
           "shipped_trace_path", "SHIPPED_TRACE_PARAMS", "DEFAULT_MARKETS"]

Market = tuple[str, str, str]  # (cloud, region, accelerator)
_FIELDS = ("time", "cloud", "region", "accelerator", "spot_price", "available")


@dataclass(frozen=True)
class TraceRow:
    time_h: float
    cloud: str
    region: str
    accelerator: str
    spot_price: float
    available: bool
    on_demand_price: float | None = None

    @property
    def market(self) -> Market:
        return (self.cloud, self.region, self.accelerator)


@dataclass(frozen=True)
class MarketState:
    spot_price: float
    available: bool
    on_demand_price: float | None


@dataclass
class Trace:
    """Rows sorted by time; ``snapshots()`` replays them as the state of every market at each tick.

    >>> trace = generate_trace(TraceParams(hours=2, step_h=1.0))
    >>> [t for t, _ in trace.snapshots()]
    [0.0, 1.0, 2.0]
    """

    rows: list[TraceRow]
    params: dict = field(default_factory=dict)  # how it was made (generator parameters), if known
    source: str = ""

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError(f"trace {self.source or '<memory>'} has no rows")
        self.rows.sort(key=lambda r: r.time_h)

    @property
    def markets(self) -> list[Market]:
        return sorted({r.market for r in self.rows})

    @property
    def duration_h(self) -> float:
        return self.rows[-1].time_h - self.rows[0].time_h

    def snapshots(self) -> Iterator[tuple[float, dict[Market, MarketState]]]:
        """(time, state of every market seen so far) at each distinct time, in order."""
        state: dict[Market, MarketState] = {}
        i, rows = 0, self.rows
        while i < len(rows):
            t = rows[i].time_h
            while i < len(rows) and rows[i].time_h == t:
                r = rows[i]
                od = r.on_demand_price if r.on_demand_price is not None else (
                    state[r.market].on_demand_price if r.market in state else None)
                state[r.market] = MarketState(r.spot_price, r.available, od)
                i += 1
            yield t, dict(state)


@dataclass(frozen=True)
class MarketSpec:
    """One spot market of the synthetic trace: where, what, its on-demand price and its behaviour."""

    cloud: str
    region: str
    accelerator: str
    on_demand_price: float  # USD per accelerator-hour
    spot_fraction: float = 0.45  # long-run mean spot price / on-demand price
    reclaims_per_h: float = 0.08  # rate at which capacity disappears (preemptions)
    mean_outage_h: float = 2.0  # how long it stays gone, on average


# Mirrors the spot markets of data/offers.csv: three H100 markets in two clouds, H200, A100 and MI300X.
DEFAULT_MARKETS: tuple[MarketSpec, ...] = (
    MarketSpec("aws", "us-east-1", "H100", 6.88, 0.55, 0.10, 2.0),
    MarketSpec("aws", "us-west-2", "H100", 6.88, 0.50, 0.12, 3.0),
    MarketSpec("gcp", "us-central1", "H100", 11.06, 0.27, 0.15, 2.0),
    MarketSpec("aws", "us-east-1", "H200", 7.91, 0.58, 0.08, 2.0),
    MarketSpec("aws", "us-east-1", "A100-80GB", 3.43, 0.55, 0.05, 1.5),
    MarketSpec("azure", "eastus", "MI300X", 6.00, 0.43, 0.05, 2.0),
)


@dataclass(frozen=True)
class TraceParams:
    """Parameters of :func:`generate_trace` (all documented in the module docstring).

    - ``hours``, ``step_h``: length of the trace and the tick between rows.
    - ``volatility``: standard deviation of log spot price per sqrt(hour).
    - ``reversion_per_h``: how fast the log price returns to its mean (OU theta, per hour).
    - ``markets``: the spot markets and their mean price, reclaim rate and outage length.
    - ``seed``: the random seed; equal parameters give an equal trace.
    """

    hours: float = 96.0
    step_h: float = 0.25
    volatility: float = 0.15
    reversion_per_h: float = 0.2
    markets: tuple[MarketSpec, ...] = DEFAULT_MARKETS
    seed: int = 7

    def __post_init__(self) -> None:
        if self.hours <= 0 or self.step_h <= 0:
            raise ValueError(f"hours={self.hours} and step_h={self.step_h} must be > 0")
        for m in self.markets:
            if m.accelerator.upper() not in ACCELERATOR_TARGETS:
                raise ValueError(f"market {m}: unknown accelerator; expected one of {', '.join(ACCELERATOR_TARGETS)}")

    def describe(self) -> dict:
        d = asdict(self)
        d["markets"] = [f"{m.cloud}/{m.region} {m.accelerator} od=${m.on_demand_price}/h spot~{m.spot_fraction:.0%} "
                        f"reclaims={m.reclaims_per_h}/h outage~{m.mean_outage_h}h" for m in self.markets]
        return d


def generate_trace(params: TraceParams = TraceParams()) -> Trace:
    """A synthetic trace: OU log-prices around ``spot_fraction`` x on-demand, Markov availability.

    >>> trace = generate_trace(TraceParams(hours=24, seed=1))
    >>> len(trace.markets)
    6
    """
    rng = random.Random(params.seed)
    n = int(round(params.hours / params.step_h))
    dt = params.step_h
    rows: list[TraceRow] = []
    logp = {m: math.log(m.spot_fraction * m.on_demand_price) for m in params.markets}
    up = {m: True for m in params.markets}
    decay = math.exp(-params.reversion_per_h * dt)
    # Stationary OU noise: the step's std keeps the long-run spread at volatility / sqrt(2 theta).
    step_sd = params.volatility * math.sqrt((1 - decay**2) / (2 * params.reversion_per_h))
    for i in range(n + 1):
        t = round(i * dt, 6)
        for m in params.markets:
            mean = math.log(m.spot_fraction * m.on_demand_price)
            if i:
                logp[m] = mean + (logp[m] - mean) * decay + rng.gauss(0.0, step_sd)
                p_down = 1 - math.exp(-m.reclaims_per_h * dt)
                p_up = 1 - math.exp(-dt / m.mean_outage_h)
                up[m] = (rng.random() >= p_down) if up[m] else (rng.random() < p_up)
            price = min(math.exp(logp[m]), m.on_demand_price)  # spot never bills above on-demand
            rows.append(TraceRow(t, m.cloud, m.region, m.accelerator, round(price, 4), up[m], m.on_demand_price))
    return Trace(rows, params.describe(), source=f"generate_trace(seed={params.seed})")


def write_trace(trace: Trace, path: str | Path) -> Path:
    """Write ``trace`` as CSV, its generator parameters (if any) as ``#`` comment lines on top."""
    path = Path(path)
    with path.open("w", newline="") as f:
        if trace.params:
            f.write(f"# agnostic-rt spot trace; generator parameters: {json.dumps(trace.params)}\n")
        w = csv.writer(f)
        w.writerow([*_FIELDS, "on_demand_price"])
        for r in trace.rows:
            w.writerow([f"{r.time_h:g}", r.cloud, r.region, r.accelerator, f"{r.spot_price:g}", int(r.available),
                        "" if r.on_demand_price is None else f"{r.on_demand_price:g}"])
    return path


def _hours(values: Sequence[str], where: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except ValueError:
        pass
    try:
        stamps = [_dt.datetime.fromisoformat(v.replace("Z", "+00:00")) for v in values]
    except ValueError as exc:
        raise ValueError(f"{where}: time column holds neither hours nor ISO-8601 timestamps ({exc})") from None
    start = min(stamps)
    return [(s - start).total_seconds() / 3600.0 for s in stamps]


def _bool(v: str, where: str) -> bool:
    s = v.strip().lower()
    if s in ("1", "true", "yes", "y"):
        return True
    if s in ("0", "false", "no", "n"):
        return False
    raise ValueError(f"{where}: available={v!r}; expected 1/0, true/false or yes/no")


def _read_csv(path: Path) -> Trace:
    text = path.read_text()
    params: dict = {}
    body = []
    for line in text.splitlines():
        if line.startswith("#"):
            if "generator parameters:" in line:
                params = json.loads(line.split("generator parameters:", 1)[1])
            continue
        if line.strip():
            body.append(line)
    reader = csv.DictReader(body)
    missing = [f for f in _FIELDS if f not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: trace lacks columns {missing}; expected header {','.join(_FIELDS)}[,on_demand_price]")
    raw = list(reader)
    times = _hours([r["time"] for r in raw], str(path))
    rows = []
    for i, (r, t) in enumerate(zip(raw, times), start=2):
        where = f"{path} row {i}"
        acc = r["accelerator"].strip()
        if acc.upper() not in ACCELERATOR_TARGETS:
            raise ValueError(f"{where}: unknown accelerator {acc!r}; expected one of {', '.join(ACCELERATOR_TARGETS)}")
        try:
            price = float(r["spot_price"])
            od = float(r["on_demand_price"]) if (r.get("on_demand_price") or "").strip() else None
        except ValueError:
            raise ValueError(f"{where}: spot_price={r['spot_price']!r} / on_demand_price="
                             f"{r.get('on_demand_price')!r} must be numbers (USD per hour)") from None
        rows.append(TraceRow(t, r["cloud"].strip().lower(), r["region"].strip(), acc, price,
                             _bool(r["available"], where), od))
    return Trace(rows, params, source=str(path))


def _read_aws_json(path: Path) -> Trace:
    data = json.loads(path.read_text())
    items = data.get("SpotPriceHistory") if isinstance(data, dict) else None
    if items is None:
        raise ValueError(f"{path}: not an AWS spot price export (no 'SpotPriceHistory' list at the top)")
    keep = [it for it in items if it.get("InstanceType") in AWS_GPU_INSTANCES]
    if not keep:
        raise ValueError(f"{path}: no GPU instance types in the export; known: {', '.join(AWS_GPU_INSTANCES)}")
    times = _hours([str(it["Timestamp"]) for it in keep], str(path))
    rows = []
    for it, t in zip(keep, times):
        acc, count = AWS_GPU_INSTANCES[it["InstanceType"]]
        region = it["AvailabilityZone"].rstrip("abcdefghijklmnopqrstuvwxyz") if it.get("AvailabilityZone") else ""
        rows.append(TraceRow(t, "aws", region, acc, float(it["SpotPrice"]) / count, True))
    # Several zones of one region quote at once: keep the cheapest per (time, market).
    best: dict[tuple[float, Market], TraceRow] = {}
    for r in rows:
        k = (r.time_h, r.market)
        if k not in best or r.spot_price < best[k].spot_price:
            best[k] = r
    return Trace(list(best.values()), {}, source=str(path))


def read_trace(path: str | Path) -> Trace:
    """Read a trace: our CSV, or an AWS ``describe-spot-price-history`` JSON export (by extension).

    >>> read_trace(shipped_trace_path()).duration_h
    96.0
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"trace {path} does not exist")
    return _read_aws_json(path) if path.suffix.lower() == ".json" else _read_csv(path)


def shipped_trace_path() -> Path:
    """The trace shipped in the package (generated by ``generate_trace(SHIPPED_TRACE_PARAMS)``)."""
    return Path(str(resources.files("agnostic_rt.placement").joinpath("data/spot_trace.csv")))


# The shipped file's parameters; `python -m agnostic_rt.placement.trace` regenerates it.
SHIPPED_TRACE_PARAMS = TraceParams()


if __name__ == "__main__":
    print(write_trace(generate_trace(SHIPPED_TRACE_PARAMS), shipped_trace_path()))
