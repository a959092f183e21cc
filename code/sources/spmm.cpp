/*
<%
cfg['compiler_args'] = ['-std=c++17', '-O3', '-march=native', '-ffp-contract=off', '-fopenmp']
cfg['linker_args'] = ['-fopenmp']
setup_pybind11(cfg)
%>
*/
// Sparse x dense kernels for LightGCN propagation on the CPU.
//
// A_hat is a CSR matrix (int64 indptr, int32 indices, float32 values) and X a
// row-major float32 table (n x d). The 70k x 64 gowalla table (18 MB) sits in L3, so
// speed is set by how fast rows of X are gathered: each output row is accumulated in
// registers (d known at compile time for the usual widths) and written once.
// Threads get contiguous row ranges holding equal numbers of non-zeros. They come from
// OpenMP, which resolves to the libgomp that torch already loaded: one thread pool for
// torch and these kernels. (Threads of our own would compete with torch's OpenMP
// workers, which spin after each torch op: measured 13 ms instead of 9 ms a product.)
// -ffp-contract=off keeps the sums bit-identical to a plain multiply-then-add, so
// results do not depend on whether the compiler fuses them.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <omp.h>
#include <vector>

namespace py = pybind11;
using f32 = py::array_t<float, py::array::c_style>;
using i32 = py::array_t<int32_t, py::array::c_style>;
using i64 = py::array_t<int64_t, py::array::c_style>;

// 8 floats, loaded unaligned: one AVX register (two SSE ones on older CPUs).
typedef float vf8 __attribute__((vector_size(32), aligned(4)));
// How many non-zeros ahead the gathered rows of x are prefetched.
constexpr int64_t PREFETCH = 8;

template <int D>
static inline void row_dot(const int64_t* ptr, const int32_t* idx, const float* val,
                           const float* x, int64_t d, int64_t row, float* out) {
    const int64_t begin = ptr[row], end = ptr[row + 1];
    if constexpr (D > 0) {
        constexpr int V = D / 8;
        vf8 acc[V];
        for (int v = 0; v < V; ++v) acc[v] = vf8{};
        for (int64_t p = begin; p < end; ++p) {
            if (p + PREFETCH < end) {
                const char* ahead = (const char*)(x + (int64_t)idx[p + PREFETCH] * D);
                for (int line = 0; line < D * 4; line += 64) __builtin_prefetch(ahead + line);
            }
            const float a = val[p];
            const vf8* xr = (const vf8*)(x + (int64_t)idx[p] * D);
            for (int v = 0; v < V; ++v) acc[v] += a * xr[v];
        }
        vf8* o = (vf8*)out;
        for (int v = 0; v < V; ++v) o[v] = acc[v];
    } else {
        for (int64_t k = 0; k < d; ++k) out[k] = 0.f;
        for (int64_t p = begin; p < end; ++p) {
            const float a = val[p];
            const float* xr = x + (int64_t)idx[p] * d;
            for (int64_t k = 0; k < d; ++k) out[k] += a * xr[k];
        }
    }
}

// acc_init: acc = x + out (saves a copy of x into acc before the first layer's sum).
template <int D>
static void rows_range(const int64_t* ptr, const int32_t* idx, const float* val,
                       const float* x, int64_t d, const int64_t* rows, int64_t begin,
                       int64_t end, float* out, float* acc, bool acc_init) {
    for (int64_t r = begin; r < end; ++r) {
        const int64_t row = rows ? rows[r] : r;
        float* o = out + r * d;
        row_dot<D>(ptr, idx, val, x, d, row, o);
        if (acc) {
            float* a = acc + r * d;
            const float* base = acc_init ? x + row * d : a;
            for (int64_t k = 0; k < d; ++k) a[k] = base[k] + o[k];
        }
    }
}

using RangeFn = void (*)(const int64_t*, const int32_t*, const float*, const float*, int64_t,
                         const int64_t*, int64_t, int64_t, float*, float*, bool);

static RangeFn pick(int64_t d) {
    switch (d) {
        case 8: return rows_range<8>;
        case 16: return rows_range<16>;
        case 32: return rows_range<32>;
        case 64: return rows_range<64>;
        case 128: return rows_range<128>;
        default: return rows_range<0>;
    }
}

// Split [0, n_rows) into contiguous ranges of about equal non-zero counts.
static std::vector<int64_t> balanced_split(const int64_t* ptr, const int64_t* rows,
                                           int64_t n_rows, int n_parts) {
    std::vector<int64_t> cost(n_rows + 1, 0);
    for (int64_t r = 0; r < n_rows; ++r) {
        const int64_t row = rows ? rows[r] : r;
        cost[r + 1] = cost[r] + (ptr[row + 1] - ptr[row]) + 1;
    }
    std::vector<int64_t> bounds(n_parts + 1, n_rows);
    bounds[0] = 0;
    for (int t = 1; t < n_parts; ++t) {
        const int64_t target = cost[n_rows] * t / n_parts;
        bounds[t] = std::lower_bound(cost.begin(), cost.end(), target) - cost.begin();
        bounds[t] = std::min(std::max(bounds[t], bounds[t - 1]), n_rows);
    }
    return bounds;
}

