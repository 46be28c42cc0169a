"""The Slurm scripts, shipped as the package data `pretrain.slurm` (see pretrain/bundled.py)."""
