"""The architecture as rules: imports only go down the workflow, each subpackage says what it owns, the README's
config table is the config's own, and the code stands alone."""

import ast
import re
from pathlib import Path

import pytest

from pretrain.config import reference_table
from tests.helpers import ROOT

PACKAGE = ROOT / "pretrain"
# Lower ranks are imported by higher ones, never the other way; packages of equal rank ignore each other.
RANKS = {
    "pretrain.errors": 0, "pretrain.fileio": 0, "pretrain.progress": 0, "pretrain.locks": 0,
    "pretrain.config": 1, "pretrain.bundled": 1, "pretrain.outputs": 1,
    "pretrain.data": 2, "pretrain.model": 2,
    "pretrain.training": 3,
    "pretrain.transfer": 4, "pretrain.export": 4,
    "pretrain.tools": 5,
    "pretrain.benchmarks": 6, "pretrain": 6,
    "pretrain.cli": 7,
    "pretrain.__main__": 8,
}
SUBPACKAGES = ("config", "data", "model", "training", "transfer", "export", "tools")
# Inside pretrain.config: the declaration engine knows no section, the sections know no file, and reading YAML and
# writing the reference table sit on top.
CONFIG_MODULES = {"checking": 0, "schema": 1, "loading": 2, "reference": 2, "__init__": 3, "__main__": 4}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def component(module: str) -> str:
    """The entry of RANKS a module belongs to: its subpackage, or the module itself at the top."""
    parts = module.split(".")
    for length in (2, 1):
        if ".".join(parts[:length]) in RANKS:
            return ".".join(parts[:length])
    raise KeyError(f"{module} belongs to no layer: add it to RANKS")


def imports(path: Path) -> set[str]:
    """Every module of this project that `path` imports, at any depth of the file (lazy imports count)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}  # `from . import mup`
    return {name for name in found if name.split(".")[0] in ("pretrain", "pretrain_kernels")}


def test_imports_only_go_down():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = component(module_name(path))
        for target in imports(path):
            if target.startswith("pretrain_kernels"):
                if RANKS[source] < RANKS["pretrain.model"]:
                    violations.append(f"{module_name(path)} imports {target} (kernels are the model's)")
                continue
            try:
                dest = component(target)
            except KeyError:
                continue  # `from pretrain.data import shards` also yields the name pretrain.data.shards.shards
            if dest != source and RANKS[dest] >= RANKS[source]:
                violations.append(f"{module_name(path)} ({source}) imports {target} ({dest})")
    assert not violations, "\n".join(violations)


def test_config_modules_import_only_down():
    for path in sorted((PACKAGE / "config").glob("*.py")):
        rank = CONFIG_MODULES[path.stem]
        for target in imports(path):
            parts = target.split(".")
            if parts[:2] == ["pretrain", "config"] and len(parts) > 2 and parts[2] in CONFIG_MODULES:
                assert CONFIG_MODULES[parts[2]] < rank, f"config/{path.name} imports {target}"


def test_kernels_do_not_import_the_stack():
    for path in sorted((ROOT / "kernels").rglob("*.py")):
        assert not any(name.split(".")[0] == "pretrain" for name in imports(path)), path


def external_modules(path: Path) -> set[str]:
    """Every absolute module name `path` imports, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return found


def test_kernel_ops_import_only_what_runs():
    """The ops import torch, their launch data and the dispatch rule; `triton` comes through `_dispatch` (the
    first to import it), and nothing in the package compiles or inspects binaries (tests/launch_inspection.py)."""
    for path in sorted((ROOT / "kernels").glob("*.py")):
        modules = external_modules(path)
        assert not {m for m in modules if m.split(".")[0] in {"subprocess", "tempfile", "importlib", "json"}}, path
        if path.name != "_dispatch.py":
            assert not {m for m in modules if m.split(".")[0] == "triton"}, f"{path.name} imports triton itself"


