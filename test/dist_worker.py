"""Run under torchrun by test_distributed.py: trains a few epochs with the package's own
data-parallel step and saves this rank's parameters, to check that ranks stay identical."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "code"))

import torch  # noqa: E402

import devices  # noqa: E402
import distributed  # noqa: E402
import parse  # noqa: E402
import Procedure  # noqa: E402
import propagation  # noqa: E402
import register  # noqa: E402
import utils  # noqa: E402


def main():
    out_dir, argv = sys.argv[1], sys.argv[2:]
    config = parse.parse_args(argv)
    context, device = distributed.setup("cpu")
    utils.set_seed(config.seed)
    dataset = register.load_dataset(config.dataset, config.data_path, log=lambda m: None, progress=False)
    graph = propagation.build_graph(dataset.getSparseGraph(), device)
    model = register.build_model(config, dataset, graph)
    model, optimizer, precision = devices.build_training(model, config, device)
    sampler, _ = utils.make_sampler(dataset.UserItemNet)
    losses = []
    for epoch in range(config.epochs):
        loss, _ = Procedure.BPR_train_original(dataset, model, optimizer, sampler, config, epoch, device,
                                               precision, progress=False, context=context)
        losses.append(loss)
    torch.save({"state_dict": model.state_dict(), "losses": losses},
               os.path.join(out_dir, f"rank{context.rank}.pt"))
    context.close()


if __name__ == "__main__":
    main()
