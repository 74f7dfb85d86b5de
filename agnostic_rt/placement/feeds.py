"""Capacity and price feeds: where a GPU can be had, at what price per hour, right now.

Every source answers one small protocol, :class:`Feed` (``name`` and ``offers()``), and speaks in
:class:`Offer` rows priced per accelerator-hour, so an 8-GPU instance and a 1-GPU one compare:

    TableFeed          a user-editable CSV (cloud, region, accelerator, spot, price_per_hour, available);
                       the shipped one is ``agnostic_rt/placement/data/offers.csv``
    AwsSpotFeed        EC2 spot price history through boto3 (GPU instance types only)
    SkyPilotCatalogFeed SkyPilot's catalog (``sky.catalog.list_accelerators``), when skypilot is installed
    CombinedFeed       several feeds at once; a feed that is missing or fails is replaced by the table,
                       with a :class:`FeedWarning`, never an exception

    feed = CombinedFeed([AwsSpotFeed(regions=["us-east-1"]), SkyPilotCatalogFeed()], fallback=TableFeed())
    cheapest = min(feed.offers(), key=lambda o: o.price_per_hour)
"""

from __future__ import annotations

import csv
import datetime
import io
import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..targets import KNOWN_TARGETS, Target, host_cpu_target

__all__ = [
    "Offer", "Feed", "FeedWarning", "FeedUnavailable", "TableFeed", "AwsSpotFeed", "SkyPilotCatalogFeed",
    "CombinedFeed", "default_feed", "accelerator_target", "ACCELERATOR_TARGETS", "AWS_GPU_INSTANCES",
]

log = logging.getLogger("agnostic_rt.placement.feeds")

# SkyPilot's canonical accelerator names -> our Target registry keys. "CPU" is the host, for the demo.
ACCELERATOR_TARGETS: dict[str, str] = {
    "H100": "h100", "H100-80GB": "h100", "H100-MEGA": "h100", "H200": "h200",
    "A100": "a100", "A100-80GB": "a100", "MI300X": "mi300x", "MI250X": "mi250x", "CPU": "cpu",
}

# EC2 GPU instance types -> (accelerator, count). Spot prices are per instance; offers are per GPU.
AWS_GPU_INSTANCES: dict[str, tuple[str, int]] = {
    "p5.48xlarge": ("H100", 8),
    "p5.4xlarge": ("H100", 1),
    "p5e.48xlarge": ("H200", 8),
    "p5en.48xlarge": ("H200", 8),
    "p4d.24xlarge": ("A100", 8),
    "p4de.24xlarge": ("A100-80GB", 8),
}

_TABLE_FIELDS = ("cloud", "region", "accelerator", "spot", "price_per_hour", "available")


class FeedWarning(UserWarning):
    """A feed could not answer and the table stood in for it."""


class FeedUnavailable(RuntimeError):
    """A feed cannot run here at all (its library is not installed, or it is not configured)."""


def accelerator_target(accelerator: str) -> Target:
    """The Target for a SkyPilot accelerator name ("H100", "MI300X", "A100-80GB", "CPU").

    >>> accelerator_target("MI300X").arch
    'gfx942'
    """
    key = ACCELERATOR_TARGETS.get(accelerator.upper())
    if key is None:
        raise KeyError(
            f"unknown accelerator {accelerator!r}; expected one of: {', '.join(ACCELERATOR_TARGETS)}"
        )
    return host_cpu_target() if key == "cpu" else KNOWN_TARGETS[key]


@dataclass(frozen=True)
class Offer:
    """One market: an accelerator in a cloud region, spot or on-demand, priced per accelerator-hour.

    >>> Offer("aws", "us-east-1", "H100", spot=True, price_per_hour=3.9).target.vendor
    'nvidia'
    """

    cloud: str
    region: str
    accelerator: str  # SkyPilot's canonical name: "H100", "MI300X", ...
    spot: bool
    price_per_hour: float  # USD per accelerator-hour
    available: bool = True
    source: str = "table"

    @property
    def key(self) -> tuple[str, str, str, bool]:
        """What identifies the market across price updates."""
        return (self.cloud, self.region, self.accelerator, self.spot)

    @property
    def target(self) -> Target:
        return accelerator_target(self.accelerator)

    @property
    def infra(self) -> str:
        """SkyPilot's ``infra`` string: ``cloud/region``."""
        return f"{self.cloud}/{self.region}" if self.region else self.cloud

    def __str__(self) -> str:
        kind = "spot" if self.spot else "on-demand"
        return f"{self.accelerator} {kind} {self.infra} ${self.price_per_hour:.2f}/h"


