"""Models: LightGCN and matrix factorization (PureMF), both trained with BPR.

LightGCN (He et al., SIGIR 2020): layer-0 embeddings E^(0) for users and items, no
feature transforms or non-linearities, K propagations over the normalized graph
A_hat = D^-1/2 A D^-1/2, and the final embedding the mean of layers 0..K. The score of
(user, item) is the inner product of their final embeddings. The BPR loss is

    mean softplus(s(u, n) - s(u, p)) + decay * 1/2 * (|u0|^2 + |p0|^2 + |n0|^2) / batch

with the L2 term on the layer-0 embeddings of the batch.
"""
import torch
import torch.nn.functional as F
from torch import nn

import propagation


class BasicModel(nn.Module):
    def computer(self):
        """(all users' final embeddings, all items' final embeddings), without gradient."""
        raise NotImplementedError

    def getUsersRating(self, users):
        """sigmoid scores of the given users against every item (the original's API)."""
        all_users, all_items = self.computer()
        return torch.sigmoid(all_users[users] @ all_items.t())


def _bpr(users_emb, pos_emb, neg_emb, users0, pos0, neg0, batch_size=None):
    """(BPR loss, L2 term), both divided by batch_size (default: this batch's size; a
    data-parallel rank passes the global batch's, so that the ranks' sums add up to it)."""
    batch_size = float(batch_size or len(users_emb))
    # Scores as batched matrix products, which autocast (--amp) runs in low precision;
    # the loss is taken in float32.
    pos_scores = (users_emb.unsqueeze(1) @ pos_emb.unsqueeze(2)).view(-1).float()
    neg_scores = (users_emb.unsqueeze(1) @ neg_emb.unsqueeze(2)).view(-1).float()
    loss = F.softplus(neg_scores - pos_scores).sum() / batch_size
    reg_loss = 0.5 * (users0.float().pow(2).sum() + pos0.float().pow(2).sum()
                      + neg0.float().pow(2).sum()) / batch_size
    return loss, reg_loss


class PureMF(BasicModel):
    """Matrix factorization: the score is the inner product of the layer-0 embeddings."""

    def __init__(self, n_users, n_items, dim):
        super().__init__()
        self.num_users, self.num_items, self.latent_dim = n_users, n_items, dim
        self.embedding_user = nn.Embedding(n_users, dim)
        self.embedding_item = nn.Embedding(n_items, dim)
        # N(0, 1), nn.Embedding's default, as the original PureMF

    def computer(self):
        return self.embedding_user.weight.detach(), self.embedding_item.weight.detach()

    def bpr_loss(self, users, pos, neg, batch_size=None):
        u = self.embedding_user(users)
        p, n = self.embedding_item(pos), self.embedding_item(neg)
        return _bpr(u, p, n, u, p, n, batch_size)


class LightGCN(BasicModel):
    def __init__(self, n_users, n_items, dim, n_layers, graph, keep_prob=0.6, dropout=False):
        super().__init__()
        self.num_users, self.num_items = n_users, n_items
        self.latent_dim, self.n_layers = dim, n_layers
        self.graph = graph
        self.keep_prob, self.dropout = keep_prob, dropout
        self.embedding_user = nn.Embedding(n_users, dim)
        self.embedding_item = nn.Embedding(n_items, dim)
        nn.init.normal_(self.embedding_user.weight, std=0.1)
        nn.init.normal_(self.embedding_item.weight, std=0.1)

    def layer0(self):
        return torch.cat([self.embedding_user.weight, self.embedding_item.weight])

    def computer(self):
        """Propagate every node once (no dropout: this serves ranking)."""
        out = propagation.propagate(self.graph, self.layer0(), self.n_layers)
        return out[:self.num_users], out[self.num_users:]

    def getEmbedding(self, users, pos, neg):
        """Final embeddings of the batch (users, pos, neg) and their layer-0 ones."""
        rows = torch.cat([users, pos + self.num_users, neg + self.num_users])
        graph = self.graph.dropped(self.keep_prob) if (self.dropout and self.training) else self.graph
        final, emb0 = propagation.propagate_rows(graph, self.embedding_user.weight,
                                                 self.embedding_item.weight, self.n_layers, rows)
        b = len(users)
        return final[:b], final[b:2 * b], final[2 * b:], emb0[:b], emb0[b:2 * b], emb0[2 * b:]

    def bpr_loss(self, users, pos, neg, batch_size=None):
        return _bpr(*self.getEmbedding(users, pos, neg), batch_size)
