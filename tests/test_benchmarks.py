"""The benchmarks run and check what they compare (their figures are not asserted: CI times nothing)."""

import pytest


@pytest.mark.slow
def test_prepare_data_benchmark_runs_and_agrees_with_the_recipe(tmp_path, monkeypatch, capsys):
    """The benchmark's own check: our rows equal those of the run_clm.py recipe (it exits otherwise)."""
    from pretrain.benchmarks import prepare_data as benchmark

    monkeypatch.chdir(tmp_path)  # the default data config caches under ./data_cache
    benchmark.main(["--config", "none.yaml", "--max-documents", "30", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "packed rows identical: yes" in out and "tiktoken" in out.splitlines()[-1]
