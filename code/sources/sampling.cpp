/*
<%
cfg['compiler_args'] = ['-std=c++17', '-O3']
setup_pybind11(cfg)
%>
*/
// BPR triple sampler (user, positive item, negative item) for one epoch.
//
// Randomness is counter based: every draw is a hash of (seed, epoch, sample index,
// attempt), so the numpy sampler in utils.py reproduces this output exactly and an
// epoch can be re-drawn after a resume without carrying a generator state around.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace py = pybind11;

static inline uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

// Must match utils.counter_hash.
static inline uint64_t counter_hash(uint64_t key, uint64_t index, uint64_t stream) {
    return splitmix64(key ^ splitmix64(index * 0x100000001B3ULL + stream));
}

py::array_t<int64_t> sample_epoch(uint64_t key,
                                  int64_t n_samples,
                                  py::array_t<int64_t, py::array::c_style> sample_users,
                                  py::array_t<int64_t, py::array::c_style> indptr,
                                  py::array_t<int64_t, py::array::c_style> indices,
                                  int64_t n_items) {
    auto su = sample_users.unchecked<1>();
    auto ptr = indptr.unchecked<1>();
    auto idx = indices.unchecked<1>();
    const int64_t n_sample_users = su.shape(0);
    if (n_samples > 0 && n_sample_users == 0)
        throw std::invalid_argument("no user has a training item: nothing to sample");
    for (int64_t j = 0; j < n_sample_users; ++j) {
        int64_t u = su(j);
        int64_t deg = ptr(u + 1) - ptr(u);
        if (deg <= 0)
            throw std::invalid_argument("user " + std::to_string(u) + " has no training item");
        if (deg >= n_items)
            throw std::invalid_argument("user " + std::to_string(u) +
                                        " has every item as a positive: no negative can be drawn");
    }
    py::array_t<int64_t> out({n_samples, (int64_t)3});
    auto o = out.mutable_unchecked<2>();
    {
        py::gil_scoped_release release;
        for (int64_t i = 0; i < n_samples; ++i) {
            int64_t u = su(counter_hash(key, i, 0) % (uint64_t)n_sample_users);
            const int64_t begin = ptr(u), end = ptr(u + 1);
            const int64_t* row = idx.data(begin);
            const int64_t deg = end - begin;
            int64_t pos = row[counter_hash(key, i, 1) % (uint64_t)deg];
            int64_t neg;
            for (uint64_t attempt = 2;; ++attempt) {
                neg = (int64_t)(counter_hash(key, i, attempt) % (uint64_t)n_items);
                if (!std::binary_search(row, row + deg, neg)) break;
            }
            o(i, 0) = u;
            o(i, 1) = pos;
            o(i, 2) = neg;
        }
    }
    return out;
}

PYBIND11_MODULE(sampling, m) {
    m.doc() = "BPR negative sampling for LightGCN";
    m.def("sample_epoch", &sample_epoch,
          "Draw n_samples (user, pos, neg) triples; rows of indptr/indices must be sorted.");
}
