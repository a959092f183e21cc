"""Everything that depends on which device runs: choosing it and synchronizing it for
true timings. The rest of the code only passes the chosen torch.device around.

torch_npu (Ascend) is imported only when an NPU is asked for or probed under 'auto'."""
import importlib
import re
import sys

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
        fallback = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        try:
            if _npu_count(import_module) > 0:
                return torch.device("npu", 0)
        except Exception as exc:
            if not (isinstance(exc, ModuleNotFoundError) and exc.name == "torch_npu"):
                # torch_npu is installed but broken: say why it was passed over (no torch_npu
                # at all is the usual case off Ascend and needs no word)
                print(f"warning: --device auto: torch_npu cannot be used ({type(exc).__name__}: {exc}); "
                      f"using {fallback}", file=sys.stderr)
        return fallback
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


# ------------------------------------------------------------------ mixed precision
# Where precision changes (and why):
# - the sparse propagation (propagation.py) always runs in float32: torch 2.13 has no
#   bfloat16 CSR product on the CPU, the C++ kernels are float32, and the layer sums
#   feed every score, so their error would compound over K layers;
# - the batch scores of the BPR loss and the test's user x item score matrix are
#   matrix products, which autocast runs in the low-precision dtype: that GEMM is the
#   test's main cost and the part that accelerators' matrix units speed up;
# - the loss itself (softplus, L2) and the optimizer state stay float32.
def amp_dtype(flag, device, bf16_supported=None):
    """None (float32 throughout) or the autocast dtype for --amp auto|on|off."""
    if flag not in ("auto", "on", "off"):
        raise DeviceError(f"--amp must be auto, on or off, got {flag!r}")
    if flag == "off" or (flag == "auto" and device.type == "cpu"):
        return None
    if device.type == "cpu":
        return torch.bfloat16  # CPU autocast supports bfloat16 only
    if device.type == "cuda":
        if bf16_supported is None:
            bf16_supported = torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16_supported else torch.float16
    return torch.float16  # Ascend: float16 is the native low precision of its cube units


class Precision:
    """How a step runs: autocast dtype (None = float32), loss scaling, backward+step."""

    def __init__(self, device, dtype=None, scaler=None, apex_amp=None):
        self.device, self.dtype, self.scaler, self.apex_amp = device, dtype, scaler, apex_amp

    def autocast(self):
        if self.dtype is None or self.apex_amp is not None:  # apex O2 casts the model itself
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward_step(self, loss, optimizer, before_step=lambda: None):
        """zero_grad, (scaled) backward, before_step() (the gradient all-reduce of
        data-parallel runs), optimizer step."""
        optimizer.zero_grad(set_to_none=True)
        if self.apex_amp is not None:
            with self.apex_amp.scale_loss(loss, optimizer) as scaled:
                scaled.backward()
            before_step()
            optimizer.step()
        elif self.scaler is not None:
            self.scaler.scale(loss).backward()
            before_step()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            before_step()
            optimizer.step()

    def describe(self):
        if self.dtype is None:
            return "amp: off (float32)"
        kind = "apex O2" if self.apex_amp is not None else "torch.autocast"
        text = f"amp: on, {kind}, {str(self.dtype).replace('torch.', '')} (sparse propagation float32)"
        if self.apex_amp is not None:
            text += ", loss scale: dynamic (apex, initial 2^16)"
        elif self.scaler is not None:
            text += f", loss scale: dynamic (GradScaler, initial {self.scaler.get_scale():.0f})"
        return text


def build_training(model, config, device, import_module=importlib.import_module):
    """(model, optimizer, Precision) for --optimizer and --amp on this device.

    NPU with Ascend apex: apex's fused NPU optimizers and amp.initialize at O2 with
    dynamic loss scaling, as the Ascend ModelZoo scripts run. NPU without apex:
    torch_npu's fused optimizers with torch.autocast and a GradScaler. CUDA: autocast
    (bfloat16 where supported, else float16 with a GradScaler) and torch's fused
    optimizers. CPU: float32, or bfloat16 autocast with --amp on."""
    if config.optimizer not in ("adam", "sgd"):
        raise DeviceError(f"--optimizer must be adam or sgd, got {config.optimizer!r}")
    dtype = amp_dtype(config.amp, device)
    params = list(model.parameters())
    if device.type == "npu":
        try:
            apex = import_module("apex")
            apex_amp = import_module("apex.amp")
            optimizers = import_module("apex.optimizers")
        except ImportError:
            apex = None
        if apex is not None:
            cls = optimizers.NpuFusedAdam if config.optimizer == "adam" else optimizers.NpuFusedSGD
            optimizer = cls(params, lr=config.lr)
            if dtype is None:
                return model, optimizer, Precision(device)
            model, optimizer = apex_amp.initialize(model, optimizer, opt_level="O2", loss_scale="dynamic",
                                                   combine_grad=True)
            return model, optimizer, Precision(device, dtype, apex_amp=apex_amp)
        npu_optim = import_module("torch_npu.optim")
        cls = npu_optim.NpuFusedAdam if config.optimizer == "adam" else npu_optim.NpuFusedSGD
        optimizer = cls(params, lr=config.lr)
    else:
        fused = device.type in ("cpu", "cuda")  # one kernel for all parameters: 2 ms vs 6-15 ms a step on gowalla
        cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.SGD
        optimizer = cls(params, lr=config.lr, fused=fused)
    scaler = None
    if dtype == torch.float16:
        scaler = torch.amp.GradScaler(device.type)
    return model, optimizer, Precision(device, dtype, scaler=scaler)


def learning_rate(config, epoch):
    """The rate for training epoch `epoch` (0-based): --lr, times --lr_gamma once for
    every milestone m of --lr_milestones with m <= epoch (i.e. after m epochs)."""
    drops = sum(1 for milestone in config.lr_milestones if milestone <= epoch)
    return config.lr * config.lr_gamma ** drops


def set_learning_rate(optimizer, rate):
    """Set every parameter group's rate; set before each epoch, so that a resumed run
    follows this run's flags rather than the rate stored in the optimizer's state."""
    for group in optimizer.param_groups:
        group["lr"] = rate