static void check_matrix(const i32& indices, const f32& values, const f32& x) {
    if (x.ndim() != 2) throw std::invalid_argument("dense operand must be 2-D");
    if (indices.size() != values.size())
        throw std::invalid_argument("indices and values differ in length");
}

// out[r] = (A @ x)[rows[r]] (rows = None: every row); acc += out when acc is given
// (acc = x + out with acc_init, for a square A and rows = None).
static void spmm(i64 indptr, i32 indices, f32 values, f32 x, py::object rows_obj, f32 out,
                 py::object acc_obj, int n_threads, bool acc_init) {
    const int64_t d = x.shape(1);
    const int64_t* rows = nullptr;
    i64 rows_arr;
    int64_t n_rows = indptr.size() - 1;
    if (!rows_obj.is_none()) {
        rows_arr = rows_obj.cast<i64>();
        rows = rows_arr.data();
        n_rows = rows_arr.size();
    }
    check_matrix(indices, values, x);
    if (acc_init && (rows || x.shape(0) != n_rows))
        throw std::invalid_argument("acc_init needs a square matrix and every row");
    if (out.ndim() != 2 || out.shape(0) != n_rows || out.shape(1) != d)
        throw std::invalid_argument("output has the wrong shape");
    float* acc = nullptr;
    f32 acc_arr;
    if (!acc_obj.is_none()) {
        acc_arr = acc_obj.cast<f32>();
        if (acc_arr.ndim() != 2 || acc_arr.shape(0) != n_rows || acc_arr.shape(1) != d)
            throw std::invalid_argument("accumulator has the wrong shape");
        acc = acc_arr.mutable_data();
    }
    const int64_t* ptr = indptr.data();
    const int32_t* idx = indices.data();
    const float* val = values.data();
    const float* xd = x.data();
    float* od = out.mutable_data();
    RangeFn fn = pick(d);
    n_threads = std::max(1, std::min<int>(n_threads, (int)std::max<int64_t>(1, n_rows / 64)));
    py::gil_scoped_release release;
    if (n_threads == 1) {
        fn(ptr, idx, val, xd, d, rows, 0, n_rows, od, acc, acc_init);
        return;
    }
    std::vector<int64_t> bounds = balanced_split(ptr, rows, n_rows, n_threads);
#pragma omp parallel for num_threads(n_threads) schedule(static, 1)
    for (int t = 0; t < n_threads; ++t)
        fn(ptr, idx, val, xd, d, rows, bounds[t], bounds[t + 1], od, acc, acc_init);
}

// out += A[rows, :]^T @ g: row j = rows[r] of A scatters g[r] onto its columns (for a
// symmetric A this is A[:, rows] @ g). Used for the first backward layer, whose input is
// zero off the batch rows. Each thread owns a range of output rows, and finds the part of
// every scattered row that falls in it by binary search (rows' indices are sorted), so no
// two threads write the same row.
static void scatter_rows(i64 indptr, i32 indices, f32 values, i64 rows, f32 g, f32 out,
                         int n_threads) {
    const int64_t d = g.shape(1);
    if (g.ndim() != 2 || g.shape(0) != rows.size() || out.ndim() != 2 || out.shape(1) != d)
        throw std::invalid_argument("scatter_rows: shapes do not match");
    const int64_t* ptr = indptr.data();
    const int32_t* idx = indices.data();
    const float* val = values.data();
    const int64_t* rw = rows.data();
    const float* gd = g.data();
    float* od = out.mutable_data();
    const int64_t n = rows.size();
    const int64_t n_out = out.shape(0);
    n_threads = std::max(1, n_threads);
    std::vector<int64_t> bounds = balanced_split(ptr, nullptr, std::min<int64_t>(n_out, indptr.size() - 1),
                                                 n_threads);
    bounds[n_threads] = n_out;
    py::gil_scoped_release release;
#pragma omp parallel for num_threads(n_threads) schedule(static, 1)
    for (int t = 0; t < n_threads; ++t) {
        const int32_t lo = (int32_t)bounds[t], hi = (int32_t)bounds[t + 1];
        for (int64_t r = 0; r < n; ++r) {
            const int64_t j = rw[r];
            const int32_t* first = std::lower_bound(idx + ptr[j], idx + ptr[j + 1], lo);
            const int32_t* last = std::lower_bound(first, idx + ptr[j + 1], hi);
            const float* gr = gd + r * d;
            for (const int32_t* q = first; q < last; ++q) {
                const float a = val[q - idx];
                float* o = od + (int64_t)(*q) * d;
                for (int64_t k = 0; k < d; ++k) o[k] += a * gr[k];
            }
        }
    }
}

PYBIND11_MODULE(spmm, m) {
    m.doc() = "CSR sparse-dense products for LightGCN propagation";
    m.def("spmm", &spmm, py::arg("indptr"), py::arg("indices"), py::arg("values"), py::arg("x"),
          py::arg("rows"), py::arg("out"), py::arg("acc"), py::arg("n_threads"),
          py::arg("acc_init") = false);
    m.def("scatter_rows", &scatter_rows, py::arg("indptr"), py::arg("indices"), py::arg("values"),
          py::arg("rows"), py::arg("g"), py::arg("out"), py::arg("n_threads") = 1);
}
