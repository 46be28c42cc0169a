"""The `pretrain` distribution: the packages `pretrain` and `pretrain_kernels` (the folder kernels/), with the
configs/ and slurm/ folders as package data (`pretrain.configs`, `pretrain.slurm`; see pretrain/bundled.py), and the
measured ablation table apply-lr cites and the seed-noise prior of its intervals (pretrain/transfer/paper_table.json
and seed_noise.json, once written).

Bounds: each floor is a version the whole test suite passed with (constraints-floor.txt); the ceilings sit
on the packages whose internals or behaviour we depend on (DeepSpeed's minor, triton's and transformers'
major, torch's minor). constraints.txt holds the exact versions of the whole closure as tested
(scripts/lock.sh refreshes it).
"""

from pathlib import Path

from setuptools import find_packages, setup

README = Path(__file__).with_name("README.md")

setup(
    name="pretrain",
    version="0.1.0",
    description="μP decoder-only transformer pretraining: tune the LR on small proxies, reuse it at scale",
    long_description=README.read_text(encoding="utf-8") if README.exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[*find_packages(include=["pretrain", "pretrain.*"]), "pretrain_kernels", "pretrain.configs",
              "pretrain.slurm"],
    package_dir={"pretrain_kernels": "kernels", "pretrain.configs": "configs", "pretrain.slurm": "slurm"},
    package_data={"pretrain.configs": ["**/*.yaml"], "pretrain.slurm": ["*.sbatch", "*.sh"],
                  "pretrain.transfer": ["paper_table.json", "seed_noise.json"]},  # see scripts/*.sh
    install_requires=[
        "torch>=2.13,<2.15",
        "deepspeed>=0.19.2,<0.20",  # private touchpoints: pretrain/training/deepspeed_compat.py
        "transformers>=5.0,<6",
        "datasets>=4.0,<6",
        "huggingface_hub>=1.3,<3",
        "tokenizers>=0.22.1,<1",
        "tiktoken>=0.9,<1",  # packs data 3x faster than tokenizers, where it gives the same ids (data/encoder.py)
        "safetensors>=0.5.3,<1",
        "wandb>=0.22,<1",
        "triton>=3.6,<4",
        "numpy>=2.0.2,<3",
        "pyarrow>=20",
        "pyyaml>=6.0.1,<7",
        "tqdm>=4.66.3,<5",
        "matplotlib>=3.9,<4",
        "packaging>=24",
    ],
    extras_require={"dev": ["pytest>=8", "ruff>=0.6", "setuptools>=77", "build>=1.2"]},
    entry_points={"console_scripts": ["pretrain = pretrain.cli:main"]},
)
