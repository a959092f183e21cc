import json
import os
import subprocess
import sys

from conftest import ROOT


def test_benchmark_prints_one_json_object_per_phase(planted):
    proc = subprocess.run([sys.executable, "test/benchmark.py", "--dataset", "planted", "--data_path",
                           os.path.dirname(planted), "--runs", "2", "--recdim", "8", "--layer", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["phase"] for r in rows] == ["graph_build", "sample_epoch", "train_epoch", "test_full"]
    for r in rows:
        assert r["runs"] == 2 and r["median_s"] > 0 and r["peak_rss_mb"] > 0
