"""Top-K ranking over all items with each user's training items excluded: one routine
for the test (Procedure.Test) and for recommend.py."""
import numpy as np
import torch


def top_k(user_emb, item_emb, users, exclude_csr, k, batch_size):
    """Yield (batch users, top items (B, k), their scores (B, k)) for `users` in batches.

    user_emb / item_emb are the final embeddings (already propagated once); scores are
    inner products; items in the users' rows of exclude_csr (training positives) are
    masked with -inf and so rank last."""
    users = np.asarray(users, dtype=np.int64)
    k = min(k, item_emb.shape[0])
    indptr, indices = exclude_csr.indptr, exclude_csr.indices
    device = item_emb.device
    items_t = item_emb.t().contiguous()
    for start in range(0, users.size, batch_size):
        batch = users[start:start + batch_size]
        scores = user_emb[torch.from_numpy(batch).to(device)] @ items_t
        lo, hi = indptr[batch], indptr[batch + 1]
        counts = hi - lo
        if counts.sum():
            rows = np.repeat(np.arange(batch.size), counts)
            cols = indices[_ranges(lo, counts)]
            scores[torch.from_numpy(rows).to(device), torch.from_numpy(cols.astype(np.int64)).to(device)] = -float("inf")
        top_scores, top_items = torch.topk(scores, k, dim=1)
        yield batch, top_items.cpu().numpy(), top_scores.float().cpu().numpy()


def _ranges(starts, counts):
    """Concatenation of arange(s, s + c) for each (s, c), vectorized."""
    total = int(counts.sum())
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return np.arange(total) + offsets
