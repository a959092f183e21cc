"""The fast training step equals the straightforward one (dense graph, plain autograd)."""
import os

import pytest
import torch
import torch.nn.functional as F

import dataloader
import devices
import parse
import Procedure
import propagation
import register
import utils


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_loss_curve_and_weights_equal_the_straightforward_computation(planted, layers):
    config = parse.parse_args(["--dataset", "planted", "--data_path", os.path.dirname(planted), "--recdim", "16",
                               "--layer", str(layers), "--bpr_batch", "100", "--lr", "0.01", "--decay", "1e-3"])
    dataset = dataloader.Loader(planted)
    utils.set_seed(config.seed)
    graph = propagation.build_graph(dataset.getSparseGraph(), "cpu")
    model = register.build_model(config, dataset, graph)
    ref_u = model.embedding_user.weight.detach().clone().requires_grad_()
    ref_i = model.embedding_item.weight.detach().clone().requires_grad_()
    model, optimizer, precision = devices.build_training(model, config, torch.device("cpu"))
    sampler = utils.NumpySampler(dataset.UserItemNet)

    adj = torch.from_numpy(dataloader.normalized_adjacency(dataset.UserItemNet).toarray())
    ref_opt = torch.optim.Adam([ref_u, ref_i], lr=config.lr)  # the plain (not fused) Adam
    n = dataset.n_users
    for epoch in range(4):
        fast_loss, _ = Procedure.BPR_train_original(dataset, model, optimizer, sampler, config, epoch,
                                                    torch.device("cpu"), precision, progress=False)
        triples = torch.from_numpy(sampler.sample(utils.epoch_key(config.seed, epoch), dataset.trainDataSize))
        total = 0.0
        for batch in triples.split(config.bpr_batch):
            u, p, q = batch[:, 0], batch[:, 1], batch[:, 2]
            e0 = torch.cat([ref_u, ref_i])
            layers_out = [e0]
            for _ in range(layers):
                layers_out.append(adj.float() @ layers_out[-1])
            final = torch.stack(layers_out).mean(0)
            pos = (final[u] * final[n + p]).sum(1)
            neg = (final[u] * final[n + q]).sum(1)
            reg = 0.5 * (ref_u[u].norm() ** 2 + ref_i[p].norm() ** 2 + ref_i[q].norm() ** 2) / len(u)
            loss = F.softplus(neg - pos).mean() + config.decay * reg
            ref_opt.zero_grad()
            loss.backward()
            ref_opt.step()
            total += loss.item()
        assert fast_loss == pytest.approx(total / len(triples.split(config.bpr_batch)), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(model.embedding_user.weight.detach(), ref_u.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.embedding_item.weight.detach(), ref_i.detach(), rtol=1e-4, atol=1e-5)
