"""The placement simulator: traces (generated, written, read, AWS exports) and the three policies
replayed over hand-made traces whose outcome follows from their parameters."""

from __future__ import annotations

import json
import math

import pytest

from agnostic_rt.placement.policy import MoveCosts
from agnostic_rt.placement.simulate import SimJob, main, simulate
from agnostic_rt.placement.trace import (
    SHIPPED_TRACE_PARAMS,
    Trace,
    TraceParams,
    TraceRow,
    generate_trace,
    read_trace,
    shipped_trace_path,
    write_trace,
)

FREE = MoveCosts(bandwidth=1e9, provision_s=0.0, recompile_s=0.0)


def market_rows(cloud, region, acc, spot, on_demand, hours, step=0.25, down=()):
    """Rows for one market at a constant price; ``down`` is a list of (start, end) outages."""
    rows = []
    for i in range(int(round(hours / step)) + 1):
        t = i * step
        avail = not any(a <= t < b for a, b in down)
        rows.append(TraceRow(t, cloud, region, acc, spot, avail, on_demand))
    return rows


def test_generator_is_deterministic_for_a_seed_and_differs_across_seeds():
    a, b, c = (generate_trace(TraceParams(hours=12, seed=s)) for s in (5, 5, 6))
    assert a.rows == b.rows
    assert a.rows != c.rows


def test_generated_spot_prices_never_exceed_on_demand():
    trace = generate_trace(TraceParams(hours=48, volatility=1.0, seed=2))
    assert all(r.spot_price <= r.on_demand_price for r in trace.rows)


def test_generated_reclaim_rate_shows_up_as_outages():
    calm = generate_trace(TraceParams(hours=200, seed=3, markets=(
        TraceParams().markets[0].__class__("aws", "us-east-1", "H100", 6.88, 0.5, 0.0, 1.0),)))
    stormy = generate_trace(TraceParams(hours=200, seed=3, markets=(
        TraceParams().markets[0].__class__("aws", "us-east-1", "H100", 6.88, 0.5, 1.0, 1.0),)))
    assert all(r.available for r in calm.rows)
    assert sum(not r.available for r in stormy.rows) > len(stormy.rows) // 10


def test_trace_csv_round_trips_rows_and_parameters(tmp_path):
    trace = generate_trace(TraceParams(hours=3, seed=1))
    back = read_trace(write_trace(trace, tmp_path / "t.csv"))
    assert back.rows == trace.rows
    assert back.params == json.loads(json.dumps(trace.params))


def test_shipped_trace_is_the_documented_generator_output():
    shipped = read_trace(shipped_trace_path())
    assert shipped.rows == generate_trace(SHIPPED_TRACE_PARAMS).rows
    assert shipped.params["seed"] == SHIPPED_TRACE_PARAMS.seed


def test_iso_timestamps_become_hours_since_the_first_row(tmp_path):
    path = tmp_path / "iso.csv"
    path.write_text("time,cloud,region,accelerator,spot_price,available\n"
                    "2026-01-01T00:00:00Z,aws,us-east-1,H100,3,1\n2026-01-01T01:30:00Z,aws,us-east-1,H100,4,0\n")
    assert [(r.time_h, r.available) for r in read_trace(path).rows] == [(0.0, True), (1.5, False)]


def test_aws_spot_export_becomes_per_gpu_prices_per_region(tmp_path):
    export = {"SpotPriceHistory": [
        {"AvailabilityZone": "us-east-1a", "InstanceType": "p5.48xlarge", "ProductDescription": "Linux/UNIX",
         "SpotPrice": "32.000000", "Timestamp": "2026-01-01T00:00:00+00:00"},
        {"AvailabilityZone": "us-east-1b", "InstanceType": "p5.48xlarge", "ProductDescription": "Linux/UNIX",
         "SpotPrice": "24.000000", "Timestamp": "2026-01-01T00:00:00+00:00"},
        {"AvailabilityZone": "us-east-1a", "InstanceType": "m5.large", "ProductDescription": "Linux/UNIX",
         "SpotPrice": "0.03", "Timestamp": "2026-01-01T02:00:00+00:00"},
    ]}
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(export))
    trace = read_trace(path)
    assert [(r.region, r.accelerator, r.spot_price) for r in trace.rows] == [("us-east-1", "H100", 3.0)]


def test_sparse_trace_holds_each_market_state_until_its_next_row():
    rows = [TraceRow(0, "aws", "us-east-1", "H100", 3.0, True), TraceRow(0, "gcp", "us-central1", "H100", 2.0, True),
            TraceRow(1, "aws", "us-east-1", "H100", 4.0, False)]
    snaps = list(Trace(rows).snapshots())
    assert snaps[1][1][("gcp", "us-central1", "H100")].spot_price == 2.0
    assert snaps[1][1][("aws", "us-east-1", "H100")].available is False


