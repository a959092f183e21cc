"""Helpers shared by training, testing and the command-line tools: seeding, the BPR
samplers, the metrics, atomic files, downloads and a terminal progress bar."""
import os
import random
import sys
import time
import urllib.request

import numpy as np
import torch

import world

MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------- seeding
def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# ------------------------------------------------------------------------- sampling
def _splitmix64_int(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def _splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def counter_hash(key, index, stream):
    """64-bit hash of (key, sample index, stream); the same function as sampling.cpp."""
    with np.errstate(over="ignore"):
        index = np.asarray(index, dtype=np.uint64)
        inner = _splitmix64(index * np.uint64(0x100000001B3) + np.uint64(stream))
        return _splitmix64(np.uint64(key) ^ inner)


def epoch_key(seed, epoch, stream=0):
    """The sampler key of one epoch: every epoch (and rank) draws from its own stream."""
    return _splitmix64_int((_splitmix64_int(seed) + epoch * 0x2545F4914F6CDD1D + stream) & MASK64)


class NumpySampler:
    """Vectorized BPR sampler; draws exactly what the C++ sampler draws."""

    name = "numpy"

    def __init__(self, user_item_csr):
        self.indptr = np.ascontiguousarray(user_item_csr.indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(user_item_csr.indices, dtype=np.int64)
        self.n_users, self.n_items = user_item_csr.shape
        deg = np.diff(self.indptr)
        self.sample_users = np.flatnonzero(deg > 0).astype(np.int64)
        full = np.flatnonzero(deg >= self.n_items)
        if full.size:
            raise ValueError(f"user {int(full[0])} has every item as a positive: "
                             f"no negative can be drawn")
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), deg)
        self.pair_keys = rows * self.n_items + self.indices  # sorted: CSR rows are sorted

    def sample(self, key, n_samples):
        """(n_samples, 3) int64 array of (user, positive item, negative item)."""
        if self.sample_users.size == 0:
            raise ValueError("no user has a training item: nothing to sample")
        idx = np.arange(n_samples, dtype=np.uint64)
        users = self.sample_users[counter_hash(key, idx, 0) % np.uint64(self.sample_users.size)]
        deg = (self.indptr[users + 1] - self.indptr[users]).astype(np.uint64)
        pos = self.indices[self.indptr[users] + (counter_hash(key, idx, 1) % deg).astype(np.int64)]
        neg = (counter_hash(key, idx, 2) % np.uint64(self.n_items)).astype(np.int64)
        pending = np.arange(n_samples)
        attempt = 3
        while True:
            probe = users[pending] * self.n_items + neg[pending]
            at = np.searchsorted(self.pair_keys, probe)
            at[at == self.pair_keys.size] = 0
            pending = pending[self.pair_keys[at] == probe]
            if pending.size == 0:
                break
            neg[pending] = (counter_hash(key, pending.astype(np.uint64), attempt)
                            % np.uint64(self.n_items)).astype(np.int64)
            attempt += 1
        return np.stack([users, pos, neg], axis=1)


class CppSampler(NumpySampler):
    """The C++ extension (sources/sampling.cpp); same draws as NumpySampler, faster."""

    name = "C++"

    def __init__(self, user_item_csr, module):
        super().__init__(user_item_csr)
        self.module = module

    def sample(self, key, n_samples):
        return self.module.sample_epoch(key, n_samples, self.sample_users, self.indptr,
                                        self.indices, self.n_items)


def load_extension(name, sources_dir=world.SOURCES_PATH):
    """Build (if needed) and import sources/<name>.cpp with cppimport.

    Returns (module, None) or (None, reason) when it cannot be built or imported."""
    path = os.path.join(sources_dir, f"{name}.cpp")
    if os.environ.get("LIGHTGCN_NO_EXT"):
        return None, "LIGHTGCN_NO_EXT is set"
    try:
        import cppimport
    except ImportError as exc:
        return None, f"cppimport is not installed ({exc})"
    try:
        return cppimport.imp_from_filepath(path, name), None
    except (Exception, SystemExit) as exc:  # compiler missing or failing (setuptools exits): report it
        first = str(exc).strip().splitlines()
        return None, f"{type(exc).__name__}: {first[-1] if first else 'build failed'}"


