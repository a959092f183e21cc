"""torchrun with gloo on the CPU: 2 ranks train like 1, stay identical, log once."""
import os
import signal
import subprocess
import sys

import pytest
import torch

import checkpoint
from conftest import CODE, ROOT, SHARED_DATA, planted_dataset, read_until, shared_dataset, write_gowalla_format
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


def rank_pids(local_rank, marker):
    """The pids of torchrun workers with this LOCAL_RANK whose command line holds `marker`."""
    pids = []
    for pid in os.listdir("/proc"):
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except (OSError, ValueError):
            continue
        if f"LOCAL_RANK={local_rank}".encode() in environ and marker.encode() in cmdline:
            pids.append(int(pid))
    return pids


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_batch(tmp_path):
    # torchrun forwards a signal to every rank, but a user's kill or a scheduler may reach
    # one: the ranks agree to stop, save, leave the process group together and exit 143
    train, test = planted_dataset(n_users=1000, n_items=200, per_user=10)
    data = tmp_path / "data"
    write_gowalla_format(str(data / "big"), train, test)
    ck = tmp_path / "ck"
    proc = subprocess.Popen(TORCHRUN + ["main.py", "--dataset", "big", "--data_path", str(data), "--path", str(ck),
                                        "--tensorboard", "0", "--epochs", "1000", "--bpr_batch", "16",
                                        "--recdim", "8", "--test_every", "1000"],
                            cwd=CODE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        assert read_until(proc, "EPOCH[2/")
        victims = rank_pids(1, str(ck))
        assert len(victims) == 1
        os.kill(victims[0], signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "resume with --load 1" in out  # rank 0, not signalled itself, stopped too
    assert "exitcode  : 143" in err and "SIGABRT" not in err and "terminate called" not in err
    assert "TypeError" not in err
    state = checkpoint.load(str(ck / "lgn-big-4-8.pth.tar"))
    assert state["epoch"] >= 2


def test_a_dying_rank_makes_the_others_exit_with_a_message(tmp_path):
    shared_dataset("lastfm")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(TORCHRUN + ["main.py", "--dataset", "lastfm", "--data_path", SHARED_DATA, "--epochs", "1000",
                                        "--test_every", "1000", "--tensorboard", "0", "--path", str(tmp_path)],
                            cwd=CODE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert read_until(proc, "EPOCH[2/")
        victims = rank_pids(1, str(tmp_path))
        assert victims
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)  # no hang: the survivors exit
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "rank 0: lost contact with the other ranks" in err or "ChildFailedError" in err
