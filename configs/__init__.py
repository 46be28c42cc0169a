"""The bundled configs, shipped as the package data `pretrain.configs` (see pretrain/bundled.py)."""
