import os
import stat

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import dataloader
import propagation
import utils
from conftest import write_gowalla_format

KERNELS, WHY = utils.load_extension("spmm")


def tiny_user_item():
    # 3 users x 4 items; item 3 has no interaction, user 2 one item
    dense = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0]], dtype=np.float32)
    return sp.csr_matrix(dense), dense


def dense_norm_adj(dense_r):
    n, m = dense_r.shape
    a = np.zeros((n + m, n + m))
    a[:n, n:] = dense_r
    a[n:, :n] = dense_r.T
    deg = a.sum(1)
    with np.errstate(divide="ignore"):
        s = np.where(deg > 0, deg ** -0.5, 0.0)
    return s[:, None] * a * s[None, :]


def test_normalized_adjacency_equals_dense():
    r, dense = tiny_user_item()
    got = dataloader.normalized_adjacency(r).toarray()
    np.testing.assert_allclose(got, dense_norm_adj(dense), rtol=1e-6)
    assert got[6].sum() == 0  # isolated item: zero row, no inf/nan


def random_graph(seed=0, n_users=40, n_items=60, p=0.1):
    rng = np.random.default_rng(seed)
    r = sp.csr_matrix((rng.random((n_users, n_items)) < p).astype(np.float32))
    return dataloader.normalized_adjacency(r)


def backends():
    yield "torch", None
    if KERNELS is not None:
        yield "cpp", KERNELS


@pytest.mark.parametrize("name,kernels", list(backends()))
@pytest.mark.parametrize("dim", [64, 12])
def test_propagation_equals_dense_formula(name, kernels, dim):
    a = random_graph()
    graph = propagation.SparseGraph(a, "cpu", kernels, n_threads=2)
    e0 = torch.randn(a.shape[0], dim, dtype=torch.float32)
    ad = torch.from_numpy(a.toarray()).double()
    layers, x = [e0.double()], e0.double()
    for _ in range(3):
        x = ad @ x
        layers.append(x)
    expected = torch.stack(layers).mean(0)
    got = propagation.propagate(graph, e0, 3)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,kernels", list(backends()))
@pytest.mark.parametrize("symmetric", [True, False])
def test_rows_propagation_and_gradient_match_autograd(name, kernels, symmetric):
    a = random_graph(1)
    graph = propagation.SparseGraph(a, "cpu", kernels, n_threads=2)
    if not symmetric:
        graph = graph.dropped(0.6, generator=torch.Generator().manual_seed(0))
        a = graph.to_scipy()
    n_users = 40
    uw = torch.randn(n_users, 16, requires_grad=True)
    iw = torch.randn(a.shape[0] - n_users, 16, requires_grad=True)
    rows = torch.tensor([0, 5, 5, 41, 99, 3, 41], dtype=torch.int64)  # duplicates on purpose
    final, emb0 = propagation.propagate_rows(graph, uw, iw, 3, rows)
    weights = torch.randn_like(final)
    ((final * weights).sum() + (emb0 ** 2).sum()).backward()
    got_u, got_i = uw.grad.clone(), iw.grad.clone()

    uw2, iw2 = uw.detach().clone().requires_grad_(), iw.detach().clone().requires_grad_()
    ad = torch.from_numpy(a.toarray()).float()
    x = torch.cat([uw2, iw2])
    layers = [x]
    for _ in range(3):
        layers.append(ad @ layers[-1])
    ref = torch.stack(layers).mean(0)
    torch.testing.assert_close(final, ref[rows].detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(emb0, x[rows].detach())
    ((ref[rows] * weights).sum() + (x[rows] ** 2).sum()).backward()
    torch.testing.assert_close(got_u, uw2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_i, iw2.grad, rtol=1e-5, atol=1e-5)


def test_dropout_keeps_expected_fraction_and_rescales():
    a = random_graph(2, 100, 100, 0.2)
    graph = propagation.SparseGraph(a, "cpu", KERNELS)
    dropped = graph.dropped(0.6, generator=torch.Generator().manual_seed(1)).to_scipy()
    assert abs(dropped.nnz / a.nnz - 0.6) < 0.05
    kept = dropped.multiply(a > 0)
    ratio = kept.data / np.asarray(a[dropped.nonzero()]).ravel()
    np.testing.assert_allclose(ratio, 1 / 0.6, rtol=1e-5)


def test_a_split_folds_give_the_same_product():
    a = random_graph(3)
    x = torch.randn(a.shape[0], 8)
    whole = propagation.SparseGraph(a, "cpu", None).mm(x)
    folded = propagation.SparseGraph(a, "cpu", None, n_folds=7).mm(x)
    torch.testing.assert_close(whole, folded)


@pytest.fixture
def small_dataset(tmp_path):
    folder = write_gowalla_format(str(tmp_path / "ds"), {0: [0, 1], 1: [1, 2], 2: [0]}, {0: [2], 1: [0], 2: [1]})
    return folder


def test_graph_cache_written_reused_and_invalidated(small_dataset):
    logs = []
    ds = dataloader.Loader(small_dataset, log=logs.append)
    g1 = ds.getSparseGraph()
    cache = os.path.join(small_dataset, dataloader.GRAPH_CACHE)
    assert os.path.exists(cache) and logs == []
    # reused: a new loader reads the cache without rebuilding (no log line)
    ds2 = dataloader.Loader(small_dataset, log=logs.append)
    assert (ds2.getSparseGraph() != g1).nnz == 0 and logs == []
    # other training data: the stale cache is rebuilt, with a line in the log
    write_gowalla_format(small_dataset, {0: [0, 1], 1: [1, 2], 2: [0, 2]}, {0: [2], 1: [0], 2: [1]})
    ds3 = dataloader.Loader(small_dataset, log=logs.append)
    g3 = ds3.getSparseGraph()
    assert any("other training data" in line for line in logs)
    np.testing.assert_allclose(g3.toarray(), dataloader.normalized_adjacency(ds3.UserItemNet).toarray())


@pytest.mark.parametrize("content", [b"", b"garbage", None])
def test_corrupt_or_truncated_graph_cache_is_rebuilt(small_dataset, content):
    ds = dataloader.Loader(small_dataset)
    good = ds.getSparseGraph()
    cache = os.path.join(small_dataset, dataloader.GRAPH_CACHE)
    raw = open(cache, "rb").read()
    with open(cache, "wb") as handle:
        handle.write(raw[: len(raw) // 2] if content is None else content)
    logs = []
    again = dataloader.Loader(small_dataset, log=logs.append).getSparseGraph()
    assert any("cannot be read" in line and "rebuilding" in line for line in logs), logs
    assert (again != good).nnz == 0
    np.load(cache)  # rewritten whole


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: simulate with a read-only path instead")
def test_unwritable_dataset_folder_keeps_graph_in_memory(small_dataset):
    os.chmod(small_dataset, stat.S_IRUSR | stat.S_IXUSR)
    try:
        logs = []
        g = dataloader.Loader(small_dataset, log=logs.append).getSparseGraph()
        assert g.shape == (6, 6) and any("kept in memory" in line for line in logs)
    finally:
        os.chmod(small_dataset, stat.S_IRWXU)


def test_cache_write_failure_keeps_graph_in_memory(small_dataset, monkeypatch):
    def refuse(path, writer):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(utils, "atomic_write", refuse)
    logs = []
    g = dataloader.Loader(small_dataset, log=logs.append).getSparseGraph()
    assert g.shape == (6, 6)
    assert any("kept in memory" in line for line in logs)
    assert not os.path.exists(os.path.join(small_dataset, dataloader.GRAPH_CACHE))
