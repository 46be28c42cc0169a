import io
import os

from pretrain.progress import LOG_REFRESH_SECONDS, progress_bar


def test_a_bar_written_to_a_log_is_ascii_and_redrawn_rarely():
    log = io.StringIO()
    with progress_bar(total=8, desc="train", file=log) as bar:
        for _ in range(8):
            bar.set_postfix({"lr(base)": "1.00e-03"}, refresh=False)  # as the trainer does
            bar.update(1)
    text = log.getvalue()
    assert text.isascii() and "8/8" in text and "lr(base)=1.00e-03" in text
    assert bar.mininterval == LOG_REFRESH_SECONDS
    assert text.count("\r") <= 3  # the first draw, the last and the close, not one per step


def test_a_bar_on_a_terminal_keeps_its_glyphs():
    leader, follower = os.openpty()
    with open(follower, "w", encoding="utf-8") as terminal, progress_bar(total=2, file=terminal) as bar:
        bar.update(2)
    assert "█".encode() in os.read(leader, 4096)
    os.close(leader)
