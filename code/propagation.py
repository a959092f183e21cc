"""LightGCN propagation over the normalized graph, written once and used by training
and ranking.

    E^(k+1) = A_hat E^(k),   E = 1/(K+1) * sum_{k=0..K} E^(k)

Training reads E only at the batch's rows, so `propagate_rows` computes the last layer
only there, and its backward pass starts from those rows alone:

    dL/dE^(0) = 1/(K+1) * sum_{k=0..K} (A_hat^T)^k G,   G zero off the batch rows,

where the first product A_hat^T G scatters the batch rows of A_hat onto their
neighbours. A_hat is symmetric unless edges were dropped (--dropout 1), in which case
the transpose is built explicitly.

Two backends do the sparse products: the C++ kernels of sources/spmm.cpp on the CPU
(float32, multi-threaded, rows skipped where the loss does not look), and torch's own
sparse CSR/COO products on any device (CUDA, NPU, or the CPU when the kernels cannot
be built). Both compute the same numbers up to float32 summation order.
"""
import warnings

import numpy as np
import scipy.sparse as sp
import torch

import utils


class SparseGraph:
    """A_hat (and A_hat^T when it is not symmetric) on one device, with its products."""

    def __init__(self, csr, device, kernels=None, n_threads=1, symmetric=True, n_folds=1):
        csr = sp.csr_matrix(csr, dtype=np.float32)
        csr.sort_indices()
        self.shape = csr.shape
        self.device = torch.device(device)
        self.n_threads = max(1, int(n_threads))
        self.kernels = kernels if self.device.type == "cpu" else None
        self.symmetric = symmetric
        self.n_folds = max(1, int(n_folds))
        self._a = self._build(csr)
        self._at = self._a if symmetric else self._build(csr.T.tocsr())

    @property
    def backend(self):
        return "C++ CSR kernels (sources/spmm.cpp)" if self.kernels else f"torch sparse on {self.device}"

    def _build(self, csr):
        if self.kernels is not None:
            return (np.ascontiguousarray(csr.indptr, dtype=np.int64),
                    np.ascontiguousarray(csr.indices, dtype=np.int32),
                    np.ascontiguousarray(csr.data, dtype=np.float32))
        # A_split (--a_fold): the matrix as row blocks, multiplied one at a time, which
        # bounds the temporary memory of backends that expand a sparse product.
        bounds = np.linspace(0, csr.shape[0], self.n_folds + 1).astype(np.int64)
        return [_torch_sparse(csr[lo:hi], self.device) for lo, hi in zip(bounds[:-1], bounds[1:])]

    # -- products. x: (n, d) float32 contiguous tensors on self.device. `out`, when
    # given, receives the result (the kernels reuse buffers instead of allocating 18 MB
    # tables per product, whose page faults cost as much as a product on gowalla).
    def mm(self, x, transpose=False, acc=None, out=None, acc_init=False):
        """A_hat @ x (A_hat^T @ x when transpose); acc += result when acc is given
        (acc = x + result with acc_init)."""
        mat = self._at if transpose else self._a
        if self.kernels is not None:
            out = torch.empty_like(x) if out is None else out
            self.kernels.spmm(*mat, x.numpy(), None, out.numpy(),
                              None if acc is None else acc.numpy(), self.n_threads, acc_init)
            return out
        result = torch.cat([torch.sparse.mm(fold, x) for fold in mat]) if len(mat) > 1 else torch.sparse.mm(mat[0], x)
        if out is not None:
            result = out.copy_(result)
        if acc is not None and acc_init:
            torch.add(x, result, out=acc)
        elif acc is not None:
            acc += result
        return result

    def mm_rows(self, x, rows):
        """(A_hat @ x)[rows] for a 1-D int64 tensor of rows."""
        if self.kernels is not None:
            out = x.new_empty((rows.numel(), x.shape[1]))
            self.kernels.spmm(*self._a, x.numpy(), rows.numpy(), out.numpy(), None, self.n_threads)
            return out
        return self.mm(x).index_select(0, rows)

    def mm_t_from_rows(self, rows, g, out=None):
        """A_hat^T @ G where G is zero except G[rows] = g (rows unique)."""
        if self.kernels is not None:
            out = g.new_zeros(self.shape[0], g.shape[1]) if out is None else out.zero_()
            self.kernels.scatter_rows(*self._a, rows.numpy(), g.numpy(), out.numpy(), self.n_threads)
            return out
        dense = g.new_zeros(self.shape[0], g.shape[1])
        dense[rows] = g
        return self.mm(dense, transpose=True, out=out)

    def workspace(self, like, count=2):
        """`count` reusable float32 (n, d) buffers on like's device."""
        key = (like.shape[1], like.device)
        if getattr(self, "_workspace_key", None) != key:
            self._workspace = [like.new_empty(self.shape[0], like.shape[1], dtype=torch.float32)
                               for _ in range(count)]
            self._workspace_key = key
        return self._workspace

    def dropped(self, keep_prob, generator=None):
        """A copy with each edge kept with probability keep_prob and rescaled by
        1/keep_prob (the original's edge dropout); no longer symmetric."""
        csr = self.to_scipy()
        keep = torch.rand(csr.nnz, generator=generator).numpy() < keep_prob
        coo = csr.tocoo()
        kept = sp.csr_matrix((coo.data[keep] / keep_prob, (coo.row[keep], coo.col[keep])), shape=self.shape)
        return SparseGraph(kept, self.device, self.kernels, self.n_threads, symmetric=False,
                           n_folds=self.n_folds)

    def to_scipy(self):
        if self.kernels is not None:
            indptr, indices, data = self._a
            return sp.csr_matrix((data, indices, indptr), shape=self.shape)
        return sp.vstack([_to_scipy(fold) for fold in self._a]).tocsr()


