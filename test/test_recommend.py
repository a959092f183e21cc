import csv
import os

import numpy as np
import pytest
import torch

import checkpoint
import dataloader
import main
import recommend


@pytest.fixture
def trained(tmp_path, planted, capsys):
    data_path = os.path.dirname(planted)
    ck = str(tmp_path / "ck")
    assert main.main(["--dataset", "planted", "--data_path", data_path, "--path", ck, "--tensorboard", "0",
                      "--epochs", "2", "--recdim", "8", "--layer", "2", "--topks", "[5]"]) == 0
    capsys.readouterr()
    return data_path, ck


def rec(data_path, ck, *args):
    return recommend.main(["--dataset", "planted", "--data_path", data_path, "--path", ck,
                           "--layer", "2", "--recdim", "8", *args])


def read_csv(path):
    with open(path) as handle:
        return [(int(r["user"]), int(r["rank"]), int(r["item"]), float(r["score"])) for r in csv.DictReader(handle)]


def test_recommendations_equal_dense_brute_force_without_training_items(trained, tmp_path):
    data_path, ck = trained
    out = str(tmp_path / "rec.csv")
    assert rec(data_path, ck, "--all", "--topk", "7", "--output", out, "--batch", "13") == 0
    rows = read_csv(out)
    ds = dataloader.Loader(os.path.join(data_path, "planted"))
    state = checkpoint.load(os.path.join(ck, "lgn-planted-2-8-best.pth.tar"))
    a = torch.from_numpy(dataloader.normalized_adjacency(ds.UserItemNet).toarray()).double()
    e = torch.cat([state["state_dict"]["embedding_user.weight"], state["state_dict"]["embedding_item.weight"]]).double()
    final = (e + a @ e + a @ a @ e) / 3
    scores = (final[:ds.n_users] @ final[ds.n_users:].T).numpy()
    train = ds.UserItemNet.toarray() > 0
    assert len(rows) == ds.n_users * 7
    for u in range(ds.n_users):
        got = [r for r in rows if r[0] == u]
        assert [r[1] for r in got] == list(range(1, 8))
        assert not train[u, [r[2] for r in got]].any()
        allowed = np.where(train[u], -np.inf, scores[u])
        np.testing.assert_allclose([r[3] for r in got], np.sort(allowed)[::-1][:7], rtol=1e-4, atol=1e-5)


def test_some_users_to_stdout_and_users_file(trained, tmp_path, capsys):
    data_path, ck = trained
    assert rec(data_path, ck, "--users", "0,5", "--topk", "3") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["user", "rank", "item", "score"] and len(lines) == 7
    assert [l.split()[0] for l in lines[1:]] == ["0"] * 3 + ["5"] * 3
    users = tmp_path / "users.txt"
    users.write_text("5\n0\n")
    assert rec(data_path, ck, "--users_file", str(users), "--topk", "3") == 0
    again = capsys.readouterr().out.strip().splitlines()
    assert sorted(again[1:]) == sorted(lines[1:])


def test_original_ids_round_trip(trained, tmp_path, capsys):
    data_path, ck = trained
    folder = os.path.join(data_path, "planted")
    with open(os.path.join(folder, "user_list.txt"), "w") as f:
        f.write("org_id remap_id\n" + "".join(f"u{1000 + i} {i}\n" for i in range(120)))
    with open(os.path.join(folder, "item_list.txt"), "w") as f:
        f.write("org_id remap_id\n" + "".join(f"{5000 + 3 * i} {i}\n" for i in range(80)))
    plain, mapped = str(tmp_path / "a.csv"), str(tmp_path / "b.csv")
    assert rec(data_path, ck, "--users", "3,7", "--output", plain) == 0
    assert rec(data_path, ck, "--users", "3,7", "--output", mapped, "--original_ids") == 0
    with open(plain) as f1, open(mapped) as f2:
        a, b = list(csv.DictReader(f1)), list(csv.DictReader(f2))
    assert [f"u{1000 + int(r['user'])}" for r in a] == [r["user"] for r in b]
    assert [str(5000 + 3 * int(r["item"])) for r in a] == [r["item"] for r in b]


def test_parquet_output(trained, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    data_path, ck = trained
    out = str(tmp_path / "r.parquet")
    assert rec(data_path, ck, "--users", "1", "--topk", "4", "--output", out) == 0
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["user", "rank", "item", "score"] and len(frame) == 4


def test_errors(trained, tmp_path, capsys):
    data_path, ck = trained
    assert rec(data_path, ck, "--users", "0,500,-1") == 1
    assert "unknown users: 500, -1 (planted has users 0..119)" in capsys.readouterr().err
    assert rec(data_path, str(tmp_path / "empty"), "--users", "0") == 1
    assert "no checkpoint lgn-planted-2-8-best.pth.tar or lgn-planted-2-8.pth.tar" in capsys.readouterr().err
    assert rec(data_path, ck, "--users", "0", "--checkpoint", str(tmp_path / "nope.pth.tar")) == 1
    assert "file not found" in capsys.readouterr().err
    # a checkpoint of another dataset
    state = checkpoint.load(os.path.join(ck, "lgn-planted-2-8.pth.tar"))
    state["config"]["dataset"] = "gowalla"
    other = str(tmp_path / "other.pth.tar")
    checkpoint.save(other, state)
    assert rec(data_path, ck, "--users", "0", "--checkpoint", other) == 1
    assert "was trained on gowalla, not on planted" in capsys.readouterr().err
    assert rec(data_path, ck, "--users", "0", "--output", "x.txt") == 1
    assert "--output must end in .csv or .parquet" in capsys.readouterr().err


def test_checkpoint_config_wins_over_flags(trained, capsys):
    data_path, ck = trained
    assert recommend.main(["--dataset", "planted", "--data_path", data_path, "--layer", "2", "--recdim", "8",
                           "--checkpoint", os.path.join(ck, "lgn-planted-2-8.pth.tar"), "--users", "0"]) == 0
    capsys.readouterr()
    assert recommend.main(["--dataset", "planted", "--data_path", data_path, "--layer", "3", "--recdim", "8",
                           "--checkpoint", os.path.join(ck, "lgn-planted-2-8.pth.tar"), "--users", "0"]) == 0
    assert "trained with --layer 2 (flags said 3): using 2" in capsys.readouterr().err
