"""The tokenizer: a byte-level BPE trained on a sample of the corpus (cached), or a tokenizer.json brought along.

`data.tokenizer: bpe` trains a byte-level BPE with `<|endoftext|>` as its only special token on a deterministic
sample of the train documents: `data.tokenizer_sample` bytes, shared among the sources by weight and, within a
source, evenly among its slices (each slice gives its first documents), so the sample spans the corpus without
reading all of it. It is cached apart from the prepared data (a new seq_len reuses it). A local tokenizer.json
(or a directory holding one) must fit `data.vocab_size` and have an end-of-document token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..config import DataConfig
from ..errors import ConfigError
from .layout import bpe_path, build_once
from .sources import TRAIN, BadRecords, SourcePlan, documents, split_of

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
EOS_CANDIDATES = (EOS_TOKEN, "</s>", "<|end_of_text|>", "<eos>")  # recognised in a tokenizer brought along


def tokenizer_path(cfg: DataConfig, plans: list[SourcePlan]) -> Path:
    """Where the tokenizer.json of `cfg` is: a local file, or the cached BPE (which may not exist yet)."""
    return bpe_path(cfg, plans) if cfg.tokenizer == "bpe" else local_tokenizer(cfg.tokenizer)


def prepare_tokenizer(cfg: DataConfig, plans: list[SourcePlan], progress: bool = True) -> Path:
    """The tokenizer.json for `data.tokenizer`: a local file, or a BPE trained on a sample (and cached)."""
    path = tokenizer_path(cfg, plans)
    if cfg.tokenizer == "bpe":
        build_once(path.parent, lambda staged: _train_bpe(cfg, plans, staged / path.name, progress))
    return path


def hf_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """The tokenizer as a `transformers.PreTrainedTokenizerFast` with its EOS set (`save_pretrained` it)."""
    from transformers import PreTrainedTokenizerFast

    eos = eos_token(Tokenizer.from_file(str(path)))
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=eos)


def sample_texts(cfg: DataConfig, plans: list[SourcePlan]) -> Iterator[str]:
    """The BPE's training sample (see the module docstring): train documents only, in a fixed order."""
    total_weight = sum(p.weight for p in plans)
    bad = BadRecords() if cfg.skip_bad_records else None
    for plan in plans:
        per_slice = cfg.tokenizer_sample * plan.weight / total_weight / len(plan.source.slices)
        for piece, limit in zip(plan.source.slices, plan.limits):
            taken = 0
            for text in documents(plan.source, piece, limit, bad):
                if taken >= per_slice:
                    break
                if split_of(text, cfg.val_fraction) == TRAIN:
                    taken += len(text.encode("utf-8", "replace"))
                    yield text


def _train_bpe(cfg: DataConfig, plans: list[SourcePlan], out: Path, progress: bool) -> None:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # all 256 bytes: any text encodes, nothing is unknown
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, special_tokens=[EOS_TOKEN],
                                  initial_alphabet=alphabet, show_progress=progress)
    tokenizer.train_from_iterator(sample_texts(cfg, plans), trainer)
    tokenizer.save(str(out))


def local_tokenizer(spec: str) -> Path:
    path = Path(spec).expanduser()
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"data.tokenizer: no tokenizer.json at '{spec}'; use 'bpe' to train one, "
                          "or a tokenizer.json file or a directory holding one")
    return path


def read_tokenizer(path: Path, error: Callable[[str], Exception]) -> Tokenizer:
    """The tokenizer.json at `path`; one that does not load raises `error(reason)`."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 -- the Rust side raises a bare Exception for a malformed file
        raise error(str(err).splitlines()[0] if str(err) else repr(err)) from None


def load_tokenizer(path: Path, vocab_size: int) -> tuple[Tokenizer, int]:
    """The tokenizer to encode with, and its EOS id; it must fit `data.vocab_size`."""
    tokenizer = read_tokenizer(path, lambda reason: ConfigError(f"data.tokenizer: cannot load {path} ({reason})"))
    check_fits(id_count(tokenizer), vocab_size, path)
    tokenizer.no_truncation()  # a tokenizer.json may carry a model's input limits: documents are packed whole
    tokenizer.no_padding()
    return tokenizer, tokenizer.token_to_id(eos_token(tokenizer))


def id_count(tokenizer: Tokenizer) -> int:
    """Ids in use (the largest id + 1: added tokens may sit past the base vocabulary)."""
    return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def check_fits(n_ids: int, vocab_size: int, path: Path) -> None:
    if n_ids > vocab_size:
        raise ConfigError(f"data.vocab_size={vocab_size} is smaller than the {n_ids} token ids of "
                          f"{path}; set data.vocab_size to at least {n_ids}")


def eos_token(tokenizer: Tokenizer) -> str:
    for token in EOS_CANDIDATES:
        if tokenizer.token_to_id(token) is not None:
            return token
    raise ConfigError(f"data.tokenizer: no end-of-document token in the tokenizer; "
                      f"expected one of {', '.join(EOS_CANDIDATES)}")
