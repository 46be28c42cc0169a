"""The `pretrain` command. Subcommands only parse arguments, build components and run them."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from .bundled import config_names, config_path
from .config import Config, load_config
from .errors import ExitCode, UserError

COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def command(name: str, help: str, *, config: bool = True, options: tuple = (), passthrough: bool = False):
    """Register a subcommand; with `config`, it takes CONFIG and `key.sub=value` overrides.
    `options` are (flags, argparse kwargs) pairs. With `passthrough`, what follows `--` is left unparsed
    in `args.passthrough` (for another program)."""

    def register(fn):
        COMMANDS[name] = fn
        fn.help, fn.takes_config, fn.options, fn.passthrough = help, config, options, passthrough
        return fn

    return register


class _Parser(argparse.ArgumentParser):
    """argparse's complaints as one `error:` line and exit 2, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USER_ERROR, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _positive(kind: type, most: float = math.inf) -> Callable[[str], int | float]:
    """An argparse type: a finite number of `kind` above 0 (and at most `most`)."""
    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not 0 < value <= most or kind is float and not math.isfinite(value):
            bound = "" if most == math.inf else f" and <= {most:,}"
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'} > 0{bound}, "
                                             f"got {text!r}")
        return value

    convert.__name__ = kind.__name__
    return convert


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


@command("train", "train a model (torchrun-compatible)")
def _train(args: argparse.Namespace) -> None:
    from .training.train import train

    train(_config(args))


@command("submit", "validate CONFIG, then submit it to Slurm with slurm/train.sbatch (sbatch options after --)",
         passthrough=True)
def _submit(args: argparse.Namespace) -> None:
    from .tools.slurm import submit

    job = submit(args.config, args.overrides, args.passthrough)
    print(f"submitted job {job.job_id}; log: {job.log}")


@command("prepare-data", "tokenize, pack and cache the training data (locally, or as a Slurm job array)",
         passthrough=True,
         options=((("--workers",), {"type": _positive(int), "default": 1,
                                    "help": "processes preparing slices on this machine (default %(default)s)"}),
                  (("--slurm",), {"action": "store_true",
                                  "help": "submit slurm/prepare.sbatch as a job array plus a finalize job"}),
                  (("--tasks",), {"type": _positive(int),
                                  "help": "array tasks (with --slurm: default one per slice, at most 100)"}),
                  (("--verify",), {"action": "store_true",
                                   "help": "check every shard's full SHA-256, not only its size and a sampled "
                                           "digest (reads all of the prepared data)"}),
                  (("--task",), {"type": int, "help": argparse.SUPPRESS}),  # what each array task runs
                  (("--finalize",), {"action": "store_true", "help": argparse.SUPPRESS})))
def _prepare_data(args: argparse.Namespace) -> None:
    from .data.prepared import open_prepared, prepare_data
    from .data.shards import finalize, plan_work, prepare_slices

    cfg = _config(args)
    if args.slurm:
        from .tools.slurm import submit_prepare

        work = plan_work(cfg.data)  # the tokenizer first, so that every task shares it
        tasks = args.tasks or max(1, min(len(work.pieces()), 100))
        print(submit_prepare(args.config, args.overrides, tasks, work, args.passthrough))
        return
    if args.passthrough:
        raise UserError("prepare-data takes sbatch options after -- only with --slurm")
    if args.task is not None:
        if args.tasks is None or not 0 <= args.task < args.tasks:
            raise UserError(f"--task {args.task} needs --tasks N with 0 <= task < N")
        prepared = prepare_slices(plan_work(cfg.data), task=args.task, tasks=args.tasks)
        print(f"task {args.task} of {args.tasks}: prepared {prepared} slice(s)")
        return
    if args.finalize:  # the end of a cluster job: worth reading every shard back once
        work = plan_work(cfg.data)
        finalize(work)
        print(open_prepared(cfg.data, work.targets, verify=True).describe())
        return
    print(prepare_data(cfg.data, workers=args.workers, verify=args.verify).describe())


@command("inspect", "show every parameter's μP role, measured init std, LR multiplier, depth factors and Adam ε",
         options=((("--json",), {"action": "store_true", "help": "print JSON instead of a table"}),))
