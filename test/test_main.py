import ast
import os
import re

import pytest
import torch

import main
from conftest import run_main, shared_dataset, SHARED_DATA

EPOCH_LINE = re.compile(r"^EPOCH\[(\d+)/(\d+)\] loss(\d+\.\d{3})-\|Sample:\d+\.\d{2}\|-\d+\.\d{2}s-\d+/s$")


def test_results(output):
    """The [TEST] dicts printed, in order."""
    lines = output.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line == "[TEST]":
            text = lines[i + 1].replace("array(", "").replace(")", "")
            out.append({k: v[0] for k, v in ast.literal_eval(text).items()})
    return out


test_results.__test__ = False


def small_args(tmp_path, data_path, *extra):
    return ["--dataset", "planted", "--data_path", data_path, "--path", str(tmp_path / "ck"),
            "--tensorboard", "0", "--recdim", "16", "--layer", "2", "--bpr_batch", "128",
            "--lr", "0.01", "--topks", "[5]", *extra]


def test_training_learns_planted_structure(tmp_path, planted, capsys):
    data_path = os.path.dirname(planted)
    code = main.main(small_args(tmp_path, data_path, "--epochs", "30", "--test_every", "10"))
    out = capsys.readouterr().out
    assert code == 0
    results = test_results(out)
    assert len(results) == 4  # before training, after 10, 20, 30
    # 4 test items among the 12 unseen of the user's group: ranking the group first gives
    # recall@5 about 5/12; random ranking about 5/72.
    assert results[-1]["recall"] > 0.35 and results[0]["recall"] < 0.15, results
    epochs = [EPOCH_LINE.match(line) for line in out.splitlines() if line.startswith("EPOCH")]
    assert len(epochs) == 30 and all(epochs)
    losses = [float(m.group(3)) for m in epochs]
    assert losses[-1] < losses[0]
    ck = tmp_path / "ck" / "lgn-planted-2-16.pth.tar"
    state = torch.load(ck, weights_only=False)
    assert {"embedding_user.weight", "embedding_item.weight"} <= set(state["state_dict"])
    assert state["epoch"] == 30


def test_mf_model_trains(tmp_path, planted, capsys):
    data_path = os.path.dirname(planted)
    code = main.main(small_args(tmp_path, data_path, "--model", "mf", "--epochs", "2", "--test_every", "1"))
    assert code == 0
    assert (tmp_path / "ck" / "mf-planted-16.pth.tar").exists()


def test_load_resumes_and_says_so(tmp_path, planted, capsys):
    data_path = os.path.dirname(planted)
    assert main.main(small_args(tmp_path, data_path, "--load", "1", "--epochs", "1")) == 0
    assert "not exists, start from beginning" in capsys.readouterr().out
    assert main.main(small_args(tmp_path, data_path, "--load", "1", "--epochs", "3")) == 0
    out = capsys.readouterr().out
    assert "loaded model weights from" in out and "(epoch 1)" in out
    assert "EPOCH[2/3]" in out and "EPOCH[1/3]" not in out


def test_pretrain_starts_from_checkpoint_embeddings(tmp_path, planted, capsys):
    data_path = os.path.dirname(planted)
    assert main.main(small_args(tmp_path, data_path, "--epochs", "5", "--test_every", "5")) == 0
    trained = test_results(capsys.readouterr().out)[-1]
    assert main.main(small_args(tmp_path, data_path, "--epochs", "0", "--pretrain", "1")) == 0
    out = capsys.readouterr().out
    assert "initialised embeddings from" in out
    assert test_results(out)[0]["recall"] == pytest.approx(trained["recall"])