def test_bad_trace_row_error_names_the_row_and_the_valid_values(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("time,cloud,region,accelerator,spot_price,available\n0,aws,us-east-1,H100,3,maybe\n")
    with pytest.raises(ValueError, match=r"row 2: available='maybe'; expected 1/0"):
        read_trace(path)


def test_on_demand_cost_is_price_times_gpus_times_hours():
    trace = Trace(market_rows("aws", "us-east-1", "H100", 2.0, 6.0, hours=10, down=[(1, 3)]))
    job = SimJob(gpu_hours=16, gpus=4, checkpoint_gb=0, move=FREE)
    r = simulate(trace, job, ["on-demand"])["on-demand"]
    assert (r.preemptions, r.lost_work_h) == (0, 0.0)
    assert r.hours == pytest.approx(16 / 4)
    assert r.cost_usd == pytest.approx(6.0 * 4 * r.hours)


def test_spot_restart_loses_the_work_since_the_last_periodic_checkpoint_and_waits():
    outage = (1.5, 3.0)
    trace = Trace(market_rows("aws", "us-east-1", "H100", 2.0, 6.0, hours=10, down=[outage]))
    job = SimJob(gpu_hours=4, gpus=1, checkpoint_gb=0, checkpoint_interval_h=1.0, move=FREE)
    r = simulate(trace, job, ["spot-restart"])["spot-restart"]
    expected_lost = outage[0] - math.floor(outage[0] / job.checkpoint_interval_h) * job.checkpoint_interval_h
    assert (r.preemptions, r.moves) == (1, 1)
    assert r.lost_work_h == pytest.approx(expected_lost)
    assert r.hours == pytest.approx(job.gpu_hours + expected_lost + (outage[1] - outage[0]))


def test_agnostic_checkpoints_on_notice_and_moves_to_the_other_vendor():
    h100 = market_rows("aws", "us-east-1", "H100", 2.0, 6.0, hours=10, down=[(1.5, 11)])
    mi300x = market_rows("azure", "eastus", "MI300X", 2.5, 6.0, hours=10)
    job = SimJob(gpu_hours=4, gpus=1, checkpoint_gb=0, move=FREE)
    res = simulate(Trace(h100 + mi300x), job)
    ours, theirs = res["agnostic"], res["spot-restart"]
    assert ours.lost_work_h == 0.0 and ours.finished
    assert any(kind == "move" and "MI300X" in where for _, kind, where in ours.events)
    assert not theirs.finished  # single-vendor spot waits for an H100 that never comes back


def test_agnostic_moves_on_price_when_the_saving_beats_the_hysteresis():
    cheap_later = [TraceRow(t / 4, "gcp", "us-central1", "H100", 4.0 if t < 8 else 1.0, True, 6.0) for t in range(41)]
    steady = market_rows("aws", "us-east-1", "H100", 3.0, 6.0, hours=10)
    job = SimJob(gpu_hours=8, gpus=1, checkpoint_gb=0, move=FREE)
    r = simulate(Trace(cheap_later + steady), job, ["agnostic"])["agnostic"]
    assert [where.split()[2] for _, kind, where in r.events if kind in ("start", "move")] == [
        "aws/us-east-1", "gcp/us-central1"]


def test_on_the_shipped_trace_ours_is_cheapest_and_on_demand_dearest():
    res = simulate(read_trace(shipped_trace_path()), SimJob())
    assert all(r.finished for r in res.values())
    assert res["agnostic"].cost_usd < res["spot-restart"].cost_usd < res["on-demand"].cost_usd
    assert res["agnostic"].lost_work_h <= res["spot-restart"].lost_work_h


def test_unknown_policy_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown policies \['cheapest'\]; expected some of: on-demand"):
        simulate(read_trace(shipped_trace_path()), SimJob(), ["cheapest"])


def test_cli_reports_three_policies_and_writes_the_plot(tmp_path, capsys):
    png = tmp_path / "sim.png"
    assert main(["--gpu-hours", "64", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    for name in ("on-demand", "spot-restart", "agnostic"):
        assert f"| {name} |" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_generates_a_trace(tmp_path):
    out = tmp_path / "gen.csv"
    assert main(["--generate", str(out), "--seed", "11", "--hours", "5"]) == 0
    assert read_trace(out).rows == generate_trace(TraceParams(hours=5, seed=11)).rows


def test_cli_missing_trace_exits_2_with_the_path(tmp_path, capsys):
    assert main([str(tmp_path / "nope.csv"), "--plot", ""]) == 2
    assert "nope.csv does not exist" in capsys.readouterr().err
