"""Export: trained checkpoints out of the stack.

- `hf`: the Hugging Face adapter: a checkpoint as a vanilla `LlamaForCausalLM` directory, μP folded in.
- `loading`: a checkpoint as the stack's own model (`pretrain.load_model`).

May import: `pretrain.training` (checkpoints), `pretrain.data` (the tokenizer), `pretrain.model` and the base
modules. Never transfer or tools.
"""
