"""Datasets: reading, validation, download, and the normalized user-item graph.

Two on-disk formats:
- gowalla / yelp2018 / amazon-book (and a user's own dataset): train.txt and test.txt,
  one line per user, "user item item ...", ids from 0.
- lastfm: data1.txt / test1.txt, tab-separated "user item weight" lines with ids from 1,
  and trustnetwork.txt (the user-user social graph, read but not used by LightGCN).

Every problem with a file raises DataError naming the file and line; main turns it
into a one-line message and a non-zero exit.
"""
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile

import numpy as np
import scipy.sparse as sp

import utils


class DataError(Exception):
    """A dataset that cannot be used as it is; the message says where and what to do."""


# Where missing datasets come from, and the statistics a download must show
# (users, items, interactions over train and test together; lastfm: lines).
DOWNLOAD_SOURCES = {
    "gowalla": "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data/gowalla/",
    "yelp2018": "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data/yelp2018/",
    "amazon-book": "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data/amazon-book/",
    "lastfm": "https://raw.githubusercontent.com/gusye1234/LightGCN-PyTorch/master/data/lastfm/",
}
PUBLISHED_STATS = {
    "gowalla": (29858, 40981, 1027370),
    "yelp2018": (31668, 38048, 1561406),
    "amazon-book": (52643, 91599, 2984108),
    "lastfm": (1892, 4489, 52668),
}
GOWALLA_FORMAT_FILES = ["train.txt", "test.txt"]
LASTFM_FILES = ["data1.txt", "test1.txt", "trustnetwork.txt"]
# Optional files mapping remapped ids back to the dataset's own (gowalla format).
ID_LIST_FILES = ["user_list.txt", "item_list.txt"]
# A dataset whose largest id is far above its count of distinct ids would make the
# dense embedding tables explode; such ids must be remapped by the user first.
MAX_ID_SLACK = 1_000_000
ID_LIMIT = 2**62
MIRROR_ENV = "LIGHTGCN_MIRROR"
GRAPH_CACHE = "s_pre_adj_mat.npz"
GRAPH_FORMAT = "lightgcn-norm-adj-v1"


def required_files(dataset):
    return LASTFM_FILES if dataset == "lastfm" else GOWALLA_FORMAT_FILES


# ----------------------------------------------------------------------------- reading
def _parse_int(token, path, lineno):
    try:
        value = int(token)
    except ValueError:
        raise DataError(f"{path}:{lineno}: {token!r} is not an integer id") from None
    return value


def _split_lines(path):
    """Yield (line number, whitespace-split fields) of each non-blank line of a text file;
    a missing, unreadable or binary file becomes a DataError naming it."""
    try:
        handle = open(path, "r", encoding="utf-8", errors="strict")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None
    with handle:
        try:
            for lineno, line in enumerate(handle, start=1):
                parts = line.split()
                if parts:
                    yield lineno, parts
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from None


def read_user_lines(path):
    """Read a 'user item item ...' file into (users, items, line numbers) arrays.

    Blank lines are skipped; a user with no items is allowed; CRLF line ends,
    tabs and trailing spaces are fine."""
    users, items, lines = [], [], []
    for lineno, parts in _split_lines(path):
        try:
            ids = [int(t) for t in parts]
        except ValueError:
            ids = [_parse_int(t, path, lineno) for t in parts]
        if max(ids) >= ID_LIMIT:
            raise DataError(f"{path}:{lineno}: id {max(ids)} is too large (ids must be below 2^62)")
        if ids[0] < 0:
            raise DataError(f"{path}:{lineno}: negative user id {ids[0]}")
        users.append(np.full(len(ids) - 1, ids[0], dtype=np.int64))
        items.append(np.asarray(ids[1:], dtype=np.int64))
        lines.append(np.full(len(ids) - 1, lineno, dtype=np.int64))
    if not users:
        raise DataError(f"{path}: the file is empty (expected lines 'user item item ...')")
    return np.concatenate(users), np.concatenate(items), np.concatenate(lines)


