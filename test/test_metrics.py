import numpy as np
import pytest
import scipy.sparse as sp
import torch

import Procedure
import ranking
import utils
from parse import parse_args


def test_recall_precision_hand_computed():
    # user 0: 3 test items, hits at ranks 1 and 3; user 1: 1 test item, hit at rank 2
    hits = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=float)
    sizes = np.array([3, 1])
    r = utils.RecallPrecision_ATk(sizes, hits, 2)
    assert r["recall"] == pytest.approx(1 / 3 + 1)
    assert r["precision"] == pytest.approx((1 + 1) / 2)
    r = utils.RecallPrecision_ATk(sizes, hits, 4)
    assert r["recall"] == pytest.approx(2 / 3 + 1)
    assert r["precision"] == pytest.approx(3 / 4)


def test_ndcg_hand_computed():
    hits = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=float)
    sizes = np.array([3, 1, 2])
    d = 1 / np.log2(np.arange(2, 6))
    # user 0: dcg = d0 + d2, idcg over min(4,3)=3 -> d0+d1+d2; user 1: d1 / d0; user 2: 0
    expected = (d[0] + d[2]) / (d[0] + d[1] + d[2]) + d[1] / d[0] + 0.0
    assert utils.NDCGatK_r(sizes, hits, 4) == pytest.approx(expected)
    # k smaller than the test set: ideal is k hits
    expected2 = 1.0 / (d[0] + d[1]) + d[1] / d[0]
    assert utils.NDCGatK_r(sizes, hits, 2) == pytest.approx(expected2)


class _FixedModel(torch.nn.Module):
    def __init__(self, users, items):
        super().__init__()
        self.u, self.i = users, items

    def computer(self):
        return self.u, self.i


class _Data:
    def __init__(self, train, test):
        self.UserItemNet, self.test_csr = train, test
        self.n_users, self.m_items = train.shape
        self.testUsers = np.flatnonzero(np.diff(test.indptr) > 0)


def test_full_test_matches_brute_force():
    rng = np.random.default_rng(1)
    n_users, n_items = 37, 50
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))
    test = sp.csr_matrix(((rng.random((n_users, n_items)) < 0.1) & (train.toarray() == 0)).astype(np.float32))
    ue, ie = torch.randn(n_users, 8), torch.randn(n_items, 8)
    config = parse_args(["--topks", "[3,10]", "--testbatch", "7"])
    got = Procedure.Test(_Data(train, test), _FixedModel(ue, ie), config, torch.device("cpu"), progress=False)
    scores = (ue @ ie.T).numpy()
    scores[train.toarray() > 0] = -np.inf
    users = np.flatnonzero(test.getnnz(axis=1))
    prec, rec, ndcg = np.zeros(2), np.zeros(2), np.zeros(2)
    for u in users:
        order = np.argsort(-scores[u], kind="stable")
        truth = set(test[u].indices)
        for j, k in enumerate([3, 10]):
            hit = [1.0 if i in truth else 0.0 for i in order[:k]]
            prec[j] += sum(hit) / k
            rec[j] += sum(hit) / len(truth)
            dcg = sum(h / np.log2(r + 2) for r, h in enumerate(hit))
            idcg = sum(1 / np.log2(r + 2) for r in range(min(k, len(truth))))
            ndcg[j] += dcg / idcg
    np.testing.assert_allclose(got["precision"], prec / len(users), rtol=1e-9)
    np.testing.assert_allclose(got["recall"], rec / len(users), rtol=1e-9)
    np.testing.assert_allclose(got["ndcg"], ndcg / len(users), rtol=1e-9)


def test_ranking_excludes_training_items_and_matches_dense():
    rng = np.random.default_rng(2)
    train = sp.csr_matrix((rng.random((20, 30)) < 0.3).astype(np.float32))
    ue, ie = torch.randn(20, 4), torch.randn(30, 4)
    dense = (ue @ ie.T).numpy()
    for batch, items, scores in ranking.top_k(ue, ie, np.arange(20), train, 5, batch_size=6):
        for row, u in enumerate(batch):
            assert not set(items[row]) & set(train[u].indices)
            allowed = dense[u].copy()
            allowed[train[u].indices] = -np.inf
            np.testing.assert_allclose(scores[row], np.sort(allowed)[::-1][:5], rtol=1e-6)
