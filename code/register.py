"""Name -> implementation tables for models and datasets (no work at import)."""
import dataloader
import model

MODELS = {"mf": model.PureMF, "lgn": model.LightGCN}


def load_dataset(name, data_path, log=print, progress=True):
    """The dataset `name` under data_path (downloaded if it is a known one and missing)."""
    return dataloader.load_dataset(name, data_path, log=log, progress=progress)


def build_model(config, dataset, graph):
    if config.model == "mf":
        return MODELS["mf"](dataset.n_users, dataset.m_items, config.recdim)
    return MODELS["lgn"](dataset.n_users, dataset.m_items, config.recdim, config.layer, graph,
                         keep_prob=config.keepprob, dropout=bool(config.dropout))

