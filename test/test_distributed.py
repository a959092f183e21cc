"""torchrun with gloo on the CPU: 2 ranks train like 1, stay identical, log once."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import CODE, ROOT, SHARED_DATA, shared_dataset
from test_main import test_results

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def torchrun(args, cwd=CODE, script="main.py", timeout=180):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(TORCHRUN + [script] + args, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_two_ranks_stay_identical_and_train_like_one(tmp_path, planted):
    data_path = os.path.dirname(planted)
    # 960 triples an epoch in batches of 137: the last batch has 1 row, rank 1 none of it
    args = ["--dataset", "planted", "--data_path", data_path, "--epochs", "3", "--recdim", "8", "--layer", "2",
            "--bpr_batch", "137", "--lr", "0.01"]
    proc = torchrun([str(tmp_path)] + args, cwd=ROOT, script="test/dist_worker.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    for key in r0["state_dict"]:
        assert torch.equal(r0["state_dict"][key], r1["state_dict"][key]), key
    assert r0["losses"] == r1["losses"] and r0["losses"][-1] < r0["losses"][0]
    # the same triples and whole-batch gradients as one process
    single = tmp_path / "single"
    single.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    one = subprocess.run([sys.executable, "test/dist_worker.py", str(single)] + args, cwd=ROOT,
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    s = torch.load(single / "rank0.pt")
    for key in s["state_dict"]:
        torch.testing.assert_close(s["state_dict"][key], r0["state_dict"][key], rtol=1e-4, atol=1e-5)


def test_torchrun_main_on_lastfm_logs_once_and_tests_like_one_process(tmp_path):
    shared_dataset("lastfm")
    common = ["--dataset", "lastfm", "--data_path", SHARED_DATA, "--tensorboard", "0", "--path", str(tmp_path)]
    proc = torchrun(common + ["--epochs", "5", "--test_every", "5"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.count("EPOCH[1/5]") == 1 and out.count("[TEST]") == 2
    assert "ranks: 2 (torchrun, gloo)" in out
    losses = [float(l.split("loss")[1].split("-")[0]) for l in out.splitlines() if l.startswith("EPOCH")]
    assert losses[-1] < losses[0]
    assert (tmp_path / "lgn-lastfm-4-64.pth.tar").exists()
    # the distributed test of a checkpoint equals the single-process test of it
    dist_eval = torchrun(common + ["--epochs", "5", "--load", "1"])
    single_eval = subprocess.run([sys.executable, "main.py"] + common + ["--epochs", "5", "--load", "1"],
                                 cwd=CODE, capture_output=True, text=True)
    assert dist_eval.returncode == 0 and single_eval.returncode == 0, dist_eval.stderr[-2000:]
    a, b = test_results(dist_eval.stdout)[0], test_results(single_eval.stdout)[0]
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-8)


def test_a_dying_rank_makes_the_others_exit_with_a_message(tmp_path):
    import signal
    import time
    shared_dataset("lastfm")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(TORCHRUN + ["main.py", "--dataset", "lastfm", "--data_path", SHARED_DATA, "--epochs", "1000",
                                        "--test_every", "1000", "--tensorboard", "0", "--path", str(tmp_path)],
                            cwd=CODE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and "EPOCH[2/" not in proc.stdout.readline():
            pass
        victims = []
        for pid in os.listdir("/proc"):
            try:
                environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except (OSError, ValueError):
                continue
            if b"LOCAL_RANK=1" in environ and str(tmp_path).encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                victims.append(int(pid))
        assert victims
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)  # no hang: the survivors exit
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "rank 0: lost contact with the other ranks" in err or "ChildFailedError" in err
