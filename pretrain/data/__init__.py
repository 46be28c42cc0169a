"""Data: documents in, packed token rows out, and the batches each step trains on.

- `sources`: what `data.source` names (the embedded corpus, local files, the Hugging Face hub), as documents.
- `encoder`: documents to token ids (tiktoken where it is an exact twin of the tokenizer).
- `tokenizer`: the tokenizer.json: trained (byte-level BPE) or brought along, and its end-of-document token.
- `shards`: the prepared data (split, packed shards, metadata).
- `cache`: where prepared data lives: directories keyed by what shaped them, each built once, published whole.
- `sampler`: which rows each step and rank read, as a pure function of (seed, step).

May import: `pretrain.config`, `pretrain.errors`, `pretrain.fileio`. Never the model, training or anything above.
"""
