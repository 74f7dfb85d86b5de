"""Price and capacity feeds: the table, AWS spot history through boto3 (moto), SkyPilot's catalog,
and degradation to the table when a feed is missing or failing."""

from __future__ import annotations

import collections
import socket

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from agnostic_rt.placement.feeds import (
    AWS_GPU_INSTANCES,
    AwsSpotFeed,
    CombinedFeed,
    FeedWarning,
    Offer,
    SkyPilotCatalogFeed,
    TableFeed,
    accelerator_target,
)


@pytest.fixture
def aws_env(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shipped_table_offers_both_vendors_spot_and_on_demand():
    offers = TableFeed().offers()
    assert {o.target.vendor for o in offers} == {"nvidia", "amd"}
    assert {o.spot for o in offers} == {True, False}
    assert all(o.price_per_hour > 0 and o.source == "table" for o in offers)


def test_user_table_rows_are_read_with_comments_skipped(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("# my prices\ncloud,region,accelerator,spot,price_per_hour,available\n"
                    "lambda,us-south-1,H100,no,2.49,yes\nazure,eastus,MI300X,yes,1.75,0\n")
    offers = TableFeed(path).offers()
    assert offers == [Offer("lambda", "us-south-1", "H100", False, 2.49, True, "table"),
                      Offer("azure", "eastus", "MI300X", True, 1.75, False, "table")]


def test_table_with_unknown_accelerator_names_row_and_valid_names(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("cloud,region,accelerator,spot,price_per_hour,available\naws,us-east-1,V100,true,1,true\n")
    with pytest.raises(KeyError, match=r"unknown accelerator 'V100'; expected one of: H100"):
        TableFeed(path).offers()


def test_table_with_negative_price_is_rejected_with_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("cloud,region,accelerator,spot,price_per_hour,available\naws,us-east-1,H100,true,-2,true\n")
    with pytest.raises(ValueError, match=r"row 2: price_per_hour=-2.0 is negative"):
        TableFeed(path).offers()


def test_aws_spot_feed_prices_per_gpu_from_spot_price_history(aws_env):
    with mock_aws():
        raw = boto3.client("ec2", region_name="us-east-1").describe_spot_price_history(
            InstanceTypes=sorted(AWS_GPU_INSTANCES), ProductDescriptions=["Linux/UNIX"])["SpotPriceHistory"]
        offers = AwsSpotFeed(regions=["us-east-1"]).offers()
    assert offers, "moto quotes every requested instance type"
    itype = raw[0]["InstanceType"]
    acc, count = AWS_GPU_INSTANCES[itype]
    quoted = min(float(r["SpotPrice"]) for r in raw if r["InstanceType"] == itype)
    mine = [o for o in offers if o.accelerator == acc]
    assert any(o.price_per_hour == pytest.approx(quoted / count) for o in mine)
    assert all(o.spot and o.cloud == "aws" and o.region == "us-east-1" and o.source == "aws-spot"
               for o in offers)


def test_aws_spot_feed_gives_one_offer_per_region_and_quoted_instance_type(aws_env):
    def quoted_types(region: str) -> set[str]:
        history = boto3.client("ec2", region_name=region).describe_spot_price_history(
            InstanceTypes=sorted(AWS_GPU_INSTANCES), ProductDescriptions=["Linux/UNIX"])["SpotPriceHistory"]
        return {h["InstanceType"] for h in history}

    with mock_aws():
        quoted = {r: quoted_types(r) for r in ("us-east-1", "us-west-2")}
        offers = AwsSpotFeed(regions=["us-east-1", "us-west-2"]).offers()
    per_region = collections.Counter(o.region for o in offers)
    assert per_region == {r: len(types) for r, types in quoted.items()}


def test_unreachable_aws_degrades_to_table_with_warning(aws_env):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    cfg = Config(connect_timeout=1, read_timeout=1, retries={"max_attempts": 1})
    feed = AwsSpotFeed(
        regions=["us-east-1"],
        client_factory=lambda r: boto3.client("ec2", region_name=r, endpoint_url=endpoint, config=cfg))
    combined = CombinedFeed([feed], fallback=TableFeed())
    with pytest.warns(FeedWarning, match="'aws-spot' failed"):
        offers = combined.offers()
    assert offers == TableFeed().offers()
    assert "EndpointConnectionError" in combined.failures["aws-spot"]


def test_missing_skypilot_degrades_to_table_with_warning():
    try:
        import sky  # noqa: F401
        pytest.skip("skypilot is installed here; this checks the machine without it")
    except ImportError:
        pass
    with pytest.warns(FeedWarning,
                      match="'skypilot-catalog' failed.*FeedUnavailable.*agnostic-rt\\[placement\\]"):
        offers = CombinedFeed([SkyPilotCatalogFeed()]).offers()
    assert offers == TableFeed().offers()


def test_live_offer_replaces_table_row_for_the_same_market_when_another_feed_fails():
    live = Offer("aws", "us-east-1", "H100", True, 1.23, True, "live")

    class Broken:
        name = "broken"

        def offers(self):
            raise TimeoutError("no answer in 10 s")

    with pytest.warns(FeedWarning, match="'broken' failed \\(TimeoutError: no answer in 10 s\\)"):
        offers = CombinedFeed([TableFeed(rows=[live]), Broken()]).offers()
    same_market = [o for o in offers if o.key == live.key]
    assert same_market == [live]
    assert len(offers) == len(TableFeed().offers())  # the table filled in every other market


def test_healthy_feeds_are_used_without_the_table():
    live = [Offer("aws", "us-east-1", "H100", True, 1.23, True, "live")]
    assert CombinedFeed([TableFeed(rows=live)]).offers() == live


def test_skypilot_catalog_rows_become_per_gpu_spot_and_on_demand_offers():
    # skypilot is not installed here: a stand-in with sky.catalog.list_accelerators' signature and rows.
    Info = collections.namedtuple("InstanceTypeInfo",
                                  "cloud instance_type accelerator_name accelerator_count "
                                  "cpu_count device_memory memory price spot_price region")

    class Catalog:
        def list_accelerators(self, gpus_only, name_filter, case_sensitive, clouds, all_regions):
            rows = {"MI300X": [Info("Azure", "Standard_ND96isr_MI300X_v5", "MI300X", 8, 96, 1536, 1850,
                                    48.0, 20.0, "eastus")],
                    "H100": [Info("GCP", "a3-highgpu-8g", "H100", 8, 208, 640, 1872, 88.0, float("nan"),
                                  "us-central1")]}
            return {name_filter: rows[name_filter]}

    offers = SkyPilotCatalogFeed(accelerators=["MI300X", "H100"], catalog=Catalog()).offers()
    assert sorted((o.cloud, o.accelerator, o.spot, o.price_per_hour) for o in offers) == [
        ("azure", "MI300X", False, 6.0), ("azure", "MI300X", True, 2.5), ("gcp", "H100", False, 11.0)]


def test_accelerator_target_maps_skypilot_names_to_targets():
    assert accelerator_target("A100-80GB").name == "a100"
    assert accelerator_target("mi300x").vendor == "amd"
