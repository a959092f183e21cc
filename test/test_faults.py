"""Bad input and faults: one clear message, a non-zero exit, nothing lost."""
import errno
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import checkpoint
import dataloader
import main
import utils
from conftest import CODE, planted_dataset, read_until, write_gowalla_format


def write(folder, train_text, test_text="0 1\n"):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "train.txt"), "w", newline="") as f:
        f.write(train_text)
    with open(os.path.join(folder, "test.txt"), "w", newline="") as f:
        f.write(test_text)
    return folder


def run_cli(capsys, data_path, dataset, *extra, path=None):
    args = ["--dataset", dataset, "--data_path", str(data_path), "--tensorboard", "0", "--epochs", "1",
            "--recdim", "8", "--layer", "1", "--topks", "[2]", "--path", str(path or data_path)] + list(extra)
    code = main.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("train,test,message", [
    ("0 1 2\n1 x 3\n", "0 1\n", "train.txt:2: 'x' is not an integer id"),
    ("0 1 2\n1 -3\n", "0 1\n", "train.txt:2: item id -3 is below the smallest allowed id 0"),
    ("0 1 2\n-1 3\n", "0 1\n", "train.txt:2: negative user id -1"),
    ("", "0 1\n", "train.txt: the file is empty"),
    ("0 1\n", "\n\n", "test.txt: the file is empty"),
    ("0 1 2\n", "0 1.5\n", "test.txt:1: '1.5' is not an integer id"),
    ("0 1\n", "0\n1\n", "test.txt: no test interaction"),
    ("0 1 99999999999\n", "0 1\n", "item ids go up to 99999999999 but only 2 distinct items occur"),
    ("0 0 1 2\n1 0\n", "1 1\n", "user 0 has every item as a training positive"),
])
def test_bad_dataset_files(tmp_path, capsys, train, test, message):
    write(str(tmp_path / "mine"), train, test)
    code, out, err = run_cli(capsys, tmp_path, "mine")
    assert code == 1
    assert message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_binary_file_is_a_clear_error(tmp_path, capsys):
    folder = write(str(tmp_path / "mine"), "0 1\n")
    with open(os.path.join(folder, "train.txt"), "wb") as f:
        f.write(b"\xff\xfe\x00\x01garbage")
    code, _, err = run_cli(capsys, tmp_path, "mine")
    assert code == 1 and "train.txt: not a text file" in err


@pytest.mark.parametrize("missing", ["train.txt", "test.txt"])
def test_missing_file_of_own_dataset(tmp_path, capsys, missing):
    folder = write(str(tmp_path / "mine"), "0 1\n")
    os.remove(os.path.join(folder, missing))
    code, _, err = run_cli(capsys, tmp_path, "mine")
    assert code == 1 and f"missing {missing}" in err


def test_user_without_items_duplicates_crlf_trailing_spaces_cold_test(tmp_path, capsys):
    write(str(tmp_path / "mine"), "0 1 2 2 \r\n1\r\n2 0 3\t\r\n0 1\r\n", "0 3\n1 2\n3 4\n")
    ds = dataloader.Loader(str(tmp_path / "mine"))
    assert (ds.n_users, ds.m_items, ds.trainDataSize) == (4, 5, 4)
    notes = " | ".join(ds.notes)
    assert "removed duplicate interactions: 2 in training, 0 in test" in notes
    assert "2 test users have no training item" in notes
    assert "1 test items never occur in training" in notes
    code, out, _ = run_cli(capsys, tmp_path, "mine")
    assert code == 0 and "removed duplicate interactions" in out


