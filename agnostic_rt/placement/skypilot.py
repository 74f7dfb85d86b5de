"""SkyPilot hand-off: the managed spot job that carries the run to its next machine.

SkyPilot provisions; we decide. :func:`build_task_config` turns the policy's ranked quotes into a
SkyPilot task (``resources.any_of`` across NVIDIA and AMD accelerators and clouds, ``use_spot``,
``job_recovery``, the checkpoint bucket mounted at ``/checkpoints``, a run command that resumes from
it). :func:`launch` hands it to ``sky.jobs.launch`` when SkyPilot is installed and configured;
otherwise it writes the task YAML and prints the command to run.

    cfg = build_task_config(decision.ranked[:4], bucket="s3://my-ckpts", run_id="gpt2-a",
                            entrypoint="python train.py")
    handoff = launch(cfg, yaml_path="next.yaml")       # sky.jobs.launch, or YAML + command

SkyPilot is optional (``pip install 'agnostic-rt[placement]'``). Without it, :data:`TASK_SCHEMA`
(the part of SkyPilot's task schema we emit, transcribed from ``sky/utils/schemas.py`` of SkyPilot
0.14 and its documented YAML spec) validates the task with ``jsonschema``.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .feeds import Feed, Offer
from .policy import Decision, JobProfile, PlacementPolicy, Quote

__all__ = [
    "TASK_SCHEMA", "RESOURCES_SCHEMA", "HandOff", "build_task_config", "validate_task_config", "task_yaml",
    "launch", "skypilot_available", "CHECKPOINT_MOUNT", "RESUME_ENV", "plan_next_machine",
]

log = logging.getLogger("agnostic_rt.placement.skypilot")

CHECKPOINT_MOUNT = "/checkpoints"
RESUME_ENV = "AGNOSTIC_RT_RESUME_FROM"  # the checkpoint root the resumed run reads

# SkyPilot 0.14's clouds (sky/skylet/constants.py ALL_CLOUDS, kubernetes aside).
SKY_CLOUDS = ("aws", "azure", "gcp", "ibm", "lambda", "scp", "oci", "runpod", "vast", "vsphere", "cudo",
              "fluidstack", "paperspace", "primeintellect", "do", "nebius", "ssh", "slurm", "hyperbolic",
              "seeweb", "shadeform", "yotta", "mithril", "verda")
_INFRA = (rf"^(?:(?i:{'|'.join(SKY_CLOUDS)})(?:/[^/]+(?:/[^/]+)?)?"
          r"|\*(?:/[^/]+(?:/[^/]+)?)?|(?i:kubernetes|k8s)(?:/.+)?)$")
# Managed-job recovery strategies SkyPilot documents.
RECOVERY_STRATEGIES = ("EAGER_NEXT_REGION", "FAILOVER", "NONE")

_SINGLE_RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "infra": {"type": "string", "pattern": _INFRA},
        "cloud": {"type": "string"},
        "region": {"type": "string"},
        "accelerators": {"anyOf": [
            {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*(:\d+(\.\d+)?)?$"},
            {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "number"}},
        ]},
        "use_spot": {"type": "boolean"},
        "cpus": {"anyOf": [{"type": "string"}, {"type": "number"}]},
        "memory": {"anyOf": [{"type": "string"}, {"type": "number"}]},
        "disk_size": {"type": "integer"},
        "image_id": {"type": "string"},
        "job_recovery": {"anyOf": [
            {"type": "string"},
            {"type": "object", "properties": {
                "strategy": {"anyOf": [{"type": "string", "enum": list(RECOVERY_STRATEGIES)},
                                       {"type": "null"}]},
                "max_restarts_on_errors": {"type": "integer", "minimum": 0},
                "recover_on_exit_codes": {"anyOf": [
                    {"type": "integer", "minimum": 0, "maximum": 255},
                    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255},
                     "uniqueItems": True},
                ]},
            }, "additionalProperties": False},
        ]},
    },
}
RESOURCES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **_SINGLE_RESOURCES["properties"],
        "any_of": {"type": "array", "minItems": 1, "items": _SINGLE_RESOURCES},
        "ordered": {"type": "array", "minItems": 1, "items": _SINGLE_RESOURCES},
    },
}
_STORAGE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["source"],
    "properties": {
        "name": {"type": "string"},
        "source": {"type": "string", "pattern": r"^(s3|gs|r2|https|cos|oci)://[^/]+.*$"},
        "store": {"type": "string"},
        "persistent": {"type": "boolean"},
        "mode": {"type": "string", "enum": ["MOUNT", "COPY", "MOUNT_CACHED"]},
    },
}
TASK_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["resources", "run"],  # SkyPilot allows both empty; a hand-off needs both
    "properties": {
        "name": {"type": "string"},
        "workdir": {"type": "string"},
        "num_nodes": {"type": "integer", "minimum": 1},
        "resources": RESOURCES_SCHEMA,
        "envs": {"type": "object",
                 "patternProperties": {"^[a-zA-Z_][a-zA-Z0-9_]*$": {"type": ["string", "null"]}},
                 "additionalProperties": False},
        "file_mounts": {"type": "object", "additionalProperties": {"anyOf": [{"type": "string"}, _STORAGE]}},
        "setup": {"type": "string"},
        "run": {"type": "string"},
    },
}


def _accelerator_spec(offer: Offer, count: int) -> str:
    return f"{offer.accelerator}:{count}"


def build_task_config(
    candidates: Sequence[Quote | Offer],
    *,
    bucket: str,
    run_id: str,
    entrypoint: str,
    gpus_per_node: int = 1,
    name: str | None = None,
    use_spot: bool | None = None,
    job_recovery: str = "EAGER_NEXT_REGION",
    max_restarts_on_errors: int = 3,
    preempt_exit_code: int | None = None,
    setup: str = "pip install 'agnostic-rt[placement]'",
    workdir: str | None = ".",
    envs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A SkyPilot task (as the dict its YAML holds) that resumes run ``run_id`` on any of ``candidates``.

    ``candidates`` are the policy's quotes (or offers), best first: each becomes one ``any_of`` entry
    (``infra: cloud/region``, ``accelerators: NAME:COUNT``); duplicates collapse. ``use_spot`` defaults
    to whether the best candidate is spot (SkyPilot applies one ``use_spot`` to the whole task, so
    spot and on-demand candidates are not mixed: those not matching it are left out). The bucket is
    mounted at ``/checkpoints`` and ``$AGNOSTIC_RT_RESUME_FROM`` names the run's checkpoint root there,
    which the entrypoint passes to ``agnostic_rt.resume``. ``preempt_exit_code`` (preempt.py's
    documented code) makes SkyPilot recover, not fail, when the run exits with it.

    >>> cfg = build_task_config([Offer("aws", "us-east-1", "H100", True, 3.9)], bucket="s3://ckpt",
    ...                         run_id="r1", entrypoint="python train.py")
    >>> cfg["resources"]["any_of"]
    [{'infra': 'aws/us-east-1', 'accelerators': 'H100:1'}]
    """
    offers = [c.offer if isinstance(c, Quote) else c for c in candidates]
    if not offers:
        raise ValueError("build_task_config needs at least one candidate offer (got none)")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", run_id):
        raise ValueError(f"run_id={run_id!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
    if job_recovery.upper() not in RECOVERY_STRATEGIES:
        raise ValueError(f"job_recovery={job_recovery!r}; expected one of: {', '.join(RECOVERY_STRATEGIES)}")
    spot = offers[0].spot if use_spot is None else use_spot
    any_of: list[dict[str, Any]] = []
    for o in offers:
        if o.spot != spot:
            continue
        entry = {"infra": o.infra, "accelerators": _accelerator_spec(o, gpus_per_node)}
        if entry not in any_of:
            any_of.append(entry)
    if not any_of:
        raise ValueError(f"no candidate matches use_spot={spot}; candidates: {[str(o) for o in offers]}")
    recovery: dict[str, Any] = {"strategy": job_recovery.upper(),
                                "max_restarts_on_errors": max_restarts_on_errors}
    if preempt_exit_code is not None:
        recovery["recover_on_exit_codes"] = [int(preempt_exit_code)]
    checkpoint_root = f"{CHECKPOINT_MOUNT}/{run_id}"
    cfg: dict[str, Any] = {
        "name": name or f"agnostic-rt-{run_id}",
        "resources": {"use_spot": spot, "job_recovery": recovery, "any_of": any_of},
        "envs": {RESUME_ENV: checkpoint_root, "AGNOSTIC_RT_RUN_ID": run_id, **dict(envs or {})},
        "file_mounts": {CHECKPOINT_MOUNT: {"source": bucket, "mode": "MOUNT"}},
        "setup": setup,
        "run": entrypoint,
    }
    if workdir is not None:
        cfg["workdir"] = workdir
    validate_task_config(cfg)
    return cfg


def plan_next_machine(
    feed: Feed,
    job: JobProfile,
    *,
    bucket: str,
    run_id: str,
    entrypoint: str,
    current: Offer | None = None,
    policy: PlacementPolicy | None = None,
    top: int = 4,
    **task_kw: Any,
) -> tuple[Decision, dict[str, Any]]:
    """The migration hand-off's placement step: rank ``feed``'s offers for ``job`` and build the task.

    The task's ``any_of`` holds the ``top`` best offers of the chosen kind (spot or on-demand, as the
    best one is), so SkyPilot can fall back across clouds and vendors if the first has no capacity.
    ``current`` is where the run is now (unavailable after a notice). Extra keywords go to
    :func:`build_task_config`.

    >>> decision, cfg = plan_next_machine(TableFeed(), JobProfile.from_gpu_hours(50), bucket="s3://ckpt",
    ...                                   run_id="r1", entrypoint="python train.py")
    >>> launch(cfg, yaml_path="next.yaml")
    """
    policy = policy or PlacementPolicy()
    decision = policy.decide(feed.offers(), job, current=current)
    same_kind = [q for q in decision.ranked if q.offer.spot == decision.offer.spot][:top]
    cfg = build_task_config(same_kind, bucket=bucket, run_id=run_id, entrypoint=entrypoint, **task_kw)
    return decision, cfg


def validate_task_config(cfg: Mapping[str, Any]) -> None:
    """Raise ValueError naming the field, the value and the rule when ``cfg`` is not a valid task.

    With SkyPilot installed, SkyPilot itself parses it (``sky.Task.from_yaml_config``) as well.

    >>> validate_task_config({"resources": {"use_spot": "yes"}, "run": "true"})
    Traceback (most recent call last):
    ValueError: SkyPilot task invalid at resources.use_spot: 'yes' is not of type 'boolean'
    """
    try:
        import jsonschema
    except ImportError:  # the placement extra brings it; without it SkyPilot's own parse is the check
        log.warning("jsonschema is not installed: the SkyPilot task is not validated here")
        return
    validator = jsonschema.Draft202012Validator(TASK_SCHEMA)
    errors = sorted(validator.iter_errors(dict(cfg)), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "<top level>"
        raise ValueError(f"SkyPilot task invalid at {where}: {e.message}")
    if skypilot_available():
        import sky

        sky.Task.from_yaml_config(dict(cfg))


def task_yaml(cfg: Mapping[str, Any]) -> str:
    """The task as SkyPilot YAML text (``sky jobs launch`` reads it)."""
    import yaml

    return yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=False)


def skypilot_available() -> bool:
    """Whether ``import sky`` works here (it does not say whether any cloud is configured)."""
    try:
        import sky  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class HandOff:
    """What :func:`launch` did: ``launched`` with a job id, or wrote ``yaml_path`` for ``command``."""

    launched: bool
    yaml_path: Path
    command: str
    job_id: Any = None


def launch(cfg: Mapping[str, Any], *, yaml_path: str | Path = "agnostic-rt-next.yaml",
           use_skypilot: bool | None = None) -> HandOff:
    """Write the task YAML; launch it as a managed job when SkyPilot is installed and configured.

    ``use_skypilot=None`` launches when ``import sky`` works; False only writes the YAML and prints
    the command (what the demo and the tests do). A SkyPilot that fails to launch (no cloud enabled,
    no credentials) degrades to the same: a warning and the command to run by hand.

    >>> launch(cfg, yaml_path="next.yaml", use_skypilot=False).command
    'sky jobs launch -n agnostic-rt-r1 next.yaml'
    """
    validate_task_config(cfg)
    path = Path(yaml_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(task_yaml(cfg))
    name = str(cfg.get("name", "agnostic-rt"))
    command = f"sky jobs launch -n {shlex.quote(name)} {shlex.quote(str(path))}"
    want = skypilot_available() if use_skypilot is None else use_skypilot
    if want:
        try:
            import sky

            task = sky.Task.from_yaml(str(path))
            request = sky.jobs.launch(task, name=name)
            job_id = sky.get(request) if hasattr(sky, "get") else request
            log.info("launched managed job %s (%s)", name, job_id)
            return HandOff(True, path, command, job_id)
        except Exception as exc:  # ImportError, no enabled cloud, no credentials, API server down
            log.warning("sky.jobs.launch failed (%s: %s); run it yourself: %s",
                        type(exc).__name__, exc, command)
    print(f"SkyPilot task written to {path}; launch the next machine with:\n  {command}")
    return HandOff(False, path, command)