def build_graph(adjacency, device, n_folds=1, log=print):
    """SparseGraph of a scipy adjacency on `device`: the C++ kernels on the CPU when they
    build (else torch's sparse products, said in the log), torch's on accelerators."""
    device = torch.device(device)
    kernels = None
    if device.type == "cpu":
        kernels, why = utils.load_extension("spmm")
        if kernels is None:
            log(f"C++ propagation kernels unavailable ({why}): using torch sparse products")
    return SparseGraph(adjacency, device, kernels, n_threads=torch.get_num_threads(), n_folds=n_folds)


def _torch_sparse(csr, device):
    if device.type in ("cpu", "cuda"):
        with warnings.catch_warnings():  # "CSR support is in beta": known, and tested here
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(torch.from_numpy(csr.indptr.astype(np.int64)),
                                           torch.from_numpy(csr.indices.astype(np.int64)),
                                           torch.from_numpy(csr.data.astype(np.float32)),
                                           size=csr.shape, check_invariants=False).to(device)
    # Other backends (Ascend NPU) implement sparse products for COO tensors.
    coo = csr.tocoo()
    index = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(index, torch.from_numpy(coo.data), size=csr.shape).coalesce().to(device)


def _to_scipy(tensor):
    tensor = tensor.cpu()
    if tensor.layout == torch.sparse_csr:
        return sp.csr_matrix((tensor.values().numpy(), tensor.col_indices().numpy(),
                              tensor.crow_indices().numpy()), shape=tuple(tensor.shape))
    index = tensor.indices().numpy()
    return sp.csr_matrix((tensor.values().numpy(), (index[0], index[1])), shape=tuple(tensor.shape))


def propagate(graph, emb0, n_layers):
    """Mean of layers 0..K of every node (no gradient): the embeddings used for ranking."""
    with torch.no_grad():
        x = emb0.detach().float().contiguous()
        acc = x.clone()
        for _ in range(n_layers):
            x = graph.mm(x, acc=acc)
        return acc / (n_layers + 1)


class _PropagateRows(torch.autograd.Function):
    """(final embeddings, layer-0 embeddings) at `rows`, from the user and item tables.

    Runs in float32 whatever the tables' dtype (see devices.py on mixed precision);
    the gradients are returned in the tables' dtype.

    Returning the layer-0 rows too lets the L2 term reuse this gather, and its gradient
    joins the propagated one in a single table instead of three dense embedding
    gradients added together."""

    @staticmethod
    def forward(ctx, user_w, item_w, graph, n_layers, rows):
        n_users = user_w.shape[0]
        cur, nxt = graph.workspace(user_w)
        cur[:n_users].copy_(user_w)
        cur[n_users:].copy_(item_w)
        emb0_rows = cur.index_select(0, rows)
        acc = emb0_rows.clone()
        for _ in range(n_layers - 1):
            graph.mm(cur, out=nxt)
            cur, nxt = nxt, cur
            acc += cur.index_select(0, rows)
        if n_layers > 0:
            acc += graph.mm_rows(cur, rows)
        ctx.graph, ctx.n_layers, ctx.n_users, ctx.dtype = graph, n_layers, n_users, user_w.dtype
        ctx.save_for_backward(rows)
        return acc / (n_layers + 1), emb0_rows

    @staticmethod
    def backward(ctx, grad_out, grad_emb0_rows):
        (rows,) = ctx.saved_tensors
        graph, n_layers = ctx.graph, ctx.n_layers
        grad_out = grad_out.float().contiguous() / (n_layers + 1)
        unique, inverse = torch.unique(rows, return_inverse=True)
        g = grad_out.new_zeros(unique.numel(), grad_out.shape[1]).index_add_(0, inverse, grad_out)
        # grad = G + A^T G + (A^T)^2 G + ... ; the first product only touches G's rows.
        if n_layers > 0:
            cur, nxt = graph.workspace(grad_out)
            cur = graph.mm_t_from_rows(unique, g, out=cur)
            if n_layers == 1:
                grad = cur.clone()
            else:
                grad = torch.empty_like(cur)
                graph.mm(cur, transpose=True, acc=grad, out=nxt, acc_init=True)  # grad = S1 + S2
                cur, nxt = nxt, cur
            for _ in range(n_layers - 2):
                graph.mm(cur, transpose=True, acc=grad, out=nxt)
                cur, nxt = nxt, cur
        else:
            grad = grad_out.new_zeros(graph.shape[0], grad_out.shape[1])
        grad.index_add_(0, unique, g)
        if grad_emb0_rows is not None:
            grad.index_add_(0, rows, grad_emb0_rows.float())
        grad = grad.to(ctx.dtype)
        return grad[:ctx.n_users], grad[ctx.n_users:], None, None, None


def propagate_rows(graph, user_w, item_w, n_layers, rows):
    """Differentiable (mean of layers 0..K, layer 0) at `rows` only (a 1-D int64 tensor
    of node ids: users first, then items offset by the number of users)."""
    return _PropagateRows.apply(user_w, item_w, graph, n_layers, rows)
