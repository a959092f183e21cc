import os
import shutil

import numpy as np
import pytest
import scipy.sparse as sp

import utils
import world


def random_csr(seed=0, n_users=50, n_items=30, p=0.2):
    rng = np.random.default_rng(seed)
    m = (rng.random((n_users, n_items)) < p)
    m[3] = False  # a user with no training items (as lastfm has)
    m[7] = True
    m[7, 0] = False  # a user with all items but one
    return sp.csr_matrix(m.astype(np.float32))


def samplers(csr):
    yield utils.NumpySampler(csr)
    cpp, why = utils.make_sampler(csr)
    assert cpp.name == "C++", why
    yield cpp


@pytest.mark.parametrize("which", [0, 1])
def test_sampler_invariants(which):
    csr = random_csr()
    sampler = list(samplers(csr))[which]
    s = sampler.sample(utils.epoch_key(2020, 0), 20000)
    dense = csr.toarray() > 0
    assert s.shape == (20000, 3)
    assert dense[s[:, 0], s[:, 1]].all(), "positive not among the user's items"
    assert not dense[s[:, 0], s[:, 2]].any(), "a training positive drawn as negative"
    assert (s[:, 2] >= 0).all() and (s[:, 2] < csr.shape[1]).all()
    users_with_items = np.flatnonzero(dense.any(1))
    assert set(np.unique(s[:, 0])) == set(users_with_items)
    counts = np.bincount(s[:, 0], minlength=csr.shape[0])[users_with_items]
    expected = 20000 / users_with_items.size
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < users_with_items.size + 5 * np.sqrt(2 * users_with_items.size)  # uniform users
    assert (s[s[:, 0] == 7, 2] == 0).all()  # the only negative of user 7


def test_cpp_and_numpy_samplers_agree_exactly():
    csr = random_csr(1)
    a, b = samplers(csr)
    for epoch in range(3):
        key = utils.epoch_key(7, epoch)
        np.testing.assert_array_equal(a.sample(key, 5000), b.sample(key, 5000))
    assert not np.array_equal(a.sample(utils.epoch_key(7, 0), 100), a.sample(utils.epoch_key(7, 1), 100))


def test_positive_uniform_within_user():
    csr = sp.csr_matrix(np.array([[1, 1, 1, 0, 0, 0]], dtype=np.float32))
    for sampler in samplers(csr):
        s = sampler.sample(utils.epoch_key(1, 0), 30000)
        counts = np.bincount(s[:, 1], minlength=3)[:3]
        assert np.all(np.abs(counts - 10000) < 500)
        neg = np.bincount(s[:, 2], minlength=6)[3:]
        assert np.all(np.abs(neg - 10000) < 500)


def test_user_with_every_item_is_an_error_naming_the_user():
    csr = sp.csr_matrix(np.array([[1, 0, 1], [1, 1, 1]], dtype=np.float32))
    with pytest.raises(ValueError, match="user 1 has every item"):
        utils.NumpySampler(csr)
    module, why = utils.load_extension("sampling")
    with pytest.raises(ValueError, match="user 1 has every item"):
        module.sample_epoch(1, 10, np.array([0, 1]), csr.indptr.astype(np.int64),
                            csr.indices.astype(np.int64), 3)


def test_failing_compiler_falls_back_to_numpy_and_says_why(tmp_path, monkeypatch):
    shutil.copy(os.path.join(world.SOURCES_PATH, "sampling.cpp"), tmp_path / "sampling.cpp")
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    sampler, message = utils.make_sampler(random_csr(), sources_dir=str(tmp_path))
    assert sampler.name == "numpy"
    assert "sampler: numpy (the C++ extension is unavailable:" in message