def test_fuzzed_dataset_files_never_crash(tmp_path):
    rng = np.random.default_rng(0)
    train, test = planted_dataset(n_users=12, n_items=16, per_user=3)
    base = write_gowalla_format(str(tmp_path / "base"), train, test)
    originals = {name: open(os.path.join(base, name), "rb").read() for name in ("train.txt", "test.txt")}
    junk = [b"-", b"x", b"\xff", b"\x00", b" ", b"\n", b"\r\n", b"\t", b"9" * 25, b"-1", b"1e3", b"3.5"]
    outcomes = {"ok": 0, "error": 0}
    for trial in range(300):
        folder = str(tmp_path / f"f{trial}")
        os.makedirs(folder)
        for name, raw in originals.items():
            data = bytearray(raw)
            for _ in range(rng.integers(0, 4)):
                op, at = rng.integers(0, 4), int(rng.integers(0, max(1, len(data))))
                if op == 0:
                    data[at:at] = junk[rng.integers(len(junk))]
                elif op == 1:
                    del data[at:at + int(rng.integers(1, 10))]
                elif op == 2:
                    data = data[:at]  # truncated
                else:
                    data[at:at + 1] = bytes([int(rng.integers(0, 256))])
            with open(os.path.join(folder, name), "wb") as f:
                f.write(bytes(data))
        try:
            ds = dataloader.Loader(folder)
            ds.getSparseGraph()
            utils.NumpySampler(ds.UserItemNet).sample(1, 100)
            outcomes["ok"] += 1
        except dataloader.DataError as exc:
            assert str(exc) and "\n" not in str(exc)
            outcomes["error"] += 1
    assert outcomes["ok"] > 20 and outcomes["error"] > 20, outcomes


# ------------------------------------------------------------------ checkpoints
@pytest.fixture
def planted_run(tmp_path, planted, capsys):
    data_path = os.path.dirname(planted)
    ck = tmp_path / "ck"
    code, _, _ = run_cli(capsys, data_path, "planted", path=ck)
    assert code == 0
    return data_path, ck, ck / "lgn-planted-1-8.pth.tar"


@pytest.mark.parametrize("damage,message", [
    (lambda raw: raw[: len(raw) // 2], "not a readable checkpoint, corrupt or truncated"),
    (lambda raw: b"\x00" * 100, "not a readable checkpoint"),
    (lambda raw: None, "not a LightGCN checkpoint"),
])
def test_bad_checkpoint_with_load_is_refused_and_kept(planted_run, capsys, damage, message):
    data_path, ck, file = planted_run
    raw = file.read_bytes()
    new = damage(raw)
    if new is None:
        torch.save({"something": "else"}, file)
        new = file.read_bytes()
    else:
        file.write_bytes(new)
    code, _, err = run_cli(capsys, data_path, "planted", "--load", "1", path=ck)
    assert code == 1 and message in err and "left as it is" in err
    assert file.read_bytes() == new


def test_checkpoint_of_other_shape_is_refused(planted_run, capsys):
    data_path, ck, file = planted_run
    os.rename(file, ck / "lgn-planted-1-16.pth.tar")
    code, _, err = run_cli(capsys, data_path, "planted", "--load", "1", "--recdim", "16", path=ck)
    assert code == 1 and "made with --recdim 8, this run has --recdim 16" in err


def test_disk_full_while_saving_keeps_previous_checkpoint(planted_run, capsys, monkeypatch):
    data_path, ck, file = planted_run
    before = file.read_bytes()

    def full_disk(obj, handle, *a, **k):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    code, _, err = run_cli(capsys, data_path, "planted", "--load", "1", "--epochs", "2", path=ck)
    assert code == 1
    assert "No space left on device" in err and "the previous checkpoint is kept" in err
    assert file.read_bytes() == before
    assert not [f for f in os.listdir(ck) if ".tmp-" in f]


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_training_leaves_a_clean_checkpoint(tmp_path, sig, code):
    train, test = planted_dataset(n_users=1000, n_items=200, per_user=10)
    data = tmp_path / "data"
    write_gowalla_format(str(data / "big"), train, test)
    proc = subprocess.Popen([sys.executable, "main.py", "--dataset", "big", "--data_path", str(data),
                             "--path", str(tmp_path / "ck"), "--tensorboard", "0", "--epochs", "1000",
                             "--bpr_batch", "16", "--recdim", "8", "--test_every", "1000"],
                            cwd=CODE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    read_until(proc, "EPOCH[2/")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "resume with --load 1" in out
    state = checkpoint.load(str(tmp_path / "ck" / "lgn-big-4-8.pth.tar"))
    assert state["epoch"] >= 2
    assert not [f for f in os.listdir(tmp_path / "ck") if ".tmp-" in f]