def make_sampler(user_item_csr, prefer_cpp=True, sources_dir=world.SOURCES_PATH):
    """(sampler, message) where message says which sampler runs and why."""
    if prefer_cpp:
        module, why = load_extension("sampling", sources_dir)
        if module is not None:
            return CppSampler(user_item_csr, module), "sampler: C++ extension (sources/sampling.cpp)"
        return NumpySampler(user_item_csr), f"sampler: numpy (the C++ extension is unavailable: {why})"
    return NumpySampler(user_item_csr), "sampler: numpy"


# -------------------------------------------------------------------------- metrics
def RecallPrecision_ATk(test_sizes, hits, k):
    """Sums over the batch of recall (hits / |test items|) and precision (hits / k)."""
    right_pred = hits[:, :k].sum(1)
    recall = np.sum(right_pred / test_sizes)
    precis = np.sum(right_pred) / k
    return {"recall": recall, "precision": precis}


def NDCGatK_r(test_sizes, hits, k):
    """Sum over the batch of NDCG@k with binary relevance; the ideal DCG ranks
    min(k, |test items|) relevant items first."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * discount).sum(1)
    ideal_len = np.minimum(test_sizes, k).astype(np.int64)
    idcg = np.concatenate([[0.0], np.cumsum(discount)])[ideal_len]
    idcg[idcg == 0.0] = 1.0
    ndcg = dcg / idcg
    ndcg[np.isnan(ndcg)] = 0.0
    return np.sum(ndcg)


# ---------------------------------------------------------------------------- files
def atomic_write(path, writer):
    """Write via writer(file) to a temporary file beside `path`, fsync, then rename over
    it: `path` holds either its old or its complete new content, never a partial one."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def fetch_url(url, dest, label="", progress=True, timeout=30):
    """Download url into dest (a file the caller renames when it is complete)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        bar = Progress(total or None, desc=f"download {label}", unit="B", enabled=progress)
        while True:
            chunk = response.read(1 << 16)
            if not chunk:
                break
            out.write(chunk)
            bar.update(len(chunk))
        bar.close()


def getFileName(config):
    """The checkpoint file of a run: <path>/lgn-<dataset>-<layers>-<dim>.pth.tar
    (mf: mf-<dataset>-<dim>.pth.tar)."""
    if config.model == "mf":
        name = f"mf-{config.dataset}-{config.recdim}.pth.tar"
    else:
        name = f"lgn-{config.dataset}-{config.layer}-{config.recdim}.pth.tar"
    return os.path.join(config.path, name)


# ------------------------------------------------------------------------- progress
class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total=None, desc="", unit="it", enabled=True):
        self.total, self.desc, self.unit = total, desc, unit
        self.count = 0
        self.enabled = enabled and sys.stderr.isatty()
        self.start = self.last = time.time()

    def update(self, n=1):
        self.count += n
        now = time.time()
        if self.enabled and (now - self.last > 0.2 or self.count == self.total):
            self.last = now
            if self.total:
                width = 30
                done = int(width * self.count / self.total)
                bar = "#" * done + "-" * (width - done)
                text = f"\r{self.desc} [{bar}] {self.count}/{self.total} {self.unit}"
            else:
                text = f"\r{self.desc} {self.count} {self.unit}"
            sys.stderr.write(f"{text} {now - self.start:.1f}s")
            sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


class Timer:
    """Named wall-clock totals, printed like the original: |Sample:0.08|."""

    def __init__(self):
        self.totals = {}

    def time(self, name):
        timer = self

        class _Section:
            def __enter__(self):
                self.start = time.time()

            def __exit__(self, *exc):
                timer.totals[name] = timer.totals.get(name, 0.0) + time.time() - self.start

        return _Section()

    def dict(self):
        return "|" + "|".join(f"{k}:{v:.2f}" for k, v in self.totals.items()) + "|"


def minibatch(*tensors, batch_size):
    n = len(tensors[0])
    for i in range(0, n, batch_size):
        if len(tensors) == 1:
            yield tensors[0][i:i + batch_size]
        else:
            yield tuple(x[i:i + batch_size] for x in tensors)
