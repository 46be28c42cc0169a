"""The tiktoken twin of a BPE tokenizer: the same ids wherever it is used, refused where it could differ."""

import json
import unicodedata
from dataclasses import replace

import numpy as np
import pytest
import tiktoken
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from pretrain.config import DataConfig
from pretrain.data.encoder import GPT2_PATTERN, byte_level_alphabet, document_encoder, tiktoken_twin
from pretrain.data.prepared import prepare_data
from pretrain.data.sources import TRAIN, plan_sources, source_documents, split_of
from pretrain.data.tokenizer import EOS_TOKEN, prepare_tokenizer

SURROGATES = range(0xD800, 0xE000)  # not characters: no Python text holds them after decoding


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory):
    return DataConfig(cache_dir=str(tmp_path_factory.mktemp("cache")), max_documents=60, vocab_size=1024,
                      seq_len=32)


@pytest.fixture(scope="module")
def bpe(data_cfg):
    """A byte-level BPE trained by `tokenizers` on part of the embedded corpus, as `data.tokenizer: bpe` does."""
    return Tokenizer.from_file(str(prepare_tokenizer(data_cfg, plan_sources(data_cfg), progress=False)))


def _ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts)]


def test_twin_matches_on_every_character(bpe):
    """Every assigned Unicode character, and every 64th unassigned or private-use code point, in contexts that
    exercise each branch of the pre-tokenizer's regex (letters, digits, punctuation, contractions, whitespace
    before text and at the end), gets the same ids."""
    twin = tiktoken_twin(bpe)
    assert twin is not None
    chars = [chr(c) for c in range(0x110000) if c not in SURROGATES
             and (unicodedata.category(chr(c)) not in ("Cn", "Co") or c % 64 == 0)]
    texts = ["".join(f"a{c}b {c}1 {c}{c}  {c}\n'{c}'s\t{c} " for c in chars[i:i + 256])
             for i in range(0, len(chars), 256)]
    expected = _ids(bpe, texts)
    assert twin.encode_batch(texts, allowed_special="all") == expected


def test_twin_matches_on_documents_and_added_tokens(bpe, data_cfg):
    """Corpus documents, and text holding the EOS token itself (both encoders make it the EOS id)."""
    texts = [t for t in source_documents(plan_sources(data_cfg)[0]) if t]
    texts += [f"x = 1{EOS_TOKEN}def f():\n    return 'it''s'  \n\n", f"{EOS_TOKEN}{EOS_TOKEN} <|endoftext| |>",
              "naïve café — 東京 🙂 ٣٤ 𝔘𝔫𝔦 \r\n\u00a0\u2028end", ""]
    encoder = document_encoder(bpe, threads=2)
    assert encoder.name == "tiktoken"
    assert encoder.encode_batch(texts) == _ids(bpe, texts)
    assert bpe.token_to_id(EOS_TOKEN) in encoder.encode_batch(texts[-4:-3])[0]


def _change(tokenizer: Tokenizer, change) -> Tokenizer:
    spec = json.loads(tokenizer.to_str())
    change(spec)
    return Tokenizer.from_str(json.dumps(spec))