def _inspect(args: argparse.Namespace) -> None:
    from .tools.inspect import depth_line, format_table, inspect_model

    cfg = _config(args)
    rows = inspect_model(cfg)
    print(json.dumps(rows, indent=2) if args.json else f"{depth_line(cfg)}\n{format_table(rows)}")


@command("estimate", "parameters, FLOPs per token and for the run, memory per GPU under ZeRO 0-3: what fits, on how "
         "many GPUs, in how many days",
         options=((("--gpus",), {"type": _positive(int, most=2**24), "default": 8,  # the run's FLOPs stay a float
                                 "help": "GPUs in the run (default %(default)s)"}),
                  (("--gpu-mem",), {"type": _positive(float), "default": 80.0,
                                    "help": "GiB per GPU (default %(default)s)"}),
                  (("--mfu",), {"type": _positive(float, most=1), "default": 0.4,
                                "help": "model FLOPs utilization the time to train assumes, in (0, 1] (default "
                                        "%(default)s: a well-tuned dense run's)"}),
                  (("--peak-tflops",), {"type": _positive(float),
                                        "help": "peak dense TFLOP/s per GPU (default: train.peak_flops if set, else "
                                                "989, the H100's dense bf16)"})))
def _estimate(args: argparse.Namespace) -> None:
    from .tools.estimate import format_estimate, throughput

    cfg = _config(args)
    print(format_estimate(cfg, args.gpus, args.gpu_mem, throughput(cfg, args.mfu, args.peak_tflops)))


@command("consolidate", "write a checkpoint's full fp32 weights (any ZeRO stage and world size) as one safetensors "
         "file", config=False,
         options=((("checkpoint",), {"help": "a checkpoint, or a run dir (its newest checkpoint)"}),
                  (("out",), {"help": "the .safetensors file to write"}),
                  (("--overwrite",), {"action": "store_true", "help": "replace OUT if consolidate wrote it"})))
def _consolidate(args: argparse.Namespace) -> None:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save_file

    from .fileio import atomic_output
    from .outputs import Kind, check_output
    from .training.checkpoint import load_consolidated_state_dict, resolve_checkpoint

    def consolidated(file: Path) -> bool:
        """Whether `file` is this command's: safetensors naming the checkpoint it came from."""
        try:
            with safe_open(file, "pt") as f:
                return "checkpoint" in (f.metadata() or {})
        except (OSError, SafetensorError):
            return False

    path = resolve_checkpoint(Path(args.checkpoint))
    inputs = [("the checkpoint", path), ("the run", args.checkpoint)]
    out = check_output(args.out, "OUT", Kind.FILE, "consolidate", inputs, args.overwrite, consolidated)
    state = load_consolidated_state_dict(path)
    with atomic_output(out) as staged:
        save_file({name: t.contiguous() for name, t in state.items()}, staged, metadata={"checkpoint": str(path)})
    print(f"{args.out}: {len(state)} tensors, {sum(t.numel() for t in state.values()):,} fp32 parameters from {path}")


_PARAMETRIZATION = (("--parametrization",), {"choices": ["mup", "sp"], "help": "set model.parametrization"})
_COORD_WIDTHS = "128,256,512,1024"


def _overrides(args: argparse.Namespace) -> list[str]:
    """The overrides, with --parametrization as one more."""
    extra = [f"model.parametrization={args.parametrization}"] if args.parametrization else []
    return [*args.overrides, *extra]


@command("coord-check", "train each width (or depth) a few steps and plot activation sizes against it (μP: flat in "
         "width; CompleteP: flat in depth)",
         options=((("--widths",), {"help": f"comma list (default {_COORD_WIDTHS})"}),
                  (("--depths",), {"help": "comma list of n_layers, e.g. 2,4,8,16: a check across depth at the "
                                           "config's width, instead of --widths"}),
                  _PARAMETRIZATION,
                  (("--steps",), {"type": _positive(int), "default": 10, "help": "steps per width (%(default)s)"}),
                  (("--seeds",), {"type": _positive(int), "default": 3, "help": "seeds per width (%(default)s)"}),
                  (("--out",), {"help": "output directory (default runs/coord-check-PARAMETRIZATION)"}),
                  (("--overwrite",), {"action": "store_true", "help": "replace an earlier coord-check's results in "
                                                                      "--out"})))
