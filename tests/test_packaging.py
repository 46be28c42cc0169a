"""Packaging: import names nobody else owns, every import declared and bounded, the lock in step with setup.py,
and a built wheel that works from an empty directory beside Hugging Face's `kernels` package."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import distribution, packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers import ROOT, pretrain

OURS = "pretrain"


def import_name_clashes(owners: dict[str, list[str]]) -> dict[str, list[str]]:
    """Our top-level import names that another installed distribution provides too."""
    distinct = {name: sorted({canonicalize_name(d) for d in dists}) for name, dists in owners.items()}
    return {name: dists for name, dists in distinct.items() if OURS in dists and len(dists) > 1}


def test_no_other_distribution_provides_our_import_names():
    owners = packages_distributions()
    assert {name for name, dists in owners.items() if OURS in dists} >= {"pretrain", "pretrain_kernels"}
    assert import_name_clashes(owners) == {}


def test_the_checkout_does_not_shadow_an_installed_kernels_package(tmp_path):
    """With the repository root first on sys.path (`python -m ...` run there), `import kernels` is still the
    installed package of that name (Hugging Face's, which transformers imports): kernels/ has no __init__.py, and
    a namespace folder never wins over a regular package. A stand-in package plays the installed one."""
    assert not (ROOT / "kernels" / "__init__.py").exists()
    installed = tmp_path / "kernels"
    installed.mkdir()
    (installed / "__init__.py").write_text("OWNER = 'the installed package'\n")
    found = _run(sys.executable, "-c", "import kernels; print(kernels.OWNER)", cwd=ROOT,
                 env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert found.strip() == "the installed package"


def test_the_clash_check_sees_a_clash(tmp_path, monkeypatch):
    """A distribution that also installs `pretrain_kernels` is reported (the check above is not vacuous)."""
    info = tmp_path / "intruder-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: intruder\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("pretrain_kernels\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_name_clashes(packages_distributions()) == {"pretrain_kernels": ["intruder", OURS]}


def declared() -> dict[str, Requirement]:
    """Our requirements by canonical name, the dev extra's included."""
    reqs = [Requirement(r) for r in requires(OURS) or ()]
    return {canonicalize_name(r.name): r for r in reqs}


def third_party_imports(folder: Path) -> set[str]:
    """Top-level names of the modules `folder`'s code imports, other than the standard library and ours."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    local = {"pretrain", "pretrain_kernels", "tests", "__future__", *(p.stem for p in folder.glob("*.py"))}
    return {n for n in names if n not in sys.stdlib_module_names and n not in local}


@pytest.mark.parametrize("folder", ["pretrain", "kernels", "tests", "scripts"])
def test_every_imported_package_is_declared(folder):
    owners, requirements = packages_distributions(), declared()
    for name in sorted(third_party_imports(ROOT / folder)):
        dists = {canonicalize_name(d) for d in owners.get(name, [])}
        assert dists & set(requirements), f"{folder}/ imports {name} (from {sorted(dists) or 'nothing installed'}), " \
                                          "which setup.py does not declare"


def pins(path: Path) -> dict[str, Version]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    reqs = [Requirement(line) for line in lines if line]
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in reqs), path
    return {canonicalize_name(r.name): Version(next(iter(r.specifier)).version) for r in reqs}


def test_the_lock_pins_every_requirement_within_its_bounds():
    locked = pins(ROOT / "constraints.txt")
    for name, requirement in declared().items():
        assert name in locked, f"constraints.txt does not pin {name}"
        assert requirement.specifier.contains(locked[name], prereleases=True), \
            f"constraints.txt pins {name}=={locked[name]}, outside setup.py's {requirement.specifier}"


def test_each_floor_is_the_version_of_the_floor_lock():
    """setup.py's lower bounds are exactly the versions constraints-floor.txt pins, which the suite passed with
    (`PRETRAIN_CONSTRAINTS=constraints-floor.txt bash scripts/test.sh`)."""
    floors = pins(ROOT / "constraints-floor.txt")
    for name, requirement in declared().items():
        if requirement.marker is not None:  # the dev extra: tools, not bounds users install against
            continue
        lower = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert lower == [floors[name]], f"{name}: setup.py says {requirement.specifier}, the floor lock " \
                                        f"{floors.get(name)}"


def test_this_environment_is_the_locked_one():
    """What scripts/test.sh installed is what constraints.txt pins (a resolver that drifted fails here)."""
    drift = {}
    for name, version in pins(ROOT / "constraints.txt").items():
        try:
            installed = Version(distribution(name).version)
        except Exception:  # noqa: BLE001 -- PackageNotFoundError: pinned for another platform or extra
            continue
        if Version(installed.base_version) != version and installed != version:
            drift[name] = f"{installed} installed, {version} locked"
    if os.environ.get("PRETRAIN_CONSTRAINTS", "constraints.txt") != "constraints.txt":
        pytest.skip("installed from another constraints file on purpose (PRETRAIN_CONSTRAINTS)")
    assert drift == {}


def _run(*command: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> str:
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}" \
                                 f"\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A new virtualenv holding our built wheel and Hugging Face's `kernels`, nothing else of its own. The other
    dependencies are this environment's, seen through a .pth line (a plain directory on sys.path: no editable
    finder of this checkout comes with it), which spares a second install of torch and DeepSpeed."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # what git tracks, so that no earlier build/ or local file slips into the wheel
    for name in _run("git", "ls-files", cwd=ROOT).splitlines():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp),
         str(source), cwd=tmp)
    (wheel,) = tmp.glob("pretrain-*.whl")
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", str(venv), cwd=tmp)
    python = str(venv / "bin" / "python")
    # Hugging Face's kernels at this environment's version, or where it has none (transformers below 5.25 does not
    # require it), at the version the constraints pin for it: newer ones need a newer huggingface_hub
    constraints = os.environ.get("PRETRAIN_CONSTRAINTS", "constraints.txt")
    pin = ["--constraint", str(ROOT / constraints)] if constraints else []
    kernels = f"kernels=={distribution('kernels').version}" if _installed("kernels") else "kernels"
    _run(python, "-m", "pip", "install", "--quiet", "--no-deps", *pin, str(wheel), kernels, cwd=tmp)
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _installed(name: str) -> bool:
    try:
        distribution(name)
        return True
    except Exception:  # noqa: BLE001 -- PackageNotFoundError
        return False


def _outside_env(venv: Path, empty: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PATH": f"{empty / 'bin'}:{venv / 'bin'}:{env['PATH']}", "OMP_NUM_THREADS": "1",
            "WANDB_MODE": "disabled"}


@pytest.mark.slow
def test_the_wheel_works_outside_the_checkout_beside_hugging_face_kernels(wheel_venv, tmp_path):
    python = str(wheel_venv / "bin" / "python")
    (tmp_path / "bin").mkdir()
    env = _outside_env(wheel_venv, tmp_path)
    where = _run(python, "-c", "import kernels, pretrain, pretrain_kernels.rms_norm as op; print(kernels.__file__);"
                 " print(pretrain.__file__); print(op.__file__); print(hasattr(kernels, 'get_kernel'))",
                 cwd=tmp_path, env=env).split()
    site = str(wheel_venv)
    assert all(path.startswith(site) for path in where[:3]), where  # all three from the new venv, none from here
    assert where[0].endswith("site-packages/kernels/__init__.py") and where[3] == "True"  # Hugging Face's
    assert where[2].endswith("site-packages/pretrain_kernels/rms_norm.py")

    help_text = _run("pretrain", "train", "--help", cwd=tmp_path, env=env)
    assert "tiny" in help_text and "ablations/mqa" in help_text
    # the measured ablation table that apply-lr cites, and the seed-noise prior of its intervals, ship as package data
    table = _run(python, "-c", "from pretrain.transfer.paper_table import RESULTS; print(RESULTS.is_file(), RESULTS)",
                 cwd=tmp_path, env=env).split()
    assert table[0] == "True" and table[1].startswith(site), table
    prior = _run(python, "-c", "from pretrain.transfer.apply_lr import SEED_NOISE, seed_noise; "
                 "print(seed_noise() is not None, SEED_NOISE)", cwd=tmp_path, env=env).split()
    assert prior[0] == "True" and prior[1].startswith(site), prior

    small = ["data.max_documents=40", "data.vocab_size=512", "data.seq_len=32", "model.d_model=64",
             "model.n_layers=2", "model.head_dim=16", "train.steps=4", "train.eval_every=2", "train.eval_batches=1",
             "train.micro_batch_size=4", "optim.warmup_steps=1"]
    out = _run("pretrain", "prepare-data", "tiny", *small, cwd=tmp_path, env=env)
    assert "train" in out and (tmp_path / "data_cache").is_dir()
    out = _run("pretrain", "train", "tiny", *small, cwd=tmp_path, env=env)
    assert "eval loss" in out and (tmp_path / "runs" / "tiny" / "metrics.jsonl").is_file()

    # sbatch, up to the call: what it is handed is the shipped script, inside the new venv
    calls = tmp_path / "sbatch.args"
    (tmp_path / "bin" / "sbatch").write_text(f'#!/bin/sh\necho "$@" > {calls}\necho 4242\n')
    (tmp_path / "bin" / "sbatch").chmod(0o755)
    out = _run("pretrain", "submit", "tiny", *small, cwd=tmp_path, env=env)
    assert "submitted job 4242" in out
    script = next(arg for arg in calls.read_text().split() if arg.endswith(".sbatch"))
    assert script.startswith(site) and script.endswith("pretrain/slurm/train.sbatch") and Path(script).is_file()
    config = calls.read_text().split()[calls.read_text().split().index(script) + 1]
    assert config.startswith(site) and config.endswith("pretrain/configs/tiny.yaml")


@pytest.mark.slow
def test_gpu_check_dry_run_works_from_the_wheel(wheel_venv, tmp_path):
    (tmp_path / "bin").mkdir()
    out = _run("pretrain", "gpu-check", "out", "--dry-run", cwd=tmp_path, env=_outside_env(wheel_venv, tmp_path))
    assert (tmp_path / "out" / "gpu_check.json").is_file() and "wrote" in out


def test_a_config_that_is_neither_a_file_nor_bundled_is_one_error_line():
    proc = pretrain("train", "no-such-config", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: config file not found: no-such-config (not a file, nor a bundled config: ")
    assert "tiny" in proc.stderr and "ablations/mqa" in proc.stderr
