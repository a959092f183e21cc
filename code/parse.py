"""Command-line flags: those of the original LightGCN-PyTorch code, same names and
meanings, plus a few of this package (marked "new"). All defaults live here."""
import argparse
import ast
import os
import re
import sys

import world


class ConfigError(Exception):
    """A flag value that only the data can show to be wrong (e.g. k > items)."""


class _Parser(argparse.ArgumentParser):
    """Reports a bad flag in one line (flag, value, what is allowed) and exits 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_in(name, low, high=None):
    def check(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{name} must be {bound}, got {value}")
        return value

    return check


def _float_in(name, low, high=None, low_open=False):
    def check(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if too_low or (high is not None and value > high) or value != value:
            bound = ("> " if low_open else ">= ") + str(low)
            if high is not None:
                bound += f" and <= {high}"
            raise argparse.ArgumentTypeError(f"{name} must be {bound}, got {text}")
        return value

    return check


def parse_milestones(text):
    """'' or '300' or '300,500' -> sorted unique list of epochs >= 1."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        epochs = sorted({int(part) for part in parts})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--lr_milestones must be epochs separated by commas like 300,500, got {text!r}") from None
    if epochs and epochs[0] < 1:
        raise argparse.ArgumentTypeError(f"--lr_milestones must be epochs >= 1, got {text!r}")
    return epochs


def parse_topks(text):
    """'[20]' or '[10,20]' or '20' -> sorted unique list of positive ints, without eval."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(
            f"--topks must be a list of positive integers like [20] or [10,20], got {text!r}"
        ) from None
    if isinstance(value, int):
        value = [value]
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in value)):
        raise argparse.ArgumentTypeError(
            f"--topks must be a list of positive integers like [20] or [10,20], got {text!r}")
    if min(value) < 1:
        raise argparse.ArgumentTypeError(f"--topks values must be >= 1, got {text!r}")
    return sorted(set(value))


def _dataset_name(text):
    if not text or text in (".", "..") or os.sep in text or (os.altsep and os.altsep in text):
        raise argparse.ArgumentTypeError(
            f"--dataset must be one of {', '.join(world.ALL_DATASETS)} or the name of a folder "
            f"under --data_path holding train.txt and test.txt, got {text!r}")
    return text


def _device_spec(text):
    if not re.match(r"^(auto|cpu|(cuda|npu)(:\d+)?)$", text.strip().lower()):
        raise argparse.ArgumentTypeError(f"--device must be auto, cpu, cuda[:i] or npu[:i], got {text!r}")
    return text.strip().lower()


def build_parser(prog="main.py"):
    p = _Parser(prog=prog, description="Train and test LightGCN (or MF) with the BPR loss.")
    p.add_argument("--bpr_batch", type=_int_in("--bpr_batch", 1), default=2048,
                   help="the batch size for bpr loss training procedure")
    p.add_argument("--recdim", type=_int_in("--recdim", 1, 4096), default=64,
                   help="the embedding size of lightGCN")
    p.add_argument("--layer", type=_int_in("--layer", 0, 32), default=4,
                   help="the layer num of lightGCN")
    p.add_argument("--lr", type=_float_in("--lr", 0.0, 10.0, low_open=True), default=0.001,
                   help="the learning rate")
    p.add_argument("--decay", type=_float_in("--decay", 0.0), default=1e-4,
                   help="the weight decay for l2 normalizaton")
    p.add_argument("--dropout", type=_int_in("--dropout", 0, 1), default=0,
                   help="using the dropout or not")
    p.add_argument("--keepprob", type=_float_in("--keepprob", 0.0, 1.0, low_open=True),
                   default=0.6, help="the keep probability of edges when --dropout 1")
    p.add_argument("--a_fold", type=_int_in("--a_fold", 1), default=100,
                   help="the fold num used to split the large adj matrix (yelp2018/amazon-book)")
    p.add_argument("--testbatch", type=_int_in("--testbatch", 1), default=100,
                   help="the batch size of users for testing")
    p.add_argument("--dataset", type=_dataset_name, default="gowalla",
                   help="available datasets: [lastfm, gowalla, yelp2018, amazon-book] or a "
                        "folder under --data_path holding train.txt and test.txt")
    p.add_argument("--path", type=str, default=world.FILE_PATH, help="path to save weights")
    p.add_argument("--topks", type=parse_topks, default=[20], help="@k test list")
    p.add_argument("--tensorboard", type=_int_in("--tensorboard", 0, 1), default=1,
                   help="enable tensorboard")
    p.add_argument("--comment", type=str, default="lgn")
    p.add_argument("--load", type=_int_in("--load", 0, 1), default=0)
    p.add_argument("--epochs", type=_int_in("--epochs", 0, 10**6), default=1000)
    p.add_argument("--multicore", type=_int_in("--multicore", 0, 1), default=0,
                   help="whether we use multiprocessing or not in test (the test here is "
                        "vectorized and already uses every core torch is given)")
    p.add_argument("--pretrain", type=_int_in("--pretrain", 0, 1), default=0,
                   help="whether we use pretrained weight or not (layer-0 embeddings of "
                        "--pretrain_file)")
    p.add_argument("--seed", type=_int_in("--seed", 0, 2**32 - 1), default=2020,
                   help="random seed")
    p.add_argument("--model", type=str, default="lgn", choices=world.ALL_MODELS,
                   help="rec-model, support [mf, lgn]")
    # new flags
    p.add_argument("--data_path", type=str, default=world.DATA_PATH,
                   help="(new) folder holding one folder per dataset")
    p.add_argument("--test_every", type=_int_in("--test_every", 1), default=10,
                   help="(new) test before training, after every N-th epoch and after the last")
    p.add_argument("--pretrain_file", type=str, default="",
                   help="(new) checkpoint whose embeddings --pretrain 1 starts from "
                        "(default: this run's checkpoint file)")
    p.add_argument("--a_split", type=_int_in("--a_split", 0, 1), default=0,
                   help="(new) multiply the graph in --a_fold row blocks (torch backend; bounds "
                        "accelerator memory on large graphs)")
    p.add_argument("--stopping_step", type=_int_in("--stopping_step", 0), default=0,
                   help="(new) stop after N tests without a better recall@first k (0: off)")
    p.add_argument("--device", type=_device_spec, default="auto",
                   help="(new) auto, cpu, cuda[:i] or npu[:i] (auto: NPU, else CUDA, else CPU)")
    p.add_argument("--amp", type=str, default="auto", choices=["auto", "on", "off"],
                   help="(new) mixed precision: auto = on for NPU and CUDA, off for CPU")
    p.add_argument("--optimizer", type=str, default="adam", choices=["adam", "sgd"],
                   help="(new) adam (the original's) or sgd")
    p.add_argument("--lr_milestones", type=parse_milestones, default=[],
                   help="(new) epochs after which the learning rate is multiplied by --lr_gamma, "
                        "e.g. 300,500 (default: none, a constant rate as in the original)")
    p.add_argument("--lr_gamma", type=_float_in("--lr_gamma", 0.0, 1.0, low_open=True), default=0.1,
                   help="(new) factor applied to the learning rate at each of --lr_milestones")
    p.add_argument("--threads", type=_int_in("--threads", 0), default=0,
                   help="(new) CPU threads for torch and the kernels (0: torch's default)")
    return p


def parse_args(argv=None):
    """Parse argv (sys.argv[1:] when None) into the run's configuration."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.path = os.path.abspath(args.path)
    args.data_path = os.path.abspath(args.data_path)
    return args
