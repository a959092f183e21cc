"""Device choice, mixed precision and optimizers; accelerators are simulated."""
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

import devices
import main
from conftest import CODE, SHARED_DATA, shared_dataset
from test_main import test_results


def no_npu(name):
    raise ModuleNotFoundError(f"No module named '{name}'", name=name)


def test_auto_without_npu_or_cuda_is_cpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.select_device("auto", import_module=no_npu) == torch.device("cpu")
    assert capsys.readouterr().err == ""  # no torch_npu is the normal case off Ascend


def test_auto_with_cuda_and_broken_torch_npu_is_cuda_and_says_why(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def broken(name):
        raise RuntimeError("libascendcl.so: cannot open shared object file")

    assert devices.select_device("auto", import_module=broken) == torch.device("cuda", 0)
    assert capsys.readouterr().err == ("warning: --device auto: torch_npu cannot be used (RuntimeError: "
                                       "libascendcl.so: cannot open shared object file); using cuda:0\n")


def test_explicit_npu_without_torch_npu_is_one_line_error():
    with pytest.raises(devices.DeviceError) as err:
        devices.select_device("npu", import_module=no_npu)
    assert str(err.value) == "--device npu: torch_npu cannot be used (ModuleNotFoundError: No module named 'torch_npu')"


def test_explicit_cuda_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(devices.DeviceError, match="--device cuda:1: no CUDA device is available"):
        devices.select_device("cuda:1")


@pytest.mark.parametrize("spec", ["gpu", "cpu:1", "cuda:x", ""])
def test_bad_device_spec(spec):
    with pytest.raises(devices.DeviceError, match="--device must be auto, cpu, cuda"):
        devices.select_device(spec)


def test_bad_device_flag_exits_with_message(tmp_path):
    proc = subprocess.run([sys.executable, "main.py", "--device", "tpu", "--dataset", "x", "--data_path",
                           str(tmp_path)], cwd=CODE, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "main.py: error: argument --device: --device must be auto, cpu, cuda[:i] or npu[:i], got 'tpu'"


def test_amp_dtypes():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert devices.amp_dtype("auto", cpu) is None
    assert devices.amp_dtype("on", cpu) == torch.bfloat16
    assert devices.amp_dtype("auto", cuda, bf16_supported=True) == torch.bfloat16
    assert devices.amp_dtype("auto", cuda, bf16_supported=False) == torch.float16
    assert devices.amp_dtype("off", cuda) is None


def cfg(**kw):
    base = dict(optimizer="adam", amp="auto", lr=0.01)
    base.update(kw)
    return SimpleNamespace(**base)


def test_optimizer_choice_is_honoured():
    model = torch.nn.Linear(3, 2)
    _, opt, precision = devices.build_training(model, cfg(), torch.device("cpu"))
    assert isinstance(opt, torch.optim.Adam) and precision.dtype is None
    _, opt, precision = devices.build_training(model, cfg(optimizer="sgd", amp="on"), torch.device("cpu"))
    assert isinstance(opt, torch.optim.SGD) and precision.dtype == torch.bfloat16 and precision.scaler is None
    assert opt.param_groups[0]["lr"] == 0.01


NPU_SIMULATION = textwrap.dedent("""
    import sys, types, torch
    sys.path.insert(0, {code!r})
    import devices
    torch.utils.rename_privateuse1_backend("npu")   # what importing torch_npu does
    calls = []
    fake_npu = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 2)
    torch.npu = fake_npu

    class Fused(torch.optim.SGD):
        def __init__(self, params, lr):
            super().__init__(params, lr=lr)

    class NpuFusedAdam(Fused): pass
    class NpuFusedSGD(Fused): pass

    def initialize(model, optimizer, **kw):
        calls.append(kw)
        return model, optimizer

    modules = {{"torch_npu": types.SimpleNamespace(),
               "apex": types.SimpleNamespace(),
               "apex.amp": types.SimpleNamespace(initialize=initialize),
               "apex.optimizers": types.SimpleNamespace(NpuFusedAdam=NpuFusedAdam, NpuFusedSGD=NpuFusedSGD)}}
    def fake_import(name):
        if name.startswith("apex") and {without_apex}:
            raise ImportError(name)
        if name == "torch_npu.optim":
            return types.SimpleNamespace(NpuFusedAdam=NpuFusedAdam, NpuFusedSGD=NpuFusedSGD)
        return modules[name]

    dev = devices.select_device("auto", import_module=fake_import)
    print("device", dev)
    print("explicit", devices.select_device("npu:1", import_module=fake_import))
    cfg = types.SimpleNamespace(optimizer={optimizer!r}, amp="auto", lr=0.1)
    model, opt, precision = devices.build_training(torch.nn.Linear(2, 2), cfg, dev, import_module=fake_import)
    print("optimizer", type(opt).__name__)
    print("amp", precision.describe())
    print("initialize", calls)
""")


@pytest.mark.parametrize("optimizer,without_apex", [("adam", False), ("sgd", False), ("adam", True)])
def test_npu_path_with_simulated_torch_npu_and_apex(optimizer, without_apex):
    script = NPU_SIMULATION.format(code=CODE, optimizer=optimizer, without_apex=without_apex)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "device npu:0" in out and "explicit npu:1" in out
    assert f"optimizer NpuFused{'Adam' if optimizer == 'adam' else 'SGD'}" in out
    if without_apex:
        assert "amp: on, torch.autocast, float16" in out and "GradScaler" in out and "initialize []" in out
    else:
        assert "amp: on, apex O2, float16" in out and "loss scale: dynamic" in out
        assert "initialize [{'opt_level': 'O2', 'loss_scale': 'dynamic', 'combine_grad': True}]" in out


def test_amp_on_cpu_trains_lastfm_close_to_float32(tmp_path, capsys):
    shared_dataset("lastfm")
    common = ["--dataset", "lastfm", "--data_path", SHARED_DATA, "--epochs", "10", "--test_every", "10",
              "--tensorboard", "0", "--device", "cpu"]
    assert main.main(common + ["--path", str(tmp_path / "a")]) == 0
    fp32_out = capsys.readouterr().out
    assert main.main(common + ["--path", str(tmp_path / "b"), "--amp", "on"]) == 0
    amp_out = capsys.readouterr().out
    assert "amp: on, torch.autocast, bfloat16 (sparse propagation float32)" in amp_out
    losses = [float(l.split("loss")[1].split("-")[0]) for l in amp_out.splitlines() if l.startswith("EPOCH")]
    assert len(losses) == 10 and all(l == l and l < 1.0 for l in losses)
    assert abs(test_results(amp_out)[-1]["recall"] - test_results(fp32_out)[-1]["recall"]) < 0.01
