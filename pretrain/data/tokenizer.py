"""The tokenizer: a byte-level BPE trained on the corpus (cached), or a tokenizer.json brought along.

`data.tokenizer: bpe` trains a byte-level BPE on the train documents with `<|endoftext|>` as its only special
token, cached apart from the shards (a new seq_len reuses it). A local tokenizer.json (or a directory holding
one) must fit `data.vocab_size` and have an end-of-document token.
"""

from __future__ import annotations

import hashlib
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..config import DataConfig
from ..errors import ConfigError
from .cache import FORMAT_VERSION, build_once
from .sources import DOCS_PER_BATCH, TRAIN, fingerprint, load_corpus, resolve_source, split_documents

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
EOS_CANDIDATES = (EOS_TOKEN, "</s>", "<|end_of_text|>", "<eos>")  # recognised in a tokenizer brought along


def prepare_tokenizer(cfg: DataConfig, progress: bool = True) -> Path:
    """The tokenizer.json for `data.tokenizer`: a local file, or a BPE trained on the corpus (and cached)."""
    if cfg.tokenizer != "bpe":
        return local_tokenizer(cfg.tokenizer)
    source = resolve_source(cfg)
    key = fingerprint([FORMAT_VERSION, source.identity, cfg.vocab_size, cfg.max_documents, cfg.val_fraction])
    target = Path(cfg.cache_dir) / f"tokenizer-bpe{cfg.vocab_size}-{key}"
    build_once(target, lambda staged: _train_bpe(cfg, staged / "tokenizer.json", progress))
    return target / "tokenizer.json"


def tokenizer_identity(cfg: DataConfig) -> object:
    """What the tokenizer of `cfg` depends on, for cache keys: a trained BPE is a pure function of the source,
    vocab_size, max_documents and val_fraction; a local one is its file's bytes."""
    if cfg.tokenizer == "bpe":
        return ["bpe", cfg.vocab_size]
    return hashlib.sha256(local_tokenizer(cfg.tokenizer).read_bytes()).hexdigest()


def hf_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """The tokenizer as a `transformers.PreTrainedTokenizerFast` with its EOS set (`save_pretrained` it)."""
    from transformers import PreTrainedTokenizerFast

    eos = eos_token(Tokenizer.from_file(str(path)))
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=eos)


def _train_bpe(cfg: DataConfig, out: Path, progress: bool) -> None:
    corpus = load_corpus(cfg)
    codes = split_documents(corpus, cfg.val_fraction)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # all 256 bytes: any text encodes, nothing is unknown
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, special_tokens=[EOS_TOKEN],
                                  initial_alphabet=alphabet, show_progress=progress)
    texts = chain.from_iterable(corpus.batches(DOCS_PER_BATCH))
    train_texts = (text for text, code in zip(texts, codes) if code == TRAIN)
    tokenizer.train_from_iterator(train_texts, trainer, length=int((codes == TRAIN).sum()))
    tokenizer.save(str(out))


def local_tokenizer(spec: str) -> Path:
    path = Path(spec).expanduser()
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"data.tokenizer: no tokenizer.json at '{spec}'; use 'bpe' to train one, "
                          "or a tokenizer.json file or a directory holding one")
    return path


def load_tokenizer(path: Path, cfg: DataConfig) -> tuple[Tokenizer, int]:
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 -- the Rust side raises a bare Exception for a malformed file
        raise ConfigError(f"data.tokenizer: cannot load {path} ({err})") from None
    check_fits(id_count(tokenizer), cfg, path)
    tokenizer.no_truncation()  # a tokenizer.json may carry a model's input limits: documents are packed whole
    tokenizer.no_padding()
    return tokenizer, tokenizer.token_to_id(eos_token(tokenizer))


def id_count(tokenizer: Tokenizer) -> int:
    """Ids in use (the largest id + 1: added tokens may sit past the base vocabulary)."""
    return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def check_fits(n_ids: int, cfg: DataConfig, path: Path) -> None:
    if n_ids > cfg.vocab_size:
        raise ConfigError(f"data.vocab_size={cfg.vocab_size} is smaller than the {n_ids} token ids of "
                          f"{path}; set data.vocab_size to at least {n_ids}")


def eos_token(tokenizer: Tokenizer) -> str:
    for token in EOS_CANDIDATES:
        if tokenizer.token_to_id(token) is not None:
            return token
    raise ConfigError(f"data.tokenizer: no end-of-document token in the tokenizer; "
                      f"expected one of {', '.join(EOS_CANDIDATES)}")