def _coord_check(args: argparse.Namespace) -> None:
    """Exits 0 whatever the verdict: a reading, not a gate (SP is expected to fail it, and
    scripts/transfer_evidence.sh runs both under `set -e`)."""
    from .outputs import Kind, check_output
    from .transfer.coord_check import coord_check, format_verdicts, write_coord_check
    from .transfer.sweep import parse_depths, parse_widths

    if args.widths is not None and args.depths is not None:
        raise UserError("--widths and --depths: pass one; a coordinate check varies one axis at a time")
    axis, option, text = ("depth", "--depths", args.depths) if args.depths else ("width", "--widths",
                                                                                   args.widths or _COORD_WIDTHS)
    sizes = sorted(set((parse_depths if axis == "depth" else parse_widths)(text)))
    if len(sizes) < 2:
        raise UserError(f"{option}: a slope against {axis} needs two {axis}s or more, got {text!r}")
    cfg = load_config(args.config, _overrides(args))
    recipe = cfg.model.parametrization if axis == "width" else f"depth-{cfg.model.depth_parametrization}"
    out = check_output(args.out if args.out is not None else f"runs/coord-check-{recipe}",
                       "--out", Kind.WORKSPACE, "coord-check", [("the data cache", cfg.data.cache_dir)], args.overwrite)
    result = coord_check(cfg, sizes, args.steps, args.seeds, axis=axis)  # minutes: the output is judged before
    paths = write_coord_check(result, out)
    print("wrote " + ", ".join(map(str, paths)))
    print(format_verdicts(result))


@command("sweep", "LR sweep over widths (and depths, horizons, batches): run the points locally (restartable) or as a "
         "Slurm array; more widths, depths, horizons, batches or LRs into the same directory grow the sweep",
         options=((("--widths",), {"required": True, "help": "d_model values, e.g. 128,256,512"}),
                  (("--depths",), {"help": "n_layers values, e.g. 2,4,8 (default: the config's model.n_layers)"}),
                  (("--lrs",), {"required": True, "help": "log2 grid LO:HI:STEP (2^-10:2^-4:0.5) or a list"}),
                  (("--steps",), {"help": "training horizons in steps, e.g. 1250,2500,5000 (default: the config's "
                                          "train.steps)"}),
                  (("--batches",), {"help": "global batch sizes in sequences (train.global_batch_size), e.g. 8,16,32 "
                                            "(default: the config's)"}),
                  (("--equal-tokens",), {"action": "store_true",
                                         "help": "every batch trains the tokens the config's batch trains in --steps "
                                                 "(its steps scaled); by default every batch trains --steps steps"}),
                  (("--fixed-warmup",), {"action": "store_true",
                                         "help": "keep a fixed optim.warmup_steps at every horizon (by default, over "
                                                 "several horizons it becomes optim.warmup_fraction = warmup_steps / "
                                                 "train.steps, so every run warms up the same share)"}),
                  _PARAMETRIZATION,
                  (("--out",), {"help": "sweep directory (default runs/sweep-CONFIGNAME-PARAMETRIZATION); one "
                                        "holding a sweep of the same recipe grows by the new settings"}),
                  (("--slurm",), {"action": "store_true", "help": "write the plan and submit its new points as a job "
                                                                  "array"}),
                  (("--max-concurrent",), {"type": _positive(int), "default": 8,
                                           "help": "Slurm array tasks at once (default %(default)s)"})))
