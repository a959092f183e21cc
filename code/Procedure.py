"""One BPR training epoch and one full-ranking test."""

import numpy as np
import torch

import devices
import distributed
import ranking
import utils


def BPR_train_original(dataset, model, optimizer, sampler, config, epoch, device, precision=None,
                       stop_requested=lambda: False, progress=True, context=distributed.Single()):
    """Train one epoch on as many sampled (user, pos, neg) triples as there are training
    interactions. Returns (mean loss, timing text) or None when stop_requested() turned
    true: then the epoch is abandoned after the batch in flight."""
    model.train()
    precision = precision or devices.Precision(device)
    timer = utils.Timer()
    with timer.time("Sample"):
        # The draws are i.i.d. over users, so their order is already random: no shuffle.
        triples = sampler.sample(utils.epoch_key(config.seed, epoch), dataset.trainDataSize)
    triples = torch.from_numpy(triples).to(device)
    n_batches = (len(triples) + config.bpr_batch - 1) // config.bpr_batch
    loss_sum = torch.zeros((), device=device)
    bar = utils.Progress(n_batches, desc=f"epoch {epoch + 1}", unit="batches", enabled=progress)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for batch in utils.minibatch(triples, batch_size=config.bpr_batch):
        global_size = len(batch)
        batch = context.shard(batch)  # this rank's rows of the global batch (maybe none)
        with precision.autocast():
            loss, reg_loss = model.bpr_loss(batch[:, 0], batch[:, 1], batch[:, 2], batch_size=global_size)
        loss = loss + config.decay * reg_loss
        precision.backward_step(loss, optimizer, before_step=lambda: context.sum_gradients(params))
        loss_sum += loss.detach()
        bar.update()
        if context.any_rank(stop_requested()):  # every rank leaves at the same batch
            bar.close()
            return None
    bar.close()
    aver_loss = context.sum(loss_sum).item() / n_batches
    return aver_loss, f"loss{aver_loss:.3f}-{timer.dict()}"


def Test(dataset, model, config, device, precision=None, progress=True, context=distributed.Single()):
    """precision, recall and NDCG at every k of config.topks, averaged over test users,
    with training items excluded; the model is propagated once. Under torchrun each
    rank ranks its share of the users and the sums are added up."""
    model.eval()
    topks = list(config.topks)
    max_k = max(topks)
    results = {"precision": np.zeros(len(topks)), "recall": np.zeros(len(topks)),
               "ndcg": np.zeros(len(topks))}
    n_test_users = len(dataset.testUsers)
    users = distributed.split_users(dataset.testUsers, context)
    test = dataset.test_csr
    test_keys = np.repeat(np.arange(dataset.n_users, dtype=np.int64), np.diff(test.indptr)) \
        * dataset.m_items + test.indices
    test_sizes_all = np.diff(test.indptr)
    batch_size = max(1, min(config.testbatch, len(users)))
    bar = utils.Progress(len(users), desc="test", unit="users", enabled=progress)
    precision = precision or devices.Precision(device)
    with torch.no_grad(), precision.autocast():
        user_emb, item_emb = model.computer()
        for batch, top_items, _ in ranking.top_k(user_emb, item_emb, users, dataset.UserItemNet,
                                                 max_k, batch_size):
            probe = batch[:, None] * dataset.m_items + top_items
            at = np.minimum(np.searchsorted(test_keys, probe), test_keys.size - 1)
            hits = (test_keys[at] == probe).astype(np.float64)
            sizes = test_sizes_all[batch]
            for i, k in enumerate(topks):
                ret = utils.RecallPrecision_ATk(sizes, hits, k)
                results["precision"][i] += ret["precision"]
                results["recall"][i] += ret["recall"]
                results["ndcg"][i] += utils.NDCGatK_r(sizes, hits, k)
            bar.update(len(batch))
    bar.close()
    devices.synchronize(device)
    if context.world_size > 1:
        sums = context.sum(torch.tensor(np.stack([results[k] for k in ("precision", "recall", "ndcg")]),
                                        dtype=torch.float64, device=device))
        results = dict(zip(("precision", "recall", "ndcg"), sums.cpu().numpy()))
    for key in results:
        results[key] = results[key] / float(n_test_users)
    return results
