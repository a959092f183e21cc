"""Everything that depends on which device runs: choosing it and synchronizing it for
true timings. The rest of the code only passes the chosen torch.device around.

torch_npu (Ascend) is imported only when an NPU is asked for or probed under 'auto'."""
import importlib
import re

import torch


class DeviceError(Exception):
    """The requested device cannot be used; the message says why."""


_SPEC = re.compile(r"^(auto|cpu|cuda|npu)(?::(\d+))?$")


def _npu_count(import_module):
    """Number of visible Ascend NPUs; raises ImportError/RuntimeError when unusable."""
    import_module("torch_npu")  # registers the 'npu' device type with torch
    npu = getattr(torch, "npu", None)
    if npu is None or not npu.is_available():
        return 0
    return int(npu.device_count())


def select_device(spec="auto", import_module=importlib.import_module):
    """torch.device for --device auto|cpu|cuda[:i]|npu[:i]; DeviceError when unusable.

    auto: an NPU if torch_npu imports and sees one, else CUDA if present, else CPU."""
    match = _SPEC.match(spec.strip().lower())
    if not match or (match.group(1) in ("auto", "cpu") and match.group(2)):
        raise DeviceError(f"--device must be auto, cpu, cuda[:i] or npu[:i], got {spec!r}")
    kind, index = match.group(1), int(match.group(2) or 0)
    if kind == "auto":
        try:
            if _npu_count(import_module) > 0:
                return torch.device("npu", 0)
        except Exception:  # no torch_npu, or a broken one: auto quietly moves on
            pass
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            raise DeviceError(f"--device {spec}: {'no CUDA device is available' if count == 0 else f'only {count} CUDA devices'}")
        return torch.device("cuda", index)
    try:
        count = _npu_count(import_module)
    except Exception as exc:
        raise DeviceError(f"--device {spec}: torch_npu cannot be used ({type(exc).__name__}: {exc})") from None
    if index >= count:
        raise DeviceError(f"--device {spec}: {'torch_npu sees no NPU' if count == 0 else f'only {count} NPUs'}")
    return torch.device("npu", index)


def synchronize(device):
    """Wait for the device's queued work, so that wall-clock timings are true."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "npu":
        torch.npu.synchronize(device)


def set_device(device):
    """Make `device` the current one of its backend (kernels launch there)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif device.type == "npu":
        torch.npu.set_device(device)