@runtime_checkable
class Feed(Protocol):
    """A source of offers. ``offers()`` may raise; :class:`CombinedFeed` turns that into a warning."""

    name: str

    def offers(self) -> list[Offer]: ...


def _parse_bool(value: str, field: str, where: str) -> bool:
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "y", "spot"):
        return True
    if v in ("0", "false", "no", "n", "on-demand", "ondemand", ""):
        return False
    raise ValueError(f"{where}: {field}={value!r} is not a boolean; expected true/false, yes/no or 1/0")


class TableFeed:
    """Offers from a user-editable CSV table (header: cloud,region,accelerator,spot,price_per_hour,available).

    With no path it reads the table shipped in the package. Lines starting with ``#`` are comments.

    >>> [str(o) for o in TableFeed().offers()][:1]
    ['H100 on-demand aws/us-east-1 $6.88/h']
    """

    name = "table"

    def __init__(self, path: str | Path | None = None, rows: Iterable[Offer] | None = None):
        self.path = Path(path) if path is not None else None
        self._rows = list(rows) if rows is not None else None

    def _text(self) -> tuple[str, str]:
        if self.path is not None:
            return self.path.read_text(), str(self.path)
        res = resources.files("agnostic_rt.placement").joinpath("data/offers.csv")
        return res.read_text(), "agnostic_rt/placement/data/offers.csv"

    def offers(self) -> list[Offer]:
        if self._rows is not None:
            return list(self._rows)
        text, where = self._text()
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        reader = csv.DictReader(io.StringIO("\n".join(lines)))
        missing = [f for f in _TABLE_FIELDS if f not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{where}: offers table lacks columns {missing}; "
                             f"header must have {list(_TABLE_FIELDS)}")
        out = []
        for i, row in enumerate(reader, start=2):
            at = f"{where} row {i}"
            try:
                price = float(row["price_per_hour"])
            except ValueError:
                raise ValueError(f"{at}: price_per_hour={row['price_per_hour']!r} is not a number") from None
            if price < 0:
                raise ValueError(f"{at}: price_per_hour={price} is negative; expected USD per hour >= 0")
            accelerator = row["accelerator"].strip()
            accelerator_target(accelerator)  # fail here, with the row, for an unknown name
            out.append(Offer(
                cloud=row["cloud"].strip().lower(), region=row["region"].strip(), accelerator=accelerator,
                spot=_parse_bool(row["spot"], "spot", at), price_per_hour=price,
                available=_parse_bool(row["available"], "available", at), source=self.name,
            ))
        return out


class AwsSpotFeed:
    """EC2 spot prices for GPU instance types, per GPU-hour, from ``describe_spot_price_history``.

    The newest price per (availability zone, instance type) wins; the offer's region is the zone's
    region. AWS publishes no capacity figure, so a quoted price counts as available.

    >>> AwsSpotFeed(regions=["us-east-1"]).offers()   # needs AWS credentials (or moto's mock_aws)
    """

    name = "aws-spot"

    def __init__(
        self,
        regions: Sequence[str] = ("us-east-1", "us-west-2"),
        instance_types: dict[str, tuple[str, int]] | None = None,
        client_factory: Callable[[str], Any] | None = None,
    ):
        self.regions = list(regions)
        self.instance_types = dict(instance_types or AWS_GPU_INSTANCES)
        self._client_factory = client_factory or _ec2_client

    def offers(self) -> list[Offer]:
        newest: dict[tuple[str, str], tuple[Any, float]] = {}
        for region in self.regions:
            client = self._client_factory(region)
            # StartTime=now asks for the price in effect now, not up to 90 days of history.
            pages = client.get_paginator("describe_spot_price_history").paginate(
                InstanceTypes=sorted(self.instance_types), ProductDescriptions=["Linux/UNIX"],
                StartTime=datetime.datetime.now(datetime.timezone.utc),
            )
            for page in pages:
                for item in page.get("SpotPriceHistory", []):
                    itype = item["InstanceType"]
                    if itype not in self.instance_types:
                        continue
                    key = (region, itype)
                    stamp = item.get("Timestamp")
                    if key not in newest or (stamp is not None and stamp > newest[key][0]):
                        newest[key] = (stamp, float(item["SpotPrice"]))
        out = []
        for (region, itype), (_, price) in sorted(newest.items()):
            accelerator, count = self.instance_types[itype]
            out.append(Offer("aws", region, accelerator, True, price / count, True, self.name))
        log.debug("aws spot feed: %d offers from %s", len(out), self.regions)
        return out


