"""Decoding beyond greedy: pyctcdecode beam search with an optional KenLM n-gram LM (`beam_decoder`), the
processor that saves and loads it with a model folder (`processor_with_lm`) and n-gram LMs built from a corpus's
training text with KenLM's `lmplz` (`ngram_lm`). Greedy decoding stays in `runtime.ctc_text`."""
