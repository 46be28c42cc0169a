"""A μP decoder-only transformer pretraining stack: tune the LR on small proxies, reuse it at scale."""


def __getattr__(name: str):
    # `pretrain.load_model` without importing torch and the model for every `pretrain` command.
    if name == "load_model":
        from .export.loading import load_model

        return load_model
    raise AttributeError(f"module 'pretrain' has no attribute {name!r}")
