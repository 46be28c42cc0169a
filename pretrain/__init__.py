"""A μP decoder-only transformer pretraining stack: tune the LR on small proxies, reuse it at scale."""
