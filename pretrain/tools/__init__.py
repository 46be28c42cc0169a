"""Tools around the workflow.

- `estimate`: what a config costs: parameters, FLOPs, memory per GPU under each ZeRO stage.
- `inspect`: every parameter's μP role, init and LR multiplier.
- `slurm`: the Slurm adapter: `pretrain submit`, job arrays, and the questions the batch scripts ask.

May import everything below: `pretrain.transfer`, `pretrain.export`, `pretrain.training`, `pretrain.data`,
`pretrain.model` and the base modules. Nothing below imports tools.
"""