def read_pair_lines(path, one_based=True):
    """Read tab/space separated 'user item [weight]' lines (lastfm) into id arrays."""
    users, items, lines = [], [], []
    offset = 1 if one_based else 0
    for lineno, parts in _split_lines(path):
        if len(parts) < 2:
            raise DataError(f"{path}:{lineno}: expected 'user item [weight]', got {' '.join(parts)!r}")
        u = _parse_int(parts[0], path, lineno) - offset
        i = _parse_int(parts[1], path, lineno) - offset
        if max(u, i) >= ID_LIMIT:
            raise DataError(f"{path}:{lineno}: id {max(u, i) + offset} is too large (ids must be below 2^62)")
        users.append(u)
        items.append(i)
        lines.append(lineno)
    if not users:
        raise DataError(f"{path}: the file is empty (expected lines 'user item weight')")
    return (np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64),
            np.asarray(lines, dtype=np.int64))


def _check_ids(path, users, items, lines, offset):
    """Ids (already shifted down by `offset`, the file's first id) must be >= 0."""
    for name, ids in (("user", users), ("item", items)):
        if ids.size and ids.min() < 0:
            at = int(np.argmin(ids))
            raise DataError(f"{path}:{lines[at]}: {name} id {int(ids[at]) + offset} is below the "
                            f"smallest allowed id {offset}")


def _check_id_range(name, ids_train, ids_test, path):
    ids = np.concatenate([ids_train, ids_test])
    if ids.size == 0:
        return 0
    largest = int(ids.max())
    distinct = int(np.unique(ids).size)
    if largest >= 2**31 - 1 or largest + 1 > 10 * distinct + MAX_ID_SLACK:
        raise DataError(
            f"{path}: {name} ids go up to {largest} but only {distinct} distinct {name}s occur: "
            f"dense tables would need {largest + 1} rows. Remap the {name} ids to 0..{distinct - 1} "
            f"(refused, not remapped, so that ids keep their meaning)")
    return largest + 1


def _to_csr(users, items, n_users, n_items):
    """Deduplicated binary CSR with sorted rows; also returns how many duplicates went."""
    keys = np.unique(users * n_items + items)
    n_dup = users.size - keys.size
    rows, cols = keys // n_items, keys % n_items
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    mat = sp.csr_matrix((np.ones(keys.size, dtype=np.float32), cols.astype(np.int64), indptr),
                        shape=(n_users, n_items))
    return mat, n_dup


class BasicDataset:
    """Training and test interactions of one dataset.

    Attributes (names of the original code): n_users, m_items, trainDataSize,
    testDataSize, UserItemNet (binary CSR users x items, rows sorted), testDict
    (user -> list of test items), allPos (per user, the sorted training items)."""

    def __init__(self, name, path, train, test, log=print):
        self.name = name
        self.path = path
        (tr_u, tr_i, tr_path), (te_u, te_i, te_path) = train, test
        self.n_users = max(_check_id_range("user", tr_u, te_u, tr_path), 1)
        self.m_items = max(_check_id_range("item", tr_i, te_i, tr_path), 1)
        self.UserItemNet, dup_train = _to_csr(tr_u, tr_i, self.n_users, self.m_items)
        self.test_csr, dup_test = _to_csr(te_u, te_i, self.n_users, self.m_items)
        self.trainDataSize = int(self.UserItemNet.nnz)
        self.testDataSize = int(self.test_csr.nnz)
        if self.trainDataSize == 0:
            raise DataError(f"{tr_path}: no training interaction (every line lists a user only)")
        if self.testDataSize == 0:
            raise DataError(f"{te_path}: no test interaction (every line lists a user only)")
        train_deg = np.diff(self.UserItemNet.indptr)
        test_deg = np.diff(self.test_csr.indptr)
        self.trainUsers = np.flatnonzero(train_deg > 0)
        self.testUsers = np.flatnonzero(test_deg > 0)
        self.testDict = {int(u): self.test_csr.indices[self.test_csr.indptr[u]:self.test_csr.indptr[u + 1]].tolist()
                         for u in self.testUsers}
        self.notes = []
        if dup_train or dup_test:
            self.notes.append(f"removed duplicate interactions: {dup_train} in training, {dup_test} in test")
        cold_users = int(np.sum((train_deg == 0) & (test_deg > 0)))
        if cold_users:
            self.notes.append(f"{cold_users} test users have no training item (scored from their initial embeddings)")
        train_items = np.zeros(self.m_items, dtype=bool)
        train_items[self.UserItemNet.indices] = True
        cold_items = int(np.sum(~train_items[np.unique(self.test_csr.indices)]))
        if cold_items:
            self.notes.append(f"{cold_items} test items never occur in training")
        no_train = int(np.sum(train_deg == 0))
        if no_train:
            self.notes.append(f"{no_train} users have no training item (never sampled)")
        full = np.flatnonzero(train_deg >= self.m_items)
        if full.size:
            raise DataError(f"{tr_path}: user {int(full[0])} has every item as a training positive: "
                            f"no negative item can be sampled for BPR")
        self._graph = None
        self._log = log

    # -- the original code's accessors
    @property
    def allPos(self):
        return [self.getUserPosItems([u])[0] for u in range(self.n_users)]

    def getUserPosItems(self, users):
        ptr, idx = self.UserItemNet.indptr, self.UserItemNet.indices
        return [idx[ptr[u]:ptr[u + 1]] for u in users]

    def fingerprint(self):
        """Identifies the training graph: the cache is valid only for the same one."""
        h = hashlib.sha256(GRAPH_FORMAT.encode())
        h.update(np.asarray([self.n_users, self.m_items], dtype=np.int64).tobytes())
        h.update(self.UserItemNet.indptr.astype(np.int64).tobytes())
        h.update(self.UserItemNet.indices.astype(np.int64).tobytes())
        return h.hexdigest()

    def getSparseGraph(self):
        """The normalized adjacency D^-1/2 A D^-1/2 as a scipy CSR (float32), cached in
        memory and as s_pre_adj_mat.npz beside the data."""
        if self._graph is None:
            cache = os.path.join(self.path, GRAPH_CACHE)
            fingerprint = self.fingerprint()
            graph, why = load_graph_cache(cache, fingerprint)
            if graph is None:
                if why:
                    self._log(f"graph cache {cache} {why}: rebuilding it")
                graph = normalized_adjacency(self.UserItemNet)
                try:
                    save_graph_cache(cache, graph, fingerprint)
                except OSError as exc:
                    self._log(f"warning: cannot write the graph cache in {self.path} "
                              f"({exc.strerror or exc}): the graph is kept in memory only")
            self._graph = graph
        return self._graph


