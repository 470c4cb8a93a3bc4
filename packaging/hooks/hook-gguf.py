"""PyInstaller hook: the gguf package without its conversion scripts and tokenizer back-ends."""

# Harmonica only reads GGUF metadata (gguf.GGUFReader). gguf.vocab imports sentencepiece and
# mistral_common when they happen to be installed; they are converter-only and large.

hiddenimports = ["gguf.gguf_reader", "gguf.constants", "gguf.quants", "yaml"]
excludedimports = ["gguf.scripts", "sentencepiece", "mistral_common", "transformers", "torch", "safetensors"]
