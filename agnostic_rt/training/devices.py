"""Devices: what this process can reach, per vendor, and a policy to pick one.

Sources, each optional: torch (``torch.version.cuda`` vs ``torch.version.hip`` tells the vendor,
since ROCm builds name their devices "cuda" too), CuPy for NVIDIA properties, hip-python for AMD
properties (``gcnArchName``), and the CPU. A library that is missing or cannot talk to a driver
means "not present": :func:`devices` never raises for it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from agnostic_rt.targets import Target, _cuda_device_target, host_cpu_target

__all__ = ["Device", "devices", "select_device", "resolve_device", "DevicePolicy"]

log = logging.getLogger("agnostic_rt.devices")

VENDORS = ("nvidia", "amd", "cpu")


@dataclass(frozen=True)
class Device:
    """One device this process can put tensors on.

    >>> devices()[-1].vendor
    'cpu'
    """

    vendor: str  # "nvidia" | "amd" | "cpu"
    index: int  # torch device index (0 for the CPU)
    name: str  # marketing name, e.g. "NVIDIA H100 80GB HBM3"
    arch: str  # "sm_90", "gfx942", "x86_64"
    memory: int  # bytes of device memory (host RAM for the CPU)
    target: Target  # what the compiler and cost models read

    @property
    def torch_device(self) -> torch.device:
        """The torch device its tensors live on (``cuda:N`` on ROCm builds too)."""
        return torch.device("cpu") if self.vendor == "cpu" else torch.device("cuda", self.index)

    def __str__(self) -> str:
        return f"{self.vendor}:{self.index} ({self.name}, {self.arch})"


def _torch_vendor() -> str | None:
    if getattr(torch.version, "hip", None):
        return "amd"
    if getattr(torch.version, "cuda", None):
        return "nvidia"
    return None


def _cupy_props(index: int) -> dict:
    """NVIDIA properties from CuPy, or {} when CuPy or its driver is absent."""
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(index)
    except Exception as exc:  # ImportError, CUDARuntimeError (no driver), ...
        log.debug("CuPy gives no properties for device %d: %s", index, exc)
        return {}
    name = props.get("name", b"")
    return {
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "arch": f"sm_{props.get('major', 0)}{props.get('minor', 0)}",
        "memory": int(props.get("totalGlobalMem", 0)),
    }


def _hip_props(index: int) -> dict:
    """AMD properties from hip-python (gcnArchName), or {} when it or the HIP runtime is absent."""
    try:
        from hip import hip

        props = hip.hipDeviceProp_t()
        err = hip.hipGetDeviceProperties(props, index)
        err = err[0] if isinstance(err, tuple) else err
        if err != hip.hipError_t.hipSuccess:
            raise RuntimeError(f"hipGetDeviceProperties({index}) returned {err}")
        arch = props.gcnArchName
    except Exception as exc:  # ImportError, missing libamdhip64.so, no device
        log.debug("hip-python gives no properties for device %d: %s", index, exc)
        return {}
    arch = arch.decode() if isinstance(arch, bytes) else str(arch)
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"name": name, "arch": arch.split(":")[0], "memory": int(props.totalGlobalMem)}


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _cpu_device() -> Device:
    import platform

    target = host_cpu_target()
    name = platform.processor() or platform.machine() or "cpu"
    return Device("cpu", 0, name, target.arch, _host_memory(), target)


def _accelerators() -> list[Device]:
    vendor = _torch_vendor()
    try:
        count = torch.cuda.device_count() if vendor and torch.cuda.is_available() else 0
    except Exception as exc:  # a broken driver is "not present", not a crash
        log.debug("torch.cuda is unusable: %s", exc)
        count = 0
    found = []
    for i in range(count):
        try:
            props = torch.cuda.get_device_properties(i)
            target = _cuda_device_target(i)
        except Exception as exc:
            log.debug("device cuda:%d skipped: %s", i, exc)
            continue
        extra = _cupy_props(i) if vendor == "nvidia" else _hip_props(i)
        found.append(Device(
            vendor=vendor,
            index=i,
            name=extra.get("name") or props.name,
            arch=extra.get("arch") or target.arch,
            memory=extra.get("memory") or int(props.total_memory),
            target=target,
        ))
    return found


def devices() -> list[Device]:
    """Every device this process can reach: accelerators first (by index), the CPU last.

    >>> [d.vendor for d in agnostic_rt.devices()]   # on a CPU-only host
    ['cpu']
    """
    return [*_accelerators(), _cpu_device()]


# A policy is a name ("fastest", "cheapest"), an explicit device ("cuda:1", "rocm", "cpu", a Device),
# or a callable that picks one Device from the candidates.
DevicePolicy = str | Device | Callable[[Sequence[Device]], Device]

_VENDOR_ALIASES = {"nvidia": "nvidia", "amd": "amd", "rocm": "amd", "hip": "amd", "cpu": "cpu"}


def _speed(d: Device) -> float:
    # bf16 peak is what training runs at; the CPU's table has it too.
    return d.target.flops("bfloat16")


def resolve_device(spec: str | Device | torch.device, candidates: Sequence[Device] | None = None) -> Device:
    """The reachable Device named by ``spec``; raises LookupError when this process cannot reach it.

    "cuda" and "cuda:N" mean the torch accelerator device (whatever its vendor, as torch names it);
    "nvidia", "rocm"/"amd"/"hip" require that vendor; "cpu" is the host.

    >>> resolve_device("cpu").vendor
    'cpu'
    """
    found = list(candidates) if candidates is not None else devices()
    if isinstance(spec, Device):
        for d in found:
            if d.vendor == spec.vendor and d.index == spec.index:
                return d
        raise LookupError(f"device {spec} is not reachable from this process; here: {_names(found)}")
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"device must be a str, torch.device or Device, got {type(spec).__name__}")
    s = spec.strip().lower()
    accel = [d for d in found if d.vendor != "cpu"]
    if s in _VENDOR_ALIASES:
        vendor = _VENDOR_ALIASES[s]
        match = [d for d in found if d.vendor == vendor]
        if not match:
            raise LookupError(f"no {vendor} device is reachable from this process ({spec!r}); here: {_names(found)}")
        return match[0]
    if s == "cuda" or s.startswith("cuda:"):
        index = 0
        if ":" in s:
            try:
                index = int(s.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"bad device string {spec!r}; expected 'cuda:N' with N an integer") from None
        match = [d for d in accel if d.index == index]
        if not match:
            raise LookupError(f"device {spec!r} is not reachable from this process; here: {_names(found)}")
        return match[0]
    raise ValueError(
        f"unknown device {spec!r}; expected one of: cpu, cuda, cuda:N, nvidia, rocm, amd, or a Device"
    )


def _names(found: Sequence[Device]) -> str:
    return ", ".join(f"{d.vendor}:{d.index}" for d in found) or "nothing"


def select_device(
    policy: DevicePolicy = "fastest",
    *,
    prices: Mapping[str, float] | None = None,
    candidates: Sequence[Device] | None = None,
) -> Device:
    """Pick one reachable device.

    - ``"fastest"``: the highest bf16 peak (accelerators beat the CPU).
    - ``"cheapest"``: the lowest price per unit of work, price / bf16 peak, from ``prices`` (USD per hour,
      keyed by target name such as "h100", by vendor, or by "cpu"); unpriced devices are skipped.
    - an explicit device (``"cuda:1"``, ``"rocm"``, ``"cpu"``, a :class:`Device`).
    - a callable ``policy(candidates) -> Device`` (e.g. a placement policy).

    >>> agnostic_rt.select_device("cheapest", prices={"h100": 2.5, "mi300x": 2.0, "cpu": 0.1})
    """
    found = list(candidates) if candidates is not None else devices()
    if not found:
        raise LookupError("no candidate devices to select from")
    if callable(policy) and not isinstance(policy, Device):
        chosen = policy(found)
        if not isinstance(chosen, Device):
            raise TypeError(f"device policy {policy!r} returned {chosen!r}; it must return one of the Devices given")
        return chosen
    if policy == "fastest":
        return max(found, key=lambda d: (_speed(d), -d.index))
    if policy == "cheapest":
        if not prices:
            raise ValueError("policy 'cheapest' needs prices={target name or vendor: USD per hour}")
        priced = []
        for d in found:
            price = prices.get(d.target.name, prices.get(d.vendor))
            if price is not None:
                priced.append((float(price) / max(_speed(d), 1.0), d.index, d))
        if not priced:
            raise ValueError(
                f"no price for any candidate; prices has {sorted(prices)}, candidates are "
                f"{[d.target.name for d in found]} (vendors {sorted({d.vendor for d in found})})"
            )
        return min(priced, key=lambda t: (t[0], t[1]))[2]
    if isinstance(policy, (str, Device, torch.device)):
        return resolve_device(policy, found)
    raise TypeError(
        f"device policy must be 'fastest', 'cheapest', a device string, a Device or a callable; got {policy!r}"
    )
