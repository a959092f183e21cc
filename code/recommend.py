"""Top-K recommendations from a trained checkpoint.

    cd code && python3 recommend.py --dataset gowalla --data_path DIR
        [--checkpoint FILE] [--users 0,5,17 | --users_file FILE | --all] [--topk 20]
        [--output FILE.csv|FILE.parquet] [--original_ids]

Rows are (user, rank, item, score), each user's training items excluded; scores are the
inner products of the final embeddings (the model is propagated once)."""
import csv
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch

import checkpoint
import dataloader
import devices
import parse
import propagation
import ranking
import register
import utils
import world


class UsageError(Exception):
    pass


def build_parser():
    p = parse._Parser(prog="recommend.py", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=parse._dataset_name, default="gowalla")
    p.add_argument("--data_path", default=world.DATA_PATH)
    p.add_argument("--checkpoint", default="", help="checkpoint file (default: the best, else the "
                   "latest, of --model/--dataset/--layer/--recdim under --path)")
    p.add_argument("--path", default=world.FILE_PATH, help="where main.py saved checkpoints")
    p.add_argument("--model", default="lgn", choices=world.ALL_MODELS)
    p.add_argument("--layer", type=parse._int_in("--layer", 0, 32), default=4)
    p.add_argument("--recdim", type=parse._int_in("--recdim", 1, 4096), default=64)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="comma-separated user ids, e.g. 0,5,17")
    who.add_argument("--users_file", help="a file of user ids, whitespace or comma separated")
    who.add_argument("--all", action="store_true", help="every user")
    p.add_argument("--topk", type=parse._int_in("--topk", 1), default=20)
    p.add_argument("--output", default="", help="FILE.csv or FILE.parquet (default: a table on stdout)")
    p.add_argument("--original_ids", action="store_true",
                   help="report the dataset's own ids (user_list.txt / item_list.txt)")
    p.add_argument("--batch", type=parse._int_in("--batch", 1), default=1024, help="users scored at once")
    p.add_argument("--device", type=parse._device_spec, default="auto")
    return p


def parse_user_ids(text, source):
    ids = []
    for token in text.replace(",", " ").split():
        try:
            ids.append(int(token))
        except ValueError:
            raise UsageError(f"{source}: {token!r} is not a user id") from None
    if not ids:
        raise UsageError(f"{source}: no user id given")
    return np.asarray(ids, dtype=np.int64)


def read_id_map(path):
    """remap_id -> org_id from a 'org_id remap_id' file with a header line."""
    try:
        with open(path) as handle:
            rows = [line.split() for line in handle.read().splitlines()[1:] if line.strip()]
        org = np.array([r[0] for r in rows], dtype=object)
        remap = np.array([int(r[1]) for r in rows], dtype=np.int64)
    except FileNotFoundError:
        raise UsageError(f"--original_ids: {path} not found (the dataset ships no id map)") from None
    except (ValueError, IndexError):
        raise UsageError(f"--original_ids: {path} is not an 'org_id remap_id' list") from None
    table = np.empty(remap.max() + 1 if remap.size else 0, dtype=object)
    table[remap] = org
    return table


def default_checkpoint(args):
    name = (f"mf-{args.dataset}-{args.recdim}" if args.model == "mf"
            else f"lgn-{args.dataset}-{args.layer}-{args.recdim}")
    for candidate in (f"{name}-best.pth.tar", f"{name}.pth.tar"):
        path = os.path.join(args.path, candidate)
        if os.path.exists(path):
            return path
    raise UsageError(f"no checkpoint {name}-best.pth.tar or {name}.pth.tar in {args.path}: train with "
                     f"main.py first, or name one with --checkpoint")


def load_model(args, dataset, device):
    path = args.checkpoint or default_checkpoint(args)
    try:
        state = checkpoint.load(path)
    except FileNotFoundError:
        raise UsageError(f"--checkpoint {path}: file not found") from None
    saved = state.get("config") or {}
    if saved.get("dataset", args.dataset) != args.dataset:
        raise checkpoint.CheckpointError(f"{path} was trained on {saved['dataset']}, not on {args.dataset}")
    config = SimpleNamespace(model=args.model, layer=args.layer, recdim=args.recdim, dataset=args.dataset,
                             keepprob=1.0, dropout=0)
    for key in ("model", "layer", "recdim"):  # the checkpoint's own configuration wins
        if key in saved and saved[key] != getattr(config, key):
            print(f"note: {path} was trained with --{key} {saved[key]} (flags said {getattr(config, key)}): "
                  f"using {saved[key]}", file=sys.stderr)
            setattr(config, key, saved[key])
    weights = state["state_dict"]
    if "embedding_user.weight" in weights:
        config.recdim = int(weights["embedding_user.weight"].shape[1])
    checkpoint.check_compatible(path, state, config, dataset.n_users, dataset.m_items)
    graph = None
    if config.model == "lgn":
        graph = propagation.build_graph(dataset.getSparseGraph(), device, log=lambda m: print(m, file=sys.stderr))
    model = register.build_model(config, dataset, graph).to(device)
    model.load_state_dict(weights)
    return model, path


