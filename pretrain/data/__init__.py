"""Data: documents in, packed token rows out, and the batches each step trains on.

- `sources`: what `data.source` (or `data.sources`) names, cut into fixed slices, as documents.
- `hub`: the Hugging Face hub adapter: a dataset's data files, read as streams.
- `encoder`: documents to token ids (tiktoken where it is an exact twin of the tokenizer).
- `tokenizer`: the tokenizer.json: trained (byte-level BPE) or brought along, and its end-of-document token.
- `layout`: prepared data on disk: every file and directory name, the cache keys, the locks that let each
  directory be built once, and the typed records written (manifest, slice statistics, a hub source's commit),
  each read and written through one schema.
- `shards`: preparing: slices packed into bounded shards and a manifest, by any number of workers or Slurm
  array tasks.
- `prepared`: the prepared data opened, every shard checked against its manifest; rows across shards;
  `prepare_data`: prepared where missing, then opened.
- `sampler`: which rows of which source each step and rank read, as a pure function of (seed, step).

May import: `pretrain.config`, `pretrain.errors`, `pretrain.fileio`. Never the model, training or anything above.
"""