def test_the_import_check_catches_an_upward_import(tmp_path):
    """The rule above is not vacuous: a data module importing training is reported."""
    bad = PACKAGE / "data" / "_upward_probe.py"
    bad.write_text("from ..training import trainer\n")
    try:
        with pytest.raises(AssertionError, match="pretrain.data._upward_probe"):
            test_imports_only_go_down()
    finally:
        bad.unlink()


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_says_what_it_owns_and_may_import(name):
    doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
    assert doc and "May import" in doc
    for module in (PACKAGE / name).glob("[!_]*.py"):  # every module is listed
        assert f"`{module.stem}`" in doc, f"pretrain/{name}/__init__.py does not mention {module.stem}"


def test_only_data_layout_names_the_prepared_files_or_reads_and_writes_their_json():
    """The manifest, the slice statistics and the revision record are read and written through the one schema
    of `data/layout.py`: no other data module names their files or reads or writes a JSON file; and the writer
    (`shards`) does not import the reader (`prepared`)."""
    owned = ("manifest.json", "stats.json", "revision.json", "write_json", "read_json_object")
    json_file = re.compile(r"json\.(?:load|dump)\(|json\.loads\(.*read_text")  # JSON from or to a file
    assert all(name in (PACKAGE / "data" / "layout.py").read_text() for name in owned)  # the scan is not vacuous
    for path in sorted((PACKAGE / "data").glob("*.py")):
        if path.name != "layout.py":
            text = path.read_text()
            found = [name for name in owned if name in text] + json_file.findall(text)
            assert not found, f"data/{path.name} handles {found}: only data/layout.py may"
    assert "pretrain.data.prepared" not in imports(PACKAGE / "data" / "shards.py")


# Test files named after a concern that spans modules rather than after one module.
CROSS_CUTTING_TESTS = {"fuzz", "layout", "packaging", "kernels_model", "kernels_launch", "transfer_ablations"}


def test_each_test_file_is_named_after_what_it_tests():
    """tests/test_<package>_<module>.py or test_<package>.py (or a top-level module, or kernels), else a
    cross-cutting concern listed above: the README's description of the tests holds."""
    modules = {module_name(p).removeprefix("pretrain.").replace(".", "_") for p in PACKAGE.rglob("*.py")}
    modules |= {"kernels"}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        name = path.stem.removeprefix("test_")
        assert name in modules or name in CROSS_CUTTING_TESTS, f"{path.name} tests no module of that name"


def test_readme_config_table_is_generated_from_the_declarations():
    readme = (ROOT / "README.md").read_text()
    assert reference_table() in readme, "the README's config table is stale: paste `python -m pretrain.config`"


def test_no_code_cites_a_document_outside_the_repository():
    files = [p for folder in ("pretrain", "kernels", "tests", "slurm", "scripts", "configs")
             for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".sh", ".sbatch", ".yaml")
             and p != Path(__file__)]
    cited = [str(p.relative_to(ROOT)) for p in files if re.search(r"DESIGN\b|shared/", p.read_text())]
    assert not cited, cited


ADAPTERS = {"deepspeed": {"training/engine.py", "training/deepspeed_compat.py"}, "wandb": {"training/tracking.py"},
            "huggingface_hub": {"data/hub.py", "export/hf.py"}}


def external_imports(path: Path) -> set[str]:
    return {module.split(".")[0] for module in external_modules(path)}


def test_each_external_engine_is_reached_through_its_one_adapter():
    """DeepSpeed, W&B and the hub are imported by their adapter module only; nothing outside the DeepSpeed
    adapter reaches into the engine it wraps; only the Slurm adapter runs sbatch."""
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        for engine, homes in ADAPTERS.items():
            if engine in external_imports(path):
                assert relative in homes, f"{relative} imports {engine}, which only {sorted(homes)} may"
        text = path.read_text()
        if relative != "training/engine.py":
            assert "._engine" not in text, f"{relative} reaches into the DeepSpeed engine"
        if relative != "tools/slurm.py":
            assert '"sbatch"' not in text, f"{relative} runs sbatch"
