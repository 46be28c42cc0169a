"""The model: a μP decoder-only transformer and everything that depends only on its config.

- `mup`: the μP table (init and LR multiplier per parameter role) and every width-dependent rule.
- `transformer`: RMSNorm, RoPE attention, the MLP, blocks and the transformer, built from `mup`.
- `loss`: the language-modelling loss of a packed batch.
- `flops`: parameter counts and training FLOPs per token.

May import: `pretrain_kernels`, `pretrain.config`, `pretrain.errors`. Never data, training or anything above.
"""