def _sweep(args: argparse.Namespace) -> None:
    import shlex

    from .tools.slurm import submit_sweep, sweep_command
    from .transfer.sweep import (
        grow_sweep,
        is_done,
        parse_batches,
        parse_depths,
        parse_lrs,
        parse_steps,
        parse_widths,
        run_local,
    )

    widths, lrs = parse_widths(args.widths), parse_lrs(args.lrs)
    steps = parse_steps(args.steps) if args.steps else None
    batches = parse_batches(args.batches) if args.batches else None
    depths = parse_depths(args.depths) if args.depths else None
    growth = grow_sweep(args.config, widths, lrs, args.out, _overrides(args), steps, args.fixed_warmup, batches,
                        args.equal_tokens, depths)
    if growth.warning:
        print(growth.warning, file=sys.stderr)
    plan = growth.plan
    print(f"sweep {plan.dir}: {plan.shape()}; warmup {plan.warmup}")
    for change in growth.changes():
        print(f"  {change}")
    if args.slurm:
        if growth.new_points:
            print(submit_sweep(plan, [p.index for p in growth.new_points], args.max_concurrent))
            return
        # Submitted before: resubmitting would train a point twice in one directory while its task is still queued.
        unfinished = [p.index for p in plan.points if not is_done(p)]
        if unfinished:
            print(f"no new points to submit; {len(unfinished)} are not finished: once their tasks are over, rerun "
                  f"them with {shlex.join(sweep_command(plan, unfinished, args.max_concurrent))}")
        else:
            print("no new points to submit; every point is finished")
        return
    results = run_local(plan)
    counts = {status: sum(r["status"] == status for r in results) for status in ("diverged", "failed")}
    print(f"{len(results)} points run ({counts['diverged']} diverged, {counts['failed']} failed); "
          f"next: pretrain report {plan.dir}")


@command("sweep-point", "run one point of a sweep (what each Slurm array task does)", config=False,
         options=((("sweep_dir",), {"help": "the sweep directory (holds plan.json)"}),
                  (("index",), {"type": int, "help": "the point's index in plan.json"})))
def _sweep_point(args: argparse.Namespace) -> int:
    from .transfer.sweep import load_plan, run_point

    result = run_point(load_plan(args.sweep_dir), args.index)
    print(json.dumps(result))
    return ExitCode.FAILED if result["status"] == "failed" else ExitCode.OK  # a diverged point is a result


@command("report", "optimum LR per width and horizon, drift across widths, the horizon fit, a verdict and plots",
         config=False,
         options=((("sweep_dirs",), {"nargs": "+", "metavar": "SWEEP_DIR", "help": "sweeps (a row of plots each)"}),
                  (("--json",), {"action": "store_true", "help": "print JSON instead of tables"}),
                  (("--plot",), {"help": "PNG path (default FIRST_SWEEP_DIR/loss_vs_lr.png)"}),
                  (("--target",), {"metavar": "CONFIG", "help": "also extrapolate to this config's token horizon "
                                                                "and list what apply-lr would refuse for it (a "
                                                                "file or a bundled config)"})))
def _report(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from .outputs import PNG, Kind, check_output, has_signature
    from .transfer.apply_lr import describe, review, summary
    from .transfer.report import extrapolation, report_sweeps
    from .transfer.report_plot import plot_reports
    from .transfer.report_text import format_report

    planned = report_sweeps(args.sweep_dirs)  # sweeps of one recipe merged: a (plan, report) pair per recipe
    reports = [report for _, report in planned]
    target = load_config(config_path(args.target)) if args.target else None
    tokens = target.training_tokens() if target is not None else None
    # the target's tokens per step where they are its own (not the GPU count's); unchecked here, apply-lr checks them
    batch = target and target.train.global_batch_size
    per_step = batch * target.data.seq_len if batch else None
    reviews = [review(plan, report, target) if target is not None else (None, None) for plan, report in planned]
    plot = check_output(Path(args.sweep_dirs[0]) / "loss_vs_lr.png" if args.plot is None else args.plot, "--plot",
                        Kind.FILE, "report", [("the sweep's", Path(sweep, name)) for sweep in args.sweep_dirs
                                              for name in ("plan.json", "config.yaml", "points")],
                        overwrite=True, owned=has_signature(PNG))  # redrawn by every report: any PNG may be
    plot_reports(reports, plot, tokens, [result and result.interval for result, _ in reviews], per_step)
    if args.json:
        dicts = [r.to_dict() for r in reports]
        if target is not None:
            for d, r, (result, problems) in zip(dicts, reports, reviews):
                d.update(target=extrapolation(r, tokens, tokens_per_step=per_step), transfer=result and summary(result),
                         before_apply=[asdict(p) for p in problems])
        print(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=2))
    else:
        texts = [format_report(r, tokens, None if problems is None else [p.detail for p in problems],
                               result and describe(result), per_step)
                 for r, (result, problems) in zip(reports, reviews)]
        print("\n\n".join(texts) + f"\nplot: {plot}")


