"""Checkpoints: written atomically (temp file, fsync, rename), read defensively.

A checkpoint is a dict: 'state_dict' (keys embedding_user.weight,
embedding_item.weight, as in the original), 'optimizer', 'epoch' (completed epochs),
'config' (what must match to resume), 'best' and 'rng' (the random states). A plain
state_dict, as the original code saved, is read too (weights only)."""
import io
import os
import pickle
import random
import zipfile

import numpy as np
import torch

import utils

FORMAT = "lightgcn-checkpoint-v1"
# Configuration that must be equal to resume from (or rank with) a checkpoint.
MATCH_KEYS = ("dataset", "model", "layer", "recdim")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the file itself is left untouched."""


def save(path, state):
    """Write atomically; on failure (disk full, ...) the previous file is kept and
    CheckpointError says so."""
    state = dict(state, format=FORMAT)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        utils.atomic_write(path, lambda handle: torch.save(state, handle))
    except OSError as exc:
        kept = "the previous checkpoint is kept" if os.path.exists(path) else "nothing was written"
        raise CheckpointError(f"cannot write {path} ({exc.strerror or exc}); {kept}") from None


def load(path):
    """The checkpoint dict; CheckpointError names the file and what is wrong."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:  # the caller decides: a fresh start or an error
        raise
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            AttributeError, ModuleNotFoundError, ImportError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint, corrupt or truncated "
                              f"({type(exc).__name__}); the file was left as it is") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        state = obj
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = {"state_dict": obj, "epoch": 0, "config": {}}  # the original's weights-only file
    else:
        raise CheckpointError(f"{path}: not a LightGCN checkpoint (unknown content); the file was left as it is")
    weights = state.get("state_dict")
    if not isinstance(weights, dict) or not {"embedding_user.weight", "embedding_item.weight"} <= set(weights):
        raise CheckpointError(f"{path}: holds no embedding_user.weight / embedding_item.weight; "
                              f"the file was left as it is")
    return state


def check_compatible(path, state, config, n_users, n_items):
    """Raise CheckpointError when the checkpoint was made for another run shape."""
    saved = state.get("config") or {}
    for key in MATCH_KEYS:
        if key in saved and saved[key] != getattr(config, key):
            raise CheckpointError(f"{path}: made with --{key} {saved[key]}, this run has --{key} "
                                  f"{getattr(config, key)}; use matching flags or another --path")
    users = state["state_dict"]["embedding_user.weight"]
    items = state["state_dict"]["embedding_item.weight"]
    if tuple(users.shape) != (n_users, config.recdim) or tuple(items.shape) != (n_items, config.recdim):
        raise CheckpointError(
            f"{path}: embeddings of shape {tuple(users.shape)} / {tuple(items.shape)} do not fit "
            f"this dataset and --recdim ({n_users}, {config.recdim}) / ({n_items}, {config.recdim})")


def rng_state():
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state):
    if not state:
        return
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
