"""Writes tests/fixtures/serving_tokenizer/: a byte-level BPE tokenizer with the 256 byte tokens, a
few merges and Phi-3-style chat specials (ids < 300), small enough to pair with the random-weight
fixture tests/fixtures/phi3_mini_4k_swa (vocab 397, tokenizer size 357) in server tests."""
import json
import os
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.pre_tokenizers import ByteLevel

out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/serving_tokenizer"
os.makedirs(out, exist_ok=True)
alphabet = ByteLevel.alphabet()
vocab = {ch: i for i, ch in enumerate(sorted(alphabet, key=lambda c: ord(c)))}
merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"), ("Ġ", "s")]
for a, b in merges:
    vocab[a + b] = len(vocab)
tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
specials = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
tok.add_special_tokens(specials)
tok.save(os.path.join(out, "tokenizer.json"))
config = {
    "tokenizer_class": "GPT2Tokenizer",
    "bos_token": "<|endoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "add_bos_token": False,
    "model_max_length": 4096,
    "chat_template": "{% for message in messages %}{{'<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}",
}
json.dump(config, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
print("wrote", out, "size", tok.get_vocab_size())