def recommend(args):
    device = devices.select_device(args.device)
    dataset = register.load_dataset(args.dataset, args.data_path, log=lambda m: print(m, file=sys.stderr),
                                    progress=sys.stderr.isatty())
    if args.all:
        users = np.arange(dataset.n_users, dtype=np.int64)
    elif args.users is not None:
        users = parse_user_ids(args.users, "--users")
    else:
        try:
            with open(args.users_file) as handle:
                users = parse_user_ids(handle.read(), args.users_file)
        except OSError as exc:
            raise UsageError(f"--users_file {args.users_file}: {exc.strerror}") from None
    unknown = users[(users < 0) | (users >= dataset.n_users)]
    if unknown.size:
        shown = ", ".join(str(u) for u in unknown[:5]) + (" ..." if unknown.size > 5 else "")
        raise UsageError(f"unknown users: {shown} ({args.dataset} has users "
                         f"0..{dataset.n_users - 1})")
    if args.output and not args.output.endswith((".csv", ".parquet")):
        raise UsageError(f"--output must end in .csv or .parquet, got {args.output!r}")
    user_map = item_map = None
    if args.original_ids:
        folder = os.path.join(args.data_path, args.dataset)
        user_map = read_id_map(os.path.join(folder, "user_list.txt"))
        item_map = read_id_map(os.path.join(folder, "item_list.txt"))

    model, path = load_model(args, dataset, device)
    print(f"recommending with {path}", file=sys.stderr)
    model.eval()
    with torch.no_grad():
        user_emb, item_emb = model.computer()
    bar = utils.Progress(users.size, desc="recommend", unit="users", enabled=sys.stderr.isatty())
    chunks = []
    for batch, items, scores in ranking.top_k(user_emb, item_emb, users, dataset.UserItemNet, args.topk, args.batch):
        keep = np.isfinite(scores)  # fewer than topk items the user has not trained on
        rank = np.broadcast_to(np.arange(1, items.shape[1] + 1), items.shape)
        chunks.append((np.repeat(batch, keep.sum(1)), rank[keep], items[keep], scores[keep]))
        bar.update(batch.size)
    bar.close()
    u, r, i, s = (np.concatenate(c) for c in zip(*chunks))
    if user_map is not None:
        u, i = user_map[u], item_map[i]
    write_rows(args.output, u, r, i, s)
    return 0


def write_rows(output, users, ranks, items, scores):
    header = ["user", "rank", "item", "score"]
    if output.endswith(".parquet"):
        import pandas as pd
        frame = pd.DataFrame({"user": users, "rank": ranks, "item": items, "score": scores})
        tmp = output + ".tmp"
        try:
            frame.to_parquet(tmp, index=False)
        except ImportError as exc:
            raise UsageError(f"--output {output}: writing parquet needs pyarrow ({exc})") from None
        os.replace(tmp, output)
        return
    if output:
        def write(handle):
            import io
            text = io.TextIOWrapper(handle, newline="", encoding="utf-8")
            w = csv.writer(text)
            w.writerow(header)
            w.writerows(zip(users.tolist(), ranks.tolist(), items.tolist(), np.round(scores.astype(np.float64), 6).tolist()))
            text.flush()
            text.detach()
        utils.atomic_write(output, write)
        print(f"wrote {len(users)} rows to {output}", file=sys.stderr)
        return
    print(f"{'user':>8} {'rank':>4} {'item':>8} {'score':>10}")
    for row in zip(users.tolist(), ranks.tolist(), items.tolist(), scores.tolist()):
        print(f"{row[0]:>8} {row[1]:>4} {row[2]:>8} {row[3]:>10.4f}")


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return recommend(args)
    except (UsageError, dataloader.DataError, checkpoint.CheckpointError, devices.DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