def _ec2_client(region: str) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise FeedUnavailable("AwsSpotFeed needs boto3: pip install 'agnostic-rt[placement]'") from exc
    # One quick try: a price feed that hangs would stall the placement decision it serves.
    cfg = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 1})
    return boto3.client("ec2", region_name=region, config=cfg)


class SkyPilotCatalogFeed:
    """Offers from SkyPilot's catalog (on-demand and spot per region), when skypilot is installed.

    The catalog lists prices, not live capacity: every listed offer counts as available.

    >>> SkyPilotCatalogFeed(accelerators=["H100", "MI300X"]).offers()   # needs skypilot
    """

    name = "skypilot-catalog"

    def __init__(self, accelerators: Sequence[str] = ("H100", "H200", "A100-80GB", "MI300X", "MI250X"),
                 clouds: Sequence[str] | None = None, catalog: Any = None):
        self.accelerators = list(accelerators)
        self.clouds = list(clouds) if clouds else None
        self._catalog = catalog

    def _load_catalog(self) -> Any:
        if self._catalog is not None:
            return self._catalog
        try:
            from sky import catalog  # skypilot >= 0.10; older releases called it sky.clouds.service_catalog
        except ImportError:
            try:
                from sky.clouds import service_catalog as catalog
            except ImportError as exc:
                raise FeedUnavailable(
                    "SkyPilotCatalogFeed needs skypilot: pip install 'agnostic-rt[placement]'"
                ) from exc
        return catalog

    def offers(self) -> list[Offer]:
        catalog = self._load_catalog()
        out = []
        for name in self.accelerators:
            found = catalog.list_accelerators(gpus_only=True, name_filter=name, case_sensitive=False,
                                              clouds=self.clouds, all_regions=True)
            for acc, infos in found.items():
                if acc.upper() not in ACCELERATOR_TARGETS:
                    continue
                for info in infos:
                    count = float(info.accelerator_count or 1)
                    for spot, price in ((False, info.price), (True, info.spot_price)):
                        if price is None or price != price or price <= 0:  # NaN or unlisted
                            continue
                        out.append(Offer(str(info.cloud).lower(), info.region or "", acc, spot,
                                         float(price) / count, True, self.name))
        return out


class CombinedFeed:
    """All offers of several feeds; a feed that raises is replaced by ``fallback`` with a FeedWarning.

    When every feed fails the answer is the fallback table's alone. The fallback itself must work
    (it is a local file): its errors propagate.

    >>> offers = CombinedFeed([AwsSpotFeed()], fallback=TableFeed()).offers()
    """

    name = "combined"

    def __init__(self, feeds: Sequence[Feed], fallback: Feed | None = None):
        self.feeds = list(feeds)
        self.fallback = fallback if fallback is not None else TableFeed()
        self.failures: dict[str, str] = {}

    def offers(self) -> list[Offer]:
        self.failures = {}
        live: list[Offer] = []
        for feed in self.feeds:
            try:
                live.extend(feed.offers())
            except Exception as exc:  # a feed is advice: any failure degrades, none crashes
                self.failures[feed.name] = f"{type(exc).__name__}: {exc}"
                msg = (f"price feed {feed.name!r} failed ({type(exc).__name__}: {exc}); "
                       f"using the {self.fallback.name} instead")
                log.warning(msg)
                warnings.warn(msg, FeedWarning, stacklevel=2)
        if not self.failures and live:
            return live
        # Live offers win over the table's for the same market; the table fills in the rest.
        table = self.fallback.offers()
        seen = {o.key for o in live}
        return live + [o for o in table if o.key not in seen]


def default_feed(aws_regions: Sequence[str] = ("us-east-1", "us-west-2")) -> CombinedFeed:
    """AWS spot prices and SkyPilot's catalog, backed by the shipped table.

    >>> default_feed().offers()   # works offline: both live feeds degrade to the table, with warnings
    """
    return CombinedFeed([AwsSpotFeed(aws_regions), SkyPilotCatalogFeed()], fallback=TableFeed())
