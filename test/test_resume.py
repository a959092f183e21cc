"""Resumable training, best checkpoint, early stopping, CSV and plot."""
import csv
import os
import types

import pytest
import torch

import checkpoint
import devices
import main
import parse
import plot
import Procedure


def args(tmp_path, data_path, ck, *extra):
    return ["--dataset", "planted", "--data_path", data_path, "--path", str(ck), "--tensorboard", "0",
            "--recdim", "8", "--layer", "2", "--bpr_batch", "64", "--lr", "0.01", "--topks", "[5,10]",
            "--test_every", "2", *extra]


def read_csv(path):
    with open(path) as handle:
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in csv.DictReader(handle)]


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, planted, capsys, monkeypatch):
    data_path = os.path.dirname(planted)
    assert main.main(args(tmp_path, data_path, tmp_path / "a", "--epochs", "7")) == 0

    real_train = Procedure.BPR_train_original
    calls = {"n": 0}

    def interrupt_in_epoch_4(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            return None  # as when SIGTERM arrives: the epoch is abandoned
        return real_train(*a, **k)

    monkeypatch.setattr(Procedure, "BPR_train_original", interrupt_in_epoch_4)
    monkeypatch.setattr(main.StopRequest, "exit_code", lambda self: 143)
    assert main.main(args(tmp_path, data_path, tmp_path / "b", "--epochs", "7")) == 143
    assert "interrupted during epoch 4" in capsys.readouterr().out
    monkeypatch.setattr(Procedure, "BPR_train_original", real_train)
    assert main.main(args(tmp_path, data_path, tmp_path / "b", "--epochs", "7", "--load", "1")) == 0

    a = checkpoint.load(str(tmp_path / "a" / "lgn-planted-2-8.pth.tar"))
    b = checkpoint.load(str(tmp_path / "b" / "lgn-planted-2-8.pth.tar"))
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["epoch"] == b["epoch"] == 7 and a["best"] == b["best"]
    rows_a = read_csv(tmp_path / "a" / "lgn-planted-2-8.csv")
    rows_b = read_csv(tmp_path / "b" / "lgn-planted-2-8.csv")
    assert rows_a == rows_b
    assert [r["epoch"] for r in rows_a] == ["0", "2", "4", "6", "7"]
    assert list(rows_a[0]) == ["epoch", "loss", "precision@5", "precision@10", "recall@5", "recall@10",
                               "ndcg@5", "ndcg@10"]


def test_resume_with_other_configuration_is_refused(tmp_path, planted, capsys):
    data_path = os.path.dirname(planted)
    ck = tmp_path / "ck"
    assert main.main(args(tmp_path, data_path, ck, "--epochs", "1")) == 0
    os.rename(ck / "lgn-planted-2-8.pth.tar", ck / "lgn-planted-3-8.pth.tar")
    assert main.main(args(tmp_path, data_path, ck, "--epochs", "2", "--load", "1", "--layer", "3")) == 1
    assert "made with --layer 2, this run has --layer 3" in capsys.readouterr().err


def test_best_checkpoint_and_early_stopping(tmp_path, planted, capsys):
    data_path = os.path.dirname(planted)
    ck = tmp_path / "ck"
    # lr 0 never improves on the initial test, so the 2nd test without improvement stops
    code = main.main(args(tmp_path, data_path, ck, "--epochs", "50", "--test_every", "1", "--lr", "1e-12",
                          "--stopping_step", "2"))
    out = capsys.readouterr().out
    assert code == 0 and "early stop" in out
    assert out.count("EPOCH[") < 10
    best = checkpoint.load(str(ck / "lgn-planted-2-8-best.pth.tar"))
    last = checkpoint.load(str(ck / "lgn-planted-2-8.pth.tar"))
    assert best["best"]["epoch"] == best["epoch"] <= last["epoch"]


def test_plot_draws_png(tmp_path, planted, capsys):
    data_path = os.path.dirname(planted)
    ck = tmp_path / "ck"
    assert main.main(args(tmp_path, data_path, ck, "--epochs", "4")) == 0
    csv_path = str(ck / "lgn-planted-2-8.csv")
    assert plot.main([csv_path]) == 0
    png = ck / "lgn-planted-2-8.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert plot.main([str(empty)]) == 1


def test_learning_rate_milestones(tmp_path, planted, capsys):
    """--lr_milestones: the rate drops by --lr_gamma after each milestone epoch; a resumed run
    follows its own flags, not the rate saved in the optimizer state."""
    config = types.SimpleNamespace(lr=0.01, lr_milestones=[3, 5], lr_gamma=0.5)
    assert [devices.learning_rate(config, e) for e in range(7)] == [0.01] * 3 + [0.005] * 2 + [0.0025] * 2

    data_path = os.path.dirname(planted)
    # A tiny gamma freezes the weights after the milestone: epochs 3 and 4 leave them as epoch 2 did.
    assert main.main(args(tmp_path, data_path, tmp_path / "m", "--epochs", "4", "--lr_milestones", "2",
                          "--lr_gamma", "1e-12")) == 0
    out = capsys.readouterr().out
    assert "learning rate 0.01 from epoch 1" in out and "learning rate 1e-14 from epoch 3" in out
    frozen = checkpoint.load(str(tmp_path / "m" / "lgn-planted-2-8.pth.tar"))
    assert main.main(args(tmp_path, data_path, tmp_path / "c", "--epochs", "2")) == 0
    constant2 = checkpoint.load(str(tmp_path / "c" / "lgn-planted-2-8.pth.tar"))
    for key in frozen["state_dict"]:
        assert torch.allclose(frozen["state_dict"][key], constant2["state_dict"][key], atol=1e-6), key
    # Resuming the 2-epoch run with another --lr trains at the new rate (0.01 is stored in its optimizer).
    assert main.main(args(tmp_path, data_path, tmp_path / "c", "--epochs", "3", "--load", "1",
                          "--lr_milestones", "2", "--lr_gamma", "1e-12")) == 0
    resumed = checkpoint.load(str(tmp_path / "c" / "lgn-planted-2-8.pth.tar"))
    assert resumed["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-14)
    for key in resumed["state_dict"]:
        assert torch.allclose(resumed["state_dict"][key], constant2["state_dict"][key], atol=1e-6), key


def test_bad_milestones_flag(capsys):
    for bad in ("ten", "0,5"):
        with pytest.raises(SystemExit) as exc:
            parse.parse_args(["--lr_milestones", bad])
        assert exc.value.code == 2
        assert "--lr_milestones must be" in capsys.readouterr().err
    assert parse.parse_args(["--lr_milestones", "500,300"]).lr_milestones == [300, 500]