def normalized_adjacency(user_item):
    """A_hat = D^-1/2 A D^-1/2 with A = [[0, R], [R^T, 0]] for the users x items matrix R.

    Rows of A_hat are sorted; isolated nodes get zero rows (degree 0 -> scale 0)."""
    R = sp.csr_matrix(user_item, dtype=np.float32)
    R.data[:] = 1.0
    n_users, n_items = R.shape
    adj = sp.bmat([[None, R], [R.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(adj.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        scale = np.power(deg, -0.5)
    scale[~np.isfinite(scale)] = 0.0
    rows = np.repeat(np.arange(adj.shape[0]), np.diff(adj.indptr))
    adj.data = (scale[rows] * adj.data * scale[adj.indices]).astype(np.float32)
    adj.sort_indices()
    return adj


def load_graph_cache(path, fingerprint):
    """(graph, None) from a valid cache; (None, reason) when absent/unreadable/stale."""
    if not os.path.exists(path):
        return None, None
    try:
        with np.load(path, allow_pickle=False) as z:
            if "fingerprint" not in z.files:
                return None, "was not written by this version"
            if str(z["fingerprint"]) != fingerprint:
                return None, "was built from other training data"
            shape = tuple(int(s) for s in z["shape"])
            graph = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
            graph.check_format(full_check=True)
            return graph, None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        return None, f"cannot be read ({type(exc).__name__}: {exc})"


def save_graph_cache(path, graph, fingerprint):
    def write(handle):
        np.savez(handle, data=graph.data, indices=graph.indices, indptr=graph.indptr,
                 shape=np.asarray(graph.shape, dtype=np.int64), fingerprint=np.asarray(fingerprint))

    utils.atomic_write(path, write)


# ------------------------------------------------------------------------- datasets
class Loader(BasicDataset):
    """gowalla / yelp2018 / amazon-book format: train.txt and test.txt in `path`."""

    def __init__(self, path, name=None, log=print):
        train_file = os.path.join(path, "train.txt")
        test_file = os.path.join(path, "test.txt")
        tr_u, tr_i, tr_l = read_user_lines(train_file)
        te_u, te_i, te_l = read_user_lines(test_file)
        _check_ids(train_file, tr_u, tr_i, tr_l, 0)
        _check_ids(test_file, te_u, te_i, te_l, 0)
        super().__init__(name or os.path.basename(path), path, (tr_u, tr_i, train_file),
                         (te_u, te_i, test_file), log=log)


class LastFM(BasicDataset):
    """lastfm: data1.txt / test1.txt ('user item weight', ids from 1) and trustnetwork.txt."""

    def __init__(self, path, name="lastfm", log=print):
        train_file = os.path.join(path, "data1.txt")
        test_file = os.path.join(path, "test1.txt")
        trust_file = os.path.join(path, "trustnetwork.txt")
        tr_u, tr_i, tr_l = read_pair_lines(train_file)
        te_u, te_i, te_l = read_pair_lines(test_file)
        _check_ids(train_file, tr_u, tr_i, tr_l, 1)
        _check_ids(test_file, te_u, te_i, te_l, 1)
        super().__init__(name, path, (tr_u, tr_i, train_file), (te_u, te_i, test_file), log=log)
        if os.path.exists(trust_file):
            a, b, lines = read_pair_lines(trust_file)
            _check_ids(trust_file, a, b, lines, 1)
            if a.size and max(a.max(), b.max()) >= self.n_users:
                raise DataError(f"{trust_file}: user id {int(max(a.max(), b.max())) + 1} exceeds "
                                f"the {self.n_users} users of data1.txt/test1.txt")
            self.trustNet = np.stack([a, b], axis=1)
        else:
            self.trustNet = np.zeros((0, 2), dtype=np.int64)


# ------------------------------------------------------------------------- download
def _count_stats(dataset, folder):
    if dataset == "lastfm":
        n_lines, users, items = 0, 0, 0
        for name in ("data1.txt", "test1.txt"):
            u, i, _ = read_pair_lines(os.path.join(folder, name))
            n_lines += u.size
            users, items = max(users, int(u.max()) + 1), max(items, int(i.max()) + 1)
        return users, items, n_lines
    users, items, total = 0, 0, 0
    for name in GOWALLA_FORMAT_FILES:
        u, i, _ = read_user_lines(os.path.join(folder, name))
        total += i.size
        users = max(users, int(u.max()) + 1)
        if i.size:
            items = max(items, int(i.max()) + 1)
    return users, items, total


def download_dataset(dataset, folder, base_url=None, expected=None, progress=True):
    """Fetch a known dataset into `folder`: each file goes to a temporary file first and
    all are renamed into place only after every file arrived and the statistics match
    the published ones (users, items, interactions)."""
    if base_url is None:
        mirror = os.environ.get(MIRROR_ENV)
        base_url = (mirror.rstrip("/") + f"/{dataset}/") if mirror else DOWNLOAD_SOURCES[dataset]
    expected = expected or PUBLISHED_STATS.get(dataset)
    os.makedirs(folder, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".download-", dir=folder)
    try:
        for name in required_files(dataset):
            url = base_url + name
            try:
                utils.fetch_url(url, os.path.join(staging, name), label=f"{dataset}/{name}",
                                progress=progress)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DataError(
                    f"dataset {dataset} is missing and could not be downloaded from {url} ({reason}): "
                    f"put {', '.join(required_files(dataset))} into {folder}") from None
        stats = _count_stats(dataset, staging)
        if expected is not None and tuple(stats) != tuple(expected):
            raise DataError(
                f"downloaded {dataset} does not match its published statistics: users, items, "
                f"interactions = {stats}, expected {tuple(expected)}; nothing was kept")
        for name in required_files(dataset):
            os.replace(os.path.join(staging, name), os.path.join(folder, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_dataset(dataset, data_path, log=print, progress=True):
    """The dataset's folder, downloading a known dataset that is missing."""
    folder = os.path.join(data_path, dataset)
    missing = [f for f in required_files(dataset) if not os.path.isfile(os.path.join(folder, f))]
    if dataset == "lastfm" and missing == ["trustnetwork.txt"]:
        missing = []  # the social graph is not used by LightGCN
    if not missing:
        return folder
    if dataset not in DOWNLOAD_SOURCES:
        if not os.path.isdir(folder):
            raise DataError(f"unknown dataset {dataset!r}: no folder {folder} (choose one of "
                            f"{', '.join(DOWNLOAD_SOURCES)}, or put train.txt and test.txt in that folder)")
        raise DataError(f"{folder}: missing {', '.join(missing)} (a dataset folder holds train.txt "
                        f"and test.txt, lines 'user item item ...')")
    log(f"dataset {dataset} not found in {folder}: downloading it")
    download_dataset(dataset, folder, progress=progress)
    return folder


def load_dataset(dataset, data_path, log=print, progress=True):
    folder = ensure_dataset(dataset, data_path, log=log, progress=progress)
    if dataset == "lastfm":
        return LastFM(folder, log=log)
    return Loader(folder, name=dataset, log=log)
