"""The committed gowalla recipe (imgs/gowalla-best.cmd) still trains as its committed curve
says: 10 epochs of it reproduce the CSV's epoch-10 recall@20 (within 0.003)."""
import os
import shlex

import plot
from conftest import ROOT, SHARED_DATA, run_main, shared_dataset

IMGS = os.path.join(ROOT, "imgs")


def rows_by_epoch(path):
    _, rows = plot.read_rows(path)
    return {int(row["epoch"]): row for row in rows}


def test_gowalla_best_recipe_reproduces_its_epoch_10(tmp_path):
    shared_dataset("gowalla")
    with open(os.path.join(IMGS, "gowalla-best.cmd")) as handle:
        lines = [line for line in handle.read().splitlines() if line.strip()]
    assert len(lines) == 1, "gowalla-best.cmd holds one line of main.py arguments"
    recipe = shlex.split(lines[0])
    assert "--data_path" not in recipe and "--dataset" in recipe
    committed = rows_by_epoch(os.path.join(IMGS, "gowalla-best.csv"))

    proc = run_main(recipe + ["--data_path", SHARED_DATA, "--epochs", "10", "--path", str(tmp_path)],
                    timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (csv_name,) = [name for name in os.listdir(tmp_path) if name.endswith(".csv")]
    rerun = rows_by_epoch(tmp_path / csv_name)
    assert abs(float(rerun[10]["recall@20"]) - float(committed[10]["recall@20"])) <= 0.003
    assert abs(float(rerun[10]["ndcg@20"]) - float(committed[10]["ndcg@20"])) <= 0.003
