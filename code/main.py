"""Train and test LightGCN: `cd code && python3 main.py [flags]` (see parse.py)."""
import csv
import os
import signal
import sys
import time

import torch

import checkpoint
import dataloader
import devices
import distributed
import parse
import Procedure
import propagation
import register
import utils
import world


class StopRequest:
    """SIGINT/SIGTERM set a flag; training stops after the batch in flight."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __call__(self):
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def exit_code(self):
        # A rank stopped because another rank was signalled exits as torchrun's SIGTERM would.
        return 128 + int(self.signum if self.signum is not None else signal.SIGTERM)


def fail(message, code=1):
    print(f"error: {message}", file=sys.stderr)
    return code


def config_block(config, dataset, device, graph, sampler_note, precision, optimizer, context):
    lines = ["=" * 20 + " config " + "=" * 20]
    for key in ("dataset", "model", "recdim", "layer", "lr", "lr_milestones", "lr_gamma", "decay",
                "bpr_batch", "epochs", "dropout", "keepprob", "topks", "testbatch", "test_every", "seed",
                "path", "data_path"):
        lines.append(f"{key}: {getattr(config, key)}")
    lines.append(f"device: {device}, threads: {torch.get_num_threads()}"
                 + (f", ranks: {context.world_size} (torchrun, {distributed.BACKENDS.get(device.type, 'gloo')})"
                    if context.world_size > 1 else ""))
    lines.append(f"optimizer: {type(optimizer).__name__}, {precision.describe()}")
    lines.append(f"users: {dataset.n_users}, items: {dataset.m_items}, "
                 f"train: {dataset.trainDataSize}, test: {dataset.testDataSize}")
    if graph is not None:
        lines.append(f"propagation: {graph.backend}")
    lines.append(sampler_note)
    lines.extend(dataset.notes)
    lines.append("=" * 48)
    return "\n".join(lines)


def csv_columns(topks):
    cols = ["epoch", "loss"]
    for name in ("precision", "recall", "ndcg"):
        cols += [f"{name}@{k}" for k in topks]
    return cols + ["elapsed_s"]


def run(config):
    if config.threads:
        torch.set_num_threads(config.threads)
    utils.set_seed(config.seed)
    context, device = distributed.setup(config.device)
    devices.set_device(device)
    if not context.is_main:  # rank 0 alone prints, writes tensorboard, the CSV and checkpoints
        sys.stdout = open(os.devnull, "w")
        config.tensorboard = 0
    progress = sys.stderr.isatty() and context.is_main

    dataset = register.load_dataset(config.dataset, config.data_path, progress=progress)
    if max(config.topks) > dataset.m_items:
        raise parse.ConfigError(f"argument --topks: k = {max(config.topks)} exceeds the "
                                f"{dataset.m_items} items of {config.dataset}")
    if config.testbatch > len(dataset.testUsers):
        print(f"--testbatch {config.testbatch} is more than the {len(dataset.testUsers)} test users: "
              f"testing them in one batch")
        config.testbatch = len(dataset.testUsers)

    graph = None
    if config.model == "lgn":
        graph = propagation.build_graph(dataset.getSparseGraph(), device,
                                        n_folds=config.a_fold if config.a_split else 1)
    model = register.build_model(config, dataset, graph).to(device)
    sampler, sampler_note = utils.make_sampler(dataset.UserItemNet)

    model, optimizer, precision = devices.build_training(model, config, device)
    print(config_block(config, dataset, device, graph, sampler_note, precision, optimizer, context))

    weight_file = utils.getFileName(config)
    best_file = weight_file.replace(".pth.tar", "-best.pth.tar")
    csv_file = weight_file.replace(".pth.tar", ".csv")
    start_epoch, best, elapsed0 = 0, {"recall": -1.0, "epoch": -1, "bad_tests": 0}, 0.0
    if config.pretrain:
        source = config.pretrain_file or weight_file
        try:
            state = checkpoint.load(source)
        except FileNotFoundError:
            raise checkpoint.CheckpointError(f"--pretrain 1: {source} does not exist") from None
        checkpoint.check_compatible(source, state, config, dataset.n_users, dataset.m_items)
        model.load_state_dict(state["state_dict"])
        print(f"initialised embeddings from {source}")
    if config.load:
        try:
            state = checkpoint.load(weight_file)
        except FileNotFoundError:
            print(f"{weight_file} not exists, start from beginning")
        else:
            checkpoint.check_compatible(weight_file, state, config, dataset.n_users, dataset.m_items)
            model.load_state_dict(state["state_dict"])
            if state.get("optimizer"):
                optimizer.load_state_dict(state["optimizer"])
            checkpoint.set_rng_state(state.get("rng"))
            start_epoch = int(state.get("epoch", 0))
            best = state.get("best", best)
            elapsed0 = float(state.get("elapsed_s", 0.0))
            world.cprint(f"loaded model weights from {weight_file} (epoch {start_epoch})")

    writer = None
    if config.tensorboard:
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(os.path.join(world.BOARD_PATH, time.strftime("%m-%d-%Hh%Mm%Ss-") + "-" + config.comment))

    columns = csv_columns(config.topks)
    if context.is_main:
        os.makedirs(config.path, exist_ok=True)
        kept_rows = []
        if start_epoch > 0 and os.path.exists(csv_file):
            with open(csv_file, newline="") as handle:
                kept_rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) <= start_epoch]
        with open(csv_file, "w", newline="") as handle:
            csv.DictWriter(handle, columns).writeheader()
            csv.DictWriter(handle, columns).writerows(kept_rows)

    stop = StopRequest()
    stop.install()

    def finish(exit_code):
        # Every rank gets here together (a stop is agreed on at the same batch), so the
        # process group can be left cleanly; see distributed.TorchDistributed.close.
        if writer:
            writer.close()
        context.close()
        return exit_code

    run_start = time.time() - elapsed0
    last_loss = float("nan")

    def make_state(epoch):
        return {
            "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
            "config": {k: getattr(config, k) for k in checkpoint.MATCH_KEYS} | {"args": vars(config)},
            "best": best, "rng": checkpoint.rng_state(), "elapsed_s": time.time() - run_start}

    def save_state(epoch, also_best=False):
        if not context.is_main:
            return
        state = make_state(epoch)
        checkpoint.save(weight_file, state)
        if also_best:
            checkpoint.save(best_file, state)

    def test(epoch):
        nonlocal best
        world.cprint("[TEST]")
        results = Procedure.Test(dataset, model, config, device, precision, progress=progress, context=context)
        print(results)
        row = {"epoch": epoch, "loss": last_loss, "elapsed_s": round(time.time() - run_start, 2)}
        for name in ("precision", "recall", "ndcg"):
            for k, value in zip(config.topks, results[name]):
                row[f"{name}@{k}"] = float(value)
                if writer:
                    writer.add_scalar(f"Test/{name}@{k}", float(value), epoch)
        if context.is_main:
            with open(csv_file, "a", newline="") as handle:
                csv.DictWriter(handle, columns).writerow(row)
        recall = float(results["recall"][0])
        if recall > best["recall"]:
            best = {"recall": recall, "epoch": epoch, "bad_tests": 0}
            return True
        best["bad_tests"] = best.get("bad_tests", 0) + 1
        return False

    # A test before training; a resumed run tests again only if it has nothing to train.
    if start_epoch == 0 or start_epoch >= config.epochs:
        improved = test(start_epoch)
        if improved and start_epoch < config.epochs and context.is_main:
            checkpoint.save(best_file, make_state(start_epoch))  # the initial model may stay the best
    rate = None
    for epoch in range(start_epoch, config.epochs):
        t0 = time.time()
        epoch_rate = devices.learning_rate(config, epoch)
        if epoch_rate != rate:  # the run's first epoch, and each milestone
            rate = epoch_rate
            devices.set_learning_rate(optimizer, rate)
            if config.lr_milestones:
                print(f"learning rate {rate:g} from epoch {epoch + 1}")
        out = Procedure.BPR_train_original(dataset, model, optimizer, sampler, config, epoch, device,
                                           precision, stop_requested=stop, progress=progress, context=context)
        if out is None:
            held = (f"{weight_file} holds the last completed epoch ({epoch}); resume with --load 1"
                    if epoch > 0 else "no epoch was completed, so no checkpoint was written")
            print(f"interrupted during epoch {epoch + 1}: it was abandoned; {held}")
            return finish(stop.exit_code())
        last_loss, info = out
        devices.synchronize(device)
        seconds = time.time() - t0
        print(f"EPOCH[{epoch + 1}/{config.epochs}] {info}-{seconds:.2f}s-{dataset.trainDataSize / seconds:.0f}/s")
        if writer:
            writer.add_scalar("BPRLoss", last_loss, epoch + 1)
        if (epoch + 1) % config.test_every == 0 or epoch + 1 == config.epochs:
            improved = test(epoch + 1)
            save_state(epoch + 1, also_best=improved)
            if config.stopping_step and best["bad_tests"] >= config.stopping_step:
                print(f"early stop: recall@{config.topks[0]} has not improved for {best['bad_tests']} tests "
                      f"(best {best['recall']:.4f} at epoch {best['epoch']})")
                break
        else:
            save_state(epoch + 1)
        if context.any_rank(stop()):  # a signal may reach the ranks either side of this line
            print(f"stopped after epoch {epoch + 1}; resume with --load 1")
            return finish(stop.exit_code())
    return finish(0)


def main(argv=None):
    config = parse.parse_args(argv)
    try:
        return run(config)
    except parse.ConfigError as exc:
        return fail(str(exc), 2)
    except (dataloader.DataError, checkpoint.CheckpointError, devices.DeviceError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except distributed.PeerError as exc:
        return fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
