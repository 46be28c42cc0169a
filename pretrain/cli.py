"""The `pretrain` command. Subcommands only parse arguments, build components and run them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from .config import Config, ConfigError, load_config

COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def command(name: str, help: str, *, config: bool = True, options: tuple = ()):
    """Register a subcommand; with `config`, it takes CONFIG and `key.sub=value` overrides.
    `options` are (flags, argparse kwargs) pairs."""

    def register(fn):
        COMMANDS[name] = fn
        fn.help, fn.takes_config, fn.options = help, config, options
        return fn

    return register


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


@command("train", "train a model (torchrun-compatible)")
def _train(args: argparse.Namespace) -> int:
    from .train import train

    train(_config(args))
    return 0


@command("prepare-data", "tokenize, pack and cache the training data")
def _prepare_data(args: argparse.Namespace) -> None:
    from .data import prepare_data

    data = prepare_data(_config(args).data)
    meta = data.meta
    print(f"{data.dir}: {meta['documents']:,} documents, {meta['train_tokens']:,} train tokens "
          f"({len(data.train):,} rows), {meta['val_tokens']:,} val tokens ({len(data.val):,} rows); "
          f"unigram entropy {meta['unigram_entropy']:.4f} nats")


@command("inspect", "show every parameter's μP role, measured init std and LR multiplier",
         options=((("--json",), {"action": "store_true", "help": "print JSON instead of a table"}),))
def _inspect(args: argparse.Namespace) -> None:
    from .inspect import format_table, inspect_model

    rows = inspect_model(_config(args))
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))


@command("export-hf", "export a checkpoint as a Hugging Face LlamaForCausalLM directory (μP folded in)",
         config=False,
         options=((("checkpoint",), {"help": "a checkpoint dir, or a run dir (its newest checkpoint)"}),
                  (("out",), {"help": "the output directory"}),
                  (("--dtype",), {"choices": ["bf16", "fp32"], "default": "bf16",
                                  "help": "weight dtype (default %(default)s)"}),
                  (("--max-shard-size",), {"default": "5GB",
                                           "help": "largest safetensors file (default %(default)s)"}),
                  (("--overwrite",), {"action": "store_true", "help": "replace OUT if it exists"})))
def _export_hf(args: argparse.Namespace) -> None:
    from .hf_export import export_hf

    checkpoint = export_hf(Path(args.checkpoint), Path(args.out), dtype=args.dtype,
                           max_shard_size=args.max_shard_size, overwrite=args.overwrite)
    print(f"{args.out}: LlamaForCausalLM ({args.dtype}) from {checkpoint}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pretrain", description="μP LLM pretraining")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, fn in COMMANDS.items():
        p = sub.add_parser(name, help=fn.help, description=fn.help)
        if fn.takes_config:
            p.add_argument("config", help="YAML config file")
            p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
        for flags, kwargs in fn.options:
            p.add_argument(*flags, **kwargs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .data import DataError
    from .trainer import TrainingDiverged

    try:
        return COMMANDS[args.command](args) or 0
    except (ConfigError, DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