@command("apply-lr", "write a sweep's transferred LR into a target config, deciding per axis (width, horizon, batch)",
         config=False,
         options=((("sweep_dir",), {"help": "the proxy sweep"}),
                  (("target",), {"help": "the target YAML config (edited in place)"}),
                  (("--force",), {"action": "store_true", "help": "apply even where transfer is unexpected (the "
                                                                  "note written names each check overridden)"}),
                  (("--max-interval",), {"type": _positive(float), "metavar": "LOG2",
                                         "help": "refuse a target whose 80%% prediction interval of log2 lr is wider "
                                                 "than this (high - low; default 1.0)"}),
                  (("--print",), {"action": "store_true", "dest": "print_only",
                                  "help": "print the override instead of editing the target"}),
                  (("--json",), {"action": "store_true",
                                 "help": "print {lr, log2_lr, interval_log2, case, problems} as JSON instead of "
                                         "text, also when refused; the target is written and the exit status set "
                                         "as without --json (with --print, nothing is written)"})))
def _apply_lr(args: argparse.Namespace) -> None:
    from .transfer.apply_lr import Refused, apply_lr, describe, summary

    limit = {} if args.max_interval is None else {"max_interval": args.max_interval}
    try:
        result = apply_lr(args.sweep_dir, args.target, force=args.force, write=not args.print_only, **limit)
    except Refused as refused:
        if args.json:  # the reasons as data, then the error line and its exit status as without --json
            print(json.dumps(summary(refused.result), indent=2))
        raise
    if args.json:
        print(json.dumps(summary(result), indent=2))
    elif args.print_only:
        print(f"{result.case}: {result.note}", file=sys.stderr)
        print(f"optim.lr={result.lr}")
    else:
        print(f"{args.target}: set {describe(result)}")


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
    from .export.hf import export_hf

    checkpoint = export_hf(Path(args.checkpoint), args.out, dtype=args.dtype,
                           max_shard_size=args.max_shard_size, overwrite=args.overwrite)
    print(f"{args.out}: LlamaForCausalLM ({args.dtype}) from {checkpoint}")


@command("gpu-check", "check and measure the GPU path in minutes: kernels vs references in bf16/fp16, kernel speed, "
         "training steps; JSON and markdown tables in OUT_DIR; exit 1 if any part fails or times out", config=False,
         options=((("out",), {"metavar": "OUT_DIR", "help": "where gpu_check.json and gpu_check.md go"}),
                  (("--dry-run",), {"action": "store_true",
                                    "help": "the same code paths on CPU at tiny shapes, kernels interpreted"}),
                  (("--overwrite",), {"action": "store_true", "help": "replace an earlier gpu-check's results in "
                                                                      "OUT_DIR"})))
def _gpu_check(args: argparse.Namespace) -> int:
    from .benchmarks.gpu_check import failed_parts, run_gpu_check

    out = Path(args.out)
    report = run_gpu_check(args.out, dry_run=args.dry_run, overwrite=args.overwrite)
    failed = failed_parts(report)  # the files hold every part, failed or not
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    if failed:  # last, so that a log's tail says what to look at
        print(f"{len(failed)} part(s) not ok: {', '.join(failed)}")
        return ExitCode.FAILED
    print("every part ok")
    return ExitCode.OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pretrain", description="μP LLM pretraining")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = f"a YAML config file, or the name of a bundled config: {', '.join(config_names())}"
    for name, fn in COMMANDS.items():
        p = sub.add_parser(name, help=fn.help, description=fn.help)
        if fn.takes_config:
            p.add_argument("config", help=config_help)
            p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
        for flags, kwargs in fn.options:
            p.add_argument(*flags, **kwargs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_known_args(argv[:cut])
    args.passthrough = argv[cut + 1:]
    if args.passthrough and not COMMANDS[args.command].passthrough:
        parser.error(f"{args.command} takes no arguments after --")
    if extra:  # overrides may also follow the options: `pretrain sweep CONFIG --widths 64,128 train.steps=50`
        if getattr(args, "overrides", None) is None or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    try:
        if COMMANDS[args.command].takes_config:
            args.config = str(config_path(args.config))
        return COMMANDS[args.command](args) or ExitCode.OK
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
