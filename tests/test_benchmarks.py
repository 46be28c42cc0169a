"""The benchmarks run and check what they compare (their figures are not asserted: CI times nothing)."""

import json

import pytest

from pretrain.errors import ExitCode


@pytest.mark.slow
def test_prepare_data_benchmark_runs_and_agrees_with_the_recipe(tmp_path, monkeypatch, capsys):
    """The benchmark's own check: our rows equal those of the run_clm.py recipe (it exits otherwise)."""
    from pretrain.benchmarks import prepare_data as benchmark

    monkeypatch.chdir(tmp_path)  # the config caches under ./data_cache
    (tmp_path / "data.yaml").write_text("data:\n  val_fraction: 0.2\n")  # 30 documents: some held out
    benchmark.main(["--config", "data.yaml", "--max-documents", "30", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "packed rows identical: yes" in out and "tiktoken" in out.splitlines()[-1]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_part_and_keeps_going_past_a_failure(tmp_path, monkeypatch, capsys):
    """The whole command on CPU (kernels interpreted), with one part given too little time: that part is
    recorded as timed out, every other part still runs, the JSON and markdown hold all of them, and the command
    names the part last and exits 1."""
    from pretrain.benchmarks import gpu_check
    from pretrain.cli import main

    monkeypatch.setitem(gpu_check.PARTS, "bench-10b", 1)
    assert main(["gpu-check", str(tmp_path), "--dry-run"]) == ExitCode.FAILED
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["environment"]["dry_run"] and report["environment"]["triton"]
    parts = report["parts"]
    assert list(parts) == list(gpu_check.PARTS)
    assert parts["bench-10b"]["status"].startswith("timed out after 1 s")
    assert all(p["status"] == "ok" for name, p in parts.items() if name != "bench-10b"), parts
    kernel_rows = parts["kernels-bf16"]["rows"] + parts["kernels-fp16"]["rows"]
    assert {r["dtype"] for r in kernel_rows} == {"bfloat16", "float16"} and all(r["ok"] for r in kernel_rows)
    assert {r["op"] for r in kernel_rows} >= {"rms_norm", "swiglu", "attention", "attention (GQA, ragged)"}
    impls = {(r["op"], r["impl"]) for r in parts["bench-1b"]["rows"] if r["error"] is None}
    assert impls == {(op, impl) for op in ("attention",) for impl in ("triton", "sdpa-flash", "eager", "compile")} | {
        (op, impl) for op in ("rms_norm", "swiglu") for impl in ("triton", "eager", "compile")}
    (on,), (off,) = parts["train-kernels"]["rows"], parts["train-torch"]["rows"]
    assert on["kernels"] and not off["kernels"] and on["tokens_per_s"] > 0 and off["peak_memory_gib"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    for heading in ("| part | status | seconds |", "| op | dtype | shape | max error |", "| op | model | shape | impl",
                    "| model | kernels | precision | batch |"):
        assert heading in table
    assert "bench-10b | timed out" in table
    assert capsys.readouterr().out.splitlines()[-1] == "1 part(s) not ok: bench-10b"


@pytest.mark.parametrize("statuses, code, last_line", [
    ({}, ExitCode.OK, "every part ok"),
    ({"kernels-fp16": "failed: AssertionError", "train-torch": "timed out after 70 s (rows so far kept)"},
     ExitCode.FAILED, "2 part(s) not ok: kernels-fp16, train-torch"),
], ids=["every part ok", "two parts not ok"])
def test_gpu_check_exits_0_only_when_every_part_is_ok(tmp_path, monkeypatch, capsys, statuses, code, last_line):
    """The exit decision without running the parts (the slow test above runs them): each part's status is
    given, the files are still written whole, and failing parts are named on the last line."""
    from pretrain.benchmarks import gpu_check
    from pretrain.cli import main

    monkeypatch.setattr(gpu_check, "_run_part", lambda part, seconds, out, dry_run: {
        "status": statuses.get(part, "ok"), "seconds": 0.0, "rows": []})
    assert main(["gpu-check", str(tmp_path), "--dry-run"]) == code
    parts = json.loads((tmp_path / "gpu_check.json").read_text())["parts"]
    assert {name: p["status"] for name, p in parts.items()} == {name: statuses.get(name, "ok")
                                                                for name in gpu_check.PARTS}
    assert (tmp_path / "gpu_check.md").exists()
    assert capsys.readouterr().out.splitlines()[-1] == last_line