@pytest.mark.parametrize("change", [
    lambda s: s.update(normalizer={"type": "NFKC"}),
    lambda s: s["pre_tokenizer"].update(add_prefix_space=True),
    lambda s: s["pre_tokenizer"].update(use_regex=False),
    lambda s: s["model"].update(dropout=0.1),
    lambda s: s["added_tokens"][0].update(lstrip=True),
    lambda s: s.update(truncation={"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}),
], ids=["normalizer", "prefix-space", "no-regex", "dropout", "lstrip-added-token", "truncation"])
def test_twin_refused_when_pieces_could_differ(bpe, change):
    changed = _change(bpe, change)
    assert tiktoken_twin(changed) is None
    assert document_encoder(changed, threads=2).name == "tokenizers"


def _toy_bpe(merges: list[tuple[str, str]], ids: list[int]) -> Tokenizer:
    """A byte-level BPE over the 256 bytes (ids 0-255) with `merges`, their results given `ids`."""
    vocab = {char: byte for byte, char in enumerate(byte_level_alphabet())}
    vocab.update({left + right: i for (left, right), i in zip(merges, ids)})
    tokenizer = Tokenizer(models.BPE(vocab, merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return tokenizer


def _naive_twin(tokenizer: Tokenizer) -> tiktoken.Encoding:
    """tiktoken over the same vocabulary without checking the merges: what the checks protect against."""
    to_byte = {char: byte for byte, char in enumerate(byte_level_alphabet())}
    ranks = {bytes(to_byte[c] for c in token): i for token, i in tokenizer.get_vocab().items()}
    return tiktoken.Encoding("naive", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})


@pytest.mark.parametrize("merges, ids, text", [
    # merges out of id order: the merges join a+b first, tiktoken b+c (the lower id)
    ([("a", "b"), ("b", "c")], [257, 256], "abc"),
    # a token its own bytes do not merge into: b+c joins first and abcd is never reached by the merges
    ([("b", "c"), ("a", "b"), ("c", "d"), ("ab", "cd")], [256, 257, 258, 259], "abcd"),
], ids=["merge-order", "unreachable-token"])
def test_twin_refused_when_merges_could_differ(merges, ids, text):
    toy = _toy_bpe(merges, ids)
    assert _naive_twin(toy).encode(text) != toy.encode(text).ids  # the case is real
    assert tiktoken_twin(toy) is None


def test_toy_bpe_meeting_the_conditions_has_a_twin():
    toy = _toy_bpe([("a", "b"), ("b", "c"), ("ab", "c")], [256, 257, 258])
    twin = tiktoken_twin(toy)
    assert twin is not None
    texts = ["abc", "abcabc bcab cab", "aabbcc abcc"]
    assert [twin.encode(t) for t in texts] == _ids(toy, texts)


def test_prepare_data_records_its_encoder(data_cfg, bpe, tmp_path):
    """The trained BPE is packed by tiktoken; a tokenizer that adds a BOS by template is packed by its own
    encoder, BOS kept, with rows equal to its own encoding."""
    data = prepare_data(data_cfg, progress=False)
    assert data.sources[0].manifest.encoder == "tiktoken"

    with_bos = Tokenizer.from_str(bpe.to_str())
    bos = with_bos.token_to_id(EOS_TOKEN)
    with_bos.post_processor = processors.TemplateProcessing(single=f"{EOS_TOKEN} $A",
                                                            special_tokens=[(EOS_TOKEN, bos)])
    with_bos.save(str(tmp_path / "tokenizer.json"))
    local = prepare_data(replace(data_cfg, tokenizer=str(tmp_path / "tokenizer.json"), cache_dir=str(tmp_path)),
                         progress=False)
    assert local.sources[0].manifest.encoder == "tokenizers"
    texts = source_documents(plan_sources(data_cfg)[0])
    first = next(t for t in texts if split_of(t, data_cfg.val_fraction) == TRAIN)
    expected = with_bos.encode(first).ids + [bos]
    assert expected[0] == bos and local.sources[0].train.to_numpy().ravel()[:len(expected)].tolist() == expected


def test_tokenizer_limits_do_not_truncate_documents(data_cfg, bpe, tmp_path):
    """A tokenizer.json made for a model's inputs (truncation to 8 tokens here) still packs whole documents."""
    truncating = Tokenizer.from_str(bpe.to_str())
    truncating.enable_truncation(8)
    truncating.save(str(tmp_path / "tokenizer.json"))
    local = replace(data_cfg, tokenizer=str(tmp_path / "tokenizer.json"), cache_dir=str(tmp_path))
    assert np.array_equal(prepare_data(local, progress=False).sources[0].train.to_numpy(),
                          prepare_data(data_cfg, progress=False).sources[0].train.to_numpy())


def test_rows_do_not_depend_on_threads(data_cfg, tmp_path):
    one = prepare_data(replace(data_cfg, num_workers=1, cache_dir=str(tmp_path)), progress=False).sources[0]
    assert one.manifest.encoder == "tiktoken"
    assert np.array_equal(one.train.to_numpy(), prepare_data(data_cfg, progress=False).sources[0].train.to_numpy())
