import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = os.path.join(ROOT, "code")
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
sys.path.insert(0, CODE)


def write_gowalla_format(folder, train, test, crlf=False):
    """train/test: dict user -> list of items."""
    os.makedirs(folder, exist_ok=True)
    end = "\r\n" if crlf else "\n"
    for name, table in (("train.txt", train), ("test.txt", test)):
        with open(os.path.join(folder, name), "w", newline="") as handle:
            for user in sorted(table):
                handle.write(" ".join(str(x) for x in [user] + list(table[user])) + end)
    return folder


def planted_dataset(n_users=120, n_items=80, n_groups=4, per_user=8, seed=0):
    """Users of group g like items of group g: train and test are disjoint draws."""
    rng = np.random.default_rng(seed)
    items_per_group = n_items // n_groups
    train, test = {}, {}
    for u in range(n_users):
        g = u % n_groups
        pool = rng.permutation(np.arange(g * items_per_group, (g + 1) * items_per_group))
        train[u] = sorted(pool[:per_user].tolist())
        test[u] = sorted(pool[per_user:per_user + 4].tolist())
    return train, test


@pytest.fixture
def planted(tmp_path):
    train, test = planted_dataset()
    return write_gowalla_format(str(tmp_path / "data" / "planted"), train, test)


def run_main(args, cwd=CODE, env=None, timeout=600, script="main.py"):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, script] + list(args), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def read_until(proc, prefix, timeout=120):
    """Read a running process's stdout until a line starts with `prefix` (True) or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.stdout.readline().startswith(prefix):
            return True
    return False


def shared_dataset(name):
    folder = os.path.join(SHARED_DATA, name)
    if not os.path.isdir(folder):
        pytest.skip(f"{folder} is not there")
    return folder