def test_cli_on_lastfm_reaches_recall(tmp_path):
    shared_dataset("lastfm")
    proc = run_main(["--dataset", "lastfm", "--data_path", SHARED_DATA, "--epochs", "30", "--test_every", "10",
                     "--tensorboard", "0", "--path", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    results = test_results(proc.stdout)
    assert len(results) == 4
    assert results[-1]["recall"] >= 0.14, results
    assert "sampler: C++ extension" in proc.stdout
    assert "14 users have no training item" in proc.stdout
    assert all(EPOCH_LINE.match(l) for l in proc.stdout.splitlines() if l.startswith("EPOCH"))
    assert (tmp_path / "lgn-lastfm-4-64.pth.tar").exists()
    assert proc.stderr == ""  # not a terminal: no progress bars


def test_gowalla_epoch0_metrics_equal_the_original_code(tmp_path, capsys):
    """A fresh 3-layer model with seed 2020 scores what the original code scores."""
    shared_dataset("gowalla")
    assert main.main(["--dataset", "gowalla", "--data_path", SHARED_DATA, "--layer", "3", "--epochs", "0",
                      "--tensorboard", "0", "--path", str(tmp_path)]) == 0
    r = test_results(capsys.readouterr().out)[0]
    assert r["precision"] == pytest.approx(0.00018755, abs=5e-9)
    assert r["recall"] == pytest.approx(0.00053749, abs=5e-9)
    assert r["ndcg"] == pytest.approx(0.00040836, abs=5e-9)


def test_tensorboard_scalars_written(tmp_path, planted, capsys, monkeypatch):
    import world
    monkeypatch.setattr(world, "BOARD_PATH", str(tmp_path / "runs"))
    data_path = os.path.dirname(planted)
    args = small_args(tmp_path, data_path, "--epochs", "1")
    args[args.index("--tensorboard") + 1] = "1"
    assert main.main(args) == 0
    files = [f for _, _, fs in os.walk(tmp_path / "runs") for f in fs]
    assert any(f.startswith("events.out.tfevents") for f in files)


@pytest.mark.parametrize("args,message", [
    (["--topks", "[0]"], "argument --topks: --topks values must be >= 1"),
    (["--topks", "__import__('os')"], "argument --topks: --topks must be a list of positive integers"),
    (["--topks", "[20"], "argument --topks"),
    (["--bpr_batch", "0"], "argument --bpr_batch: --bpr_batch must be >= 1, got 0"),
    (["--layer", "-1"], "argument --layer: --layer must be between 0 and 32, got -1"),
    (["--recdim", "abc"], "argument --recdim: --recdim must be an integer, got 'abc'"),
    (["--epochs", "-5"], "argument --epochs"),
    (["--model", "gcn"], "argument --model: invalid choice: 'gcn'"),
    (["--lr", "0"], "argument --lr: --lr must be > 0.0"),
    (["--dataset", "../etc"], "argument --dataset"),
])
def test_bad_flags_one_line_exit_2(args, message):
    proc = run_main(args + ["--data_path", "/nonexistent"])
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_topk_larger_than_items_is_refused(tmp_path, planted, capsys):
    code = main.main(small_args(tmp_path, os.path.dirname(planted), "--topks", "[5,500]"))
    assert code == 2
    assert "--topks: k = 500 exceeds the 80 items of planted" in capsys.readouterr().err


def test_unknown_dataset_is_one_clear_error(tmp_path):
    proc = run_main(["--dataset", "nosuch", "--data_path", str(tmp_path), "--tensorboard", "0"])
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"error: unknown dataset 'nosuch': no folder {tmp_path}/nosuch (choose one of "
                                   f"gowalla, yelp2018, amazon-book, lastfm, or put train.txt and test.txt in that folder)")


def test_testbatch_larger_than_users_is_clamped(tmp_path, planted, capsys):
    assert main.main(small_args(tmp_path, os.path.dirname(planted), "--testbatch", "100000", "--epochs", "0")) == 0
    assert "testing them in one batch" in capsys.readouterr().out


def test_without_extensions_torch_backend_and_numpy_sampler_give_the_same_run(tmp_path, planted):
    """The fallback path (also the one accelerators use) matches the C++ path."""
    data_path = os.path.dirname(planted)
    runs = {}
    for name, env in (("cpp", {}), ("torch", {"LIGHTGCN_NO_EXT": "1"})):
        proc = run_main(small_args(tmp_path / name, data_path, "--epochs", "6", "--test_every", "3"), env=env)
        assert proc.returncode == 0, proc.stderr
        runs[name] = proc.stdout
    assert "propagation: C++ CSR kernels" in runs["cpp"] and "sampler: C++ extension" in runs["cpp"]
    assert "C++ propagation kernels unavailable (LIGHTGCN_NO_EXT is set): using torch sparse products" in runs["torch"]
    assert "sampler: numpy (the C++ extension is unavailable: LIGHTGCN_NO_EXT is set)" in runs["torch"]
    loss = lambda out: [float(m.group(3)) for m in map(EPOCH_LINE.match, out.splitlines()) if m]
    assert loss(runs["cpp"]) == pytest.approx(loss(runs["torch"]), abs=2e-3)
    for a, b in zip(test_results(runs["cpp"]), test_results(runs["torch"])):
        assert a["recall"] == pytest.approx(b["recall"], abs=0.02)


@pytest.mark.parametrize("extra", [["--dropout", "1", "--keepprob", "0.7"], ["--a_split", "1", "--a_fold", "3"]])
def test_edge_dropout_and_split_graph_train(tmp_path, planted, extra):
    env = {"LIGHTGCN_NO_EXT": "1"} if "--a_split" in extra else {}  # folds are a torch-backend feature
    proc = run_main(small_args(tmp_path, os.path.dirname(planted), "--epochs", "8", "--test_every", "8", *extra),
                    env=env)
    assert proc.returncode == 0, proc.stderr
    results = test_results(proc.stdout)
    assert results[-1]["recall"] > 2 * results[0]["recall"]
