"""Time the phases of LightGCN on a dataset (seed defaults unless flags say otherwise).

    python3 test/benchmark.py --dataset gowalla --data_path ../shared/data [--runs 3] [--device cpu]

Each phase runs once to warm up, then --runs times; one JSON object per line per phase:
{"phase": ..., "median_s": ..., "runs": N, "peak_rss_mb": ...}. peak_rss_mb is the peak
resident memory of this process so far (ru_maxrss)."""
import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "code"))

import torch  # noqa: E402

import dataloader  # noqa: E402
import devices  # noqa: E402
import parse  # noqa: E402
import Procedure  # noqa: E402
import propagation  # noqa: E402
import register  # noqa: E402
import utils  # noqa: E402


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, runs, device, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        devices.synchronize(device)
        t0 = time.perf_counter()
        fn()
        devices.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def report(phase, times, **extra):
    print(json.dumps({"phase": phase, "median_s": round(statistics.median(times), 6), "runs": len(times),
                      "peak_rss_mb": round(peak_rss_mb(), 1), **extra}), flush=True)


def main():
    bench = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_argument("--runs", type=int, default=3)
    bench.add_argument("--phases", default="graph_build,sample_epoch,train_epoch,test_full")
    known, rest = bench.parse_known_args()
    config = parse.parse_args(rest + ["--tensorboard", "0"])
    phases = known.phases.split(",")
    if config.threads:
        torch.set_num_threads(config.threads)
    device = devices.select_device(config.device)
    utils.set_seed(config.seed)
    def load():
        return dataloader.load_dataset(config.dataset, config.data_path, progress=False)

    dataset = load()

    if "graph_build" in phases:
        def build():
            dataloader.normalized_adjacency(load().UserItemNet)
        report("graph_build", timed(build, known.runs, device))

    sampler, _ = utils.make_sampler(dataset.UserItemNet)
    if "sample_epoch" in phases:
        key = iter(range(10**6))
        report("sample_epoch", timed(lambda: sampler.sample(utils.epoch_key(config.seed, next(key)),
                                                            dataset.trainDataSize), known.runs, device),
               sampler=sampler.name)

    graph = propagation.build_graph(dataset.getSparseGraph(), device) if config.model == "lgn" else None
    model = register.build_model(config, dataset, graph).to(device)
    model, optimizer, precision = devices.build_training(model, config, device)
    backend = graph.backend if graph else "none"
    if "train_epoch" in phases:
        epoch = iter(range(10**6))
        report("train_epoch", timed(lambda: Procedure.BPR_train_original(
            dataset, model, optimizer, sampler, config, next(epoch), device, precision, progress=False),
            known.runs, device), propagation=backend, device=str(device), amp=precision.describe())
    if "test_full" in phases:
        report("test_full", timed(lambda: Procedure.Test(dataset, model, config, device, precision, progress=False),
                                  known.runs, device), test_users=len(dataset.testUsers), device=str(device))


if __name__ == "__main__":
    main()
