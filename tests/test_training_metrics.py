"""Metric loggers and MFU; metrics.jsonl read back after a crash."""

import pytest
import torch

from pretrain.errors import DataError
from pretrain.training.metrics import JsonlLogger, mfu, peak_flops, read_metrics


def test_mfu_needs_a_known_peak():
    assert peak_flops(torch.device("cpu"), None) is None
    assert peak_flops(torch.device("cpu"), 1e12) == 1e12
    assert mfu(flops_per_token=6e9, tokens_per_s=1e5, world_size=2, peak=1e15) == pytest.approx(0.3)


def test_a_line_cut_short_by_a_crash_is_dropped_with_a_note_and_then_rewritten_away(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 5.0}\n{"step": 2, "loss": 4.9}\n{"step": 3, "lo')
    assert read_metrics(path) == [{"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.9}]
    assert f"note: {path}: ignoring its last line, cut short" in capsys.readouterr().err
    JsonlLogger(path, resume_step=2).close()  # a resumed run: the torn line is gone before it appends
    assert path.read_text() == '{"step": 1, "loss": 5.0}\n{"step": 2, "loss": 4.9}\n'


@pytest.mark.parametrize("text, line", [
    ('{"step": 1, "loss": 5.0}\n{"step": 2, "lo\n{"step": 3, "loss": 4.8}\n', 2),  # torn, then appended to
    ('{"step": 1, "loss": 5.0}\n{"step": 2, "lo\n', 2),  # a complete line, newline and all: not torn
    ('{"step": 1, "loss": 5.0}\n{"step": 2}', 2),  # valid JSON, but no record
    ('[1, 5.0]\n{"step": 2, "loss": 4.9}\n', 1),
    ('{"step": true, "loss": 5.0}\n', 1),
])
def test_any_other_bad_line_is_an_error_naming_the_file_and_line(tmp_path, text, line):
    path = tmp_path / "metrics.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=f"{path}: line {line} is not a metrics record"):
        read_metrics(path)


def test_an_undecodable_file_is_a_data_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(DataError, match="metrics.jsonl: unreadable"):
        read_metrics(tmp_path / "metrics.jsonl")
