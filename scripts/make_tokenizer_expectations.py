#!/usr/bin/env python3
"""Builds the Phi tokenizer fixture folders and their HF expectations (tests/fixtures/tokenizers/).

What it writes (all committed; rerun only to regenerate):
  tests/fixtures/tokenizers/<family>/tokenizer.json.gz   base vocabulary from ../shared/tokenizers + Phi added tokens
  tests/fixtures/tokenizers/<family>/tokenizer_config.json
  tests/fixtures/tokenizers/<family>/config.json         only model_type: AutoTokenizer picks the class from it
  tests/fixtures/tokenizers/expectations/<case>.json     texts -> ids / decodes from transformers.AutoTokenizer

Each expectation file names a fixture folder and, for variants, a patch (top-level keys of tokenizer.json
replaced, tokenizer_config.json / config.json replaced) that the C++ test applies in memory, so the large
vocabularies are stored once.

The reference is transformers.AutoTokenizer (pinned in scripts/requirements-goldens.txt) loaded from an
uncompressed temporary copy of the (patched) folder. Texts are produced deterministically (seeded RNG) from
the categories issue #5 lists; inputs that are not valid UTF-8 are stored as hex bytes and their expectation
is AutoTokenizer on bytes.decode("utf-8", errors="replace").

Usage: TOKENIZERS_PARALLELISM=false /root/venv-goldens/bin/python scripts/make_tokenizer_expectations.py \
           [--shared ../shared/tokenizers] [--out tests/fixtures/tokenizers]
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------------------
# Phi added tokens (reference/phi-models.md section 4; see the report for what is confirmed).
# ----------------------------------------------------------------------------------------------


def added(id_, content, *, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False):
    return {
        "id": id_,
        "content": content,
        "single_word": single_word,
        "lstrip": lstrip,
        "rstrip": rstrip,
        "normalized": normalized,
        "special": special,
    }


def phi2_added_tokens():
    # CodeGen/phi-2 added_tokens.json: 50257..50286 are runs of 31..2 spaces, 50287..50294 runs of 9..2
    # tabs (normal, normalized tokens); <|endoftext|> 50256 is the special eos/bos/unk.
    toks = [added(50256, "<|endoftext|>")]
    for i, n in enumerate(range(31, 1, -1)):
        toks.append(added(50257 + i, " " * n, special=False, normalized=True))
    for i, n in enumerate(range(9, 1, -1)):
        toks.append(added(50287 + i, "\t" * n, special=False, normalized=True))
    assert toks[-1]["id"] == 50294
    return toks


PHI3_SPECIALS = [
    (32000, "<|endoftext|>", False),
    (32001, "<|assistant|>", True),
    (32002, "<|placeholder1|>", True),
    (32003, "<|placeholder2|>", True),
    (32004, "<|placeholder3|>", True),
    (32005, "<|placeholder4|>", True),
    (32006, "<|system|>", True),
    (32007, "<|end|>", True),
    (32008, "<|placeholder5|>", True),
    (32009, "<|placeholder6|>", True),
    (32010, "<|user|>", True),
]

PHI4MINI_SPECIALS = [
    (199999, "<|endoftext|>"),
    (200018, "<|endofprompt|>"),
    (200019, "<|assistant|>"),
    (200020, "<|end|>"),
    (200021, "<|user|>"),
    (200022, "<|system|>"),
    (200023, "<|tool|>"),
    (200024, "<|/tool|>"),
    (200025, "<|tool_call|>"),
    (200026, "<|/tool_call|>"),
    (200027, "<|tool_response|>"),
    (200028, "<|tag|>"),
]

# phi-4 (14B) uses cl100k, which is not available here: the variant keeps the o200k vocabulary and swaps in
# the cl100k pre-tokenizer regex plus phi-4-style specials (ChatML tokens; dummy tokens with lstrip/rstrip).
PHI4_SPECIALS = [
    added(199999, "<|endoftext|>"),
    added(200018, "<|endofprompt|>"),
    # Not in model.vocab: tokenizers numbers these from len(model.vocab) = 200010 on, in file order.
    added(200010, "<|im_start|>"),
    added(200011, "<|im_end|>"),
    added(200012, "<|im_sep|>"),
    added(200013, "<|fim_prefix|>"),
    added(200014, "<|dummy_0|>", lstrip=True, rstrip=True),
    added(200015, "<|dummy_1|>", lstrip=True, rstrip=True),
    added(200016, "<|dummy_2|>", lstrip=True, rstrip=True),
    added(200017, "<|dummy_3|>", lstrip=True, rstrip=True),
]

O200K_REGEX = (
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
CL100K_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)

PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
PHI4MINI_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and "
    "message['tools'] is not none %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + "
    "message['tools'] + '<|/tool|>' + '<|end|>' }}{% else %}{{ '<|' + message['role'] + '|>' + "
    "message['content'] + '<|end|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)
PHI4_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if (message['role'] == 'system') %}{{'<|im_start|>system<|im_sep|>' + "
    "message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + "
    "message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'assistant') %}"
    "{{'<|im_start|>assistant<|im_sep|>' + message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"
)


def decoder_entry(tok):
    return {k: tok[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}


# ----------------------------------------------------------------------------------------------
# Fixture folders
# ----------------------------------------------------------------------------------------------


def build_phi2(shared: Path):
    vocab = json.loads((shared / "gpt2" / "vocab.json").read_text(encoding="utf-8"))
    merges = []
    for line in (shared / "gpt2" / "merges.txt").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#version"):
            continue
        a, b = line.split(" ")
        merges.append([a, b])  # the newer [a, b] pair form (phi3/phi4mini keep the "a b" string form)
    toks = phi2_added_tokens()
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": toks,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(t["id"]): decoder_entry(t) for t in toks},
        "bos_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": True,
        "eos_token": "<|endoftext|>",
        "model_max_length": 2048,
        "return_token_type_ids": False,
        "tokenizer_class": "CodeGenTokenizer",
        "unk_token": "<|endoftext|>",
    }
    return tokenizer, config, {"model_type": "phi"}


def build_phi3(shared: Path):
    # The real Phi-3 vocabulary (../shared/tokenizers/phi3: Llama-2 SentencePiece BPE + Phi-3's added
    # tokens, 32011 ids). Its added-token flags must be Phi-3-mini's, which the fixture states again here.
    tokenizer = json.loads((shared / "phi3" / "tokenizer.json").read_text(encoding="utf-8"))
    toks = [
        added(0, "<unk>"),
        added(1, "<s>"),
        added(2, "</s>", special=False, rstrip=True),  # as in Phi-3/3.5-mini
    ]
    for id_, content, rstrip in PHI3_SPECIALS:
        toks.append(added(id_, content, rstrip=rstrip))
    if tokenizer["added_tokens"] != toks:
        sys.exit("../shared/tokenizers/phi3/tokenizer.json: added tokens differ from Phi-3-mini's")
    if len(tokenizer["model"]["vocab"]) != 32011:
        sys.exit("../shared/tokenizers/phi3/tokenizer.json: expected the 32011-id Phi-3 vocabulary")
    config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": {str(t["id"]): decoder_entry(t) for t in toks},
        "bos_token": "<s>",
        "chat_template": PHI3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "legacy": False,
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "padding_side": "left",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    return tokenizer, config, {"model_type": "phi3"}


def build_phi4mini(shared: Path):
    tokenizer = json.loads((shared / "o200k" / "tokenizer.json").read_text(encoding="utf-8"))
    toks = [added(i, c) for i, c in PHI4MINI_SPECIALS]
    # Like the o200k base file (which lists <|endoftext|> and <|endofprompt|> in model.vocab too), keep every
    # special in model.vocab: tokenizers assigns an added token that is not in the vocabulary the next free id
    # (200000 here, not 200019), whatever id the file states.
    vocab = tokenizer["model"]["vocab"]
    for t in toks:
        assert vocab.get(t["content"], t["id"]) == t["id"]
        vocab[t["content"]] = t["id"]
    tokenizer["added_tokens"] = toks
    config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {str(t["id"]): decoder_entry(t) for t in toks},
        "bos_token": "<|endoftext|>",
        "chat_template": PHI4MINI_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": "<|endoftext|>",
    }
    return tokenizer, config, {"model_type": "phi3"}


def phi4_patch(base_tokenizer):
    pre = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CL100K_REGEX}, "behavior": "Removed", "invert": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ],
    }
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(t["id"]): decoder_entry(t) for t in PHI4_SPECIALS},
        "bos_token": "<|endoftext|>",
        "chat_template": PHI4_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "model_max_length": 16384,
        "pad_token": "<|dummy_0|>",
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": "<|endoftext|>",
    }
    return {"tokenizer_json": {"pre_tokenizer": pre, "added_tokens": PHI4_SPECIALS},
            "tokenizer_config": config, "config": {"model_type": "phi3"}}


# ----------------------------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------------------------

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged that a single man in possession of a good fortune must be in want of a wife.",
    "I'm sure you'll agree: we've done what they'd asked, and it's fine. Don't worry, y'all!",
    "HELLO WORLD, THIS IS LOUD. I'M SHOUTING AND YOU'LL HEAR IT'S TRUE.",
    "Le cœur a ses raisons que la raison ne connaît point. Où est l'hôtel ? C'est très ça !",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein. Straße, Mädchen, Größe — ß ẞ.",
    "¿Dónde está la biblioteca? ¡Qué día tan bonito! El niño comió piñas y jalapeños.",
    "Быстрая коричневая лиса перепрыгивает через ленивую собаку. Ёжик в тумане.",
    "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο. Σίσυφος, ΣΊΣΥΦΟΣ.",
    "Pchnąć w tę łódź jeża lub ośm skrzyń fig. Zażółć gęślą jaźń.",
    "Türkçe: İstanbul'da ılık bir gün; ISPARTA ve ıspanak. İı Iı.",
    "Tiếng Việt có dấu: Tôi yêu tiếng nước tôi từ khi mới ra đời, người ơi!",
    "हिन्दी एक भारतीय भाषा है। क्षत्रिय, द्विज, श्रीमान् और ज्ञान।",
    "ภาษาไทยเป็นภาษาที่มีวรรณยุกต์ สวัสดีครับ ขอบคุณมากค่ะ",
    "中文是世界上使用人数最多的语言之一。我爱北京天安门，天安门上太阳升！",
    "日本語の文章です。ひらがな、カタカナ、漢字を混ぜて書きます。東京は晴れ。",
    "한국어 문장입니다. 안녕하세요, 만나서 반갑습니다! 훈민정음.",
    "العربية لغة جميلة. مرحبا بالعالم! كيف حالك اليوم؟ ١٢٣ و 456.",
    "עברית היא שפה שמית. שלום עולם! מה שלומך? 2024 ו-٣٤.",
    "Svenska: Räksmörgås och blåbärssylt. Norsk: Æ, Ø, Å. Íslenska: Þórður og Ðóra.",
    "Ελληνικά και English mixed με русский текст and 中文 together.",
    "Ṭhis ṭexṭ üses ṁany ḋiacritics: ǅ ǈ ǋ ǲ (titlecase digraphs).",
    "Հայերեն տեքստ։ ქართული ენა. አማርኛ ቋንቋ። ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ.",
    "Українська мова: ґанок, їжак, європейський. Беларуская: ўсё.",
    "Quotes: \u201csmart\u201d \u2018single\u2019 \u00abguillemets\u00bb \u201elow\u201c \u2014 em dash \u2013 en dash \u2026",
    "don\u2019t can\u2019t won\u2019t I\u2019M HE\u2019S \u2018s \u2019S 'ſ 'K",
]

CODE = [
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "#include <vector>\nint main() {\n\tstd::vector<int> v{1, 2, 3};\n\tfor (auto& x : v) x *= 2;\n\treturn 0;\n}\n",
    '{"name": "phi", "layers": 32, "rope": {"theta": 10000.0, "scaling": null}, "tags": ["a", "b"]}',
    "for i in $(seq 1 10); do echo \"line $i\" >> /tmp/out.txt; done && cat /tmp/out.txt | wc -l",
    "<html>\n  <body>\n    <p class=\"x\">Hello &amp; welcome</p>\n  </body>\n</html>",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
    "fn main() {\n    let s = String::from(\"héllo\");\n    println!(\"{s:?} {}\", s.len());\n}",
    "x = [i**2 for i in range(10) if i % 3 == 0]  # comment with émoji 🐍\nprint(f\"{x!r:>20}\")",
    "    \t    mixed\t \tindent\n\t\t\tthree tabs\n                                        forty spaces",
    "a = b +c-d*e/f%g^h|i&j~k!l?m:n;o,p.q<r>s=t@u#v$w\\x`y'z\"",
    "https://example.com/path/to/page?query=1&lang=en#section-2 mailto:user@example.org",
    "C:\\Users\\Admin\\Documents\\file (1).txt /usr/local/lib/python3.11/site-packages/",
    "while(true){if(x>=10&&y<=20||z!=0){break;}else{x++;--y;z<<=1;}}",
    "    def __init__(self, *args, **kwargs):\n        super().__init__(*args, **kwargs)\n        self._cache = {}\n",
    "// TODO(phi): handle \\r\\n line endings\r\nlet x = 1;\r\nlet y = 2;\r\n",
    "import numpy as np\n\n\n\narr = np.zeros((3, 4), dtype=np.float32)\n\n",
]

WHITESPACE = [
    " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n\n", "\r\n", "\r\n\r\n", " \n ", "\t \t",
    " " * 8, " " * 31, " " * 32, " " * 33, " " * 40, " " * 65, "\t" * 9, "\t" * 10, "\t" * 17,
    "a  b", "a   b", "a    b", "a\t\tb", "a \t b", "a\n \n b", "end   ", "   start", "  both  ",
    "x\u00a0y", "x\u00a0\u00a0y", "x\u3000y", "x\u2009y", "x\u2002\u2003y", "x\u0085y", "x\u180ey",
    "x\u200by", "x\u2028y\u2029z", "x\u000by\u000cz", "x\u001cy\u001fz", "tab\tsep\tvalues\t",
    "line1\nline2\n\nline4\n\n\n", " leading space", "trailing space ", "\n\nleading newlines",
    "multiple   spaces   between   words", "\t\tindented with tabs", "    indented with spaces",
]

DIGITS = [
    "0", "7", "42", "123", "1234", "12345", "123456789", "3.14159265358979", "1,000,000", "1 000 000",
    "-0.001e-10", "2024-11-26T13:56:00Z", "+1 (555) 010-9999", "0xDEADBEEF 0b1010 0o777", "v1.2.3-rc.4",
    "١٢٣٤٥٦٧٨٩٠", "۱۲۳۴", "१२३४५", "１２３４５", "²³⁴ ½ ¾ ⅓", "Ⅻ ⅻ Ⅳ", "①②③ ⑴⑵", "𝟙𝟚𝟛 𝟘",
    "99 bottles of beer", "3rd 21st 100th", "1e9+7", "π≈3.14 e≈2.718", "50% off $19.99 €5,00 ¥100 £3",
]

EMOJI = [
    "😀", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🏴‍☠️", "🇫🇷🇯🇵🇺🇸", "1️⃣#️⃣*️⃣", "❤️", "♥", "✌🏿",
    "👩🏽‍💻 coding", "🧑‍🤝‍🧑", "Hello 👋 world 🌍!", "🤖🤖🤖🤖🤖", "emoji😀inside😃words", "🫠🫡🥹",
    "🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland", "☕️ and 🍰", "👁️‍🗨️", "🐈‍⬛",
]

CJK = [
    "漢字", "中华人民共和国", "これは日本語です", "カタカナ・ひらがな", "한글과 漢字", "𠀀𠀁𠀂 ext-B", "〇一二三",
    "「引用」『二重』【括弧】", "全角ＡＢＣ　スペース", "龍鳳麟", "你好，世界！", "さようなら。",
    "中文English混合text", "ｶﾀｶﾅ半角", "㍻㍼ ㈱", "ＣＪＫ　互換",
]

RTL = [
    "مرحبا", "السلام عليكم ورحمة الله", "שלום", "עברית ו-English", "\u200fRTL mark\u200e LTR mark",
    "العدد ٣ والعدد 3", "فارسی: سلام دنیا", "اردو: ہیلو", "\u202eReversed\u202c text",
    "ﷺ ﷽", "אֱלֹהִים (niqqud)", "مَرْحَبًا (harakat)",
]

COMBINING = [
    "e\u0301", "e\u0301\u0301\u0301", "a\u0308\u0304", "n\u0303", "Z\u0351\u0352\u0353a\u0354\u0355l\u0356g\u0357o",
    "cafe\u0301", "naïve vs nai\u0308ve", "\u0301leading combining", "ḱ̌", "ǖ ǘ ǚ ǜ", "क़ ख़ ग़",
    "\u0915\u094d\u0937", "o\u0328\u0301", "x\u20dd", "1\u20e3", "A\u030a vs Å vs Å",
]

SPECIAL_TEXT_GENERIC = [
    "<|endoftext|>", "a<|endoftext|>b", " <|endoftext|> ", "<|endoftext|><|endoftext|>", "<|endoftext",
    "<|user|>hi<|end|>", "<|user|>\nHello<|end|>\n<|assistant|>\n", "<|system|>\nYou are helpful.<|end|>\n",
    "<s>", "</s>", "<s>hello</s>", "<unk>", "text </s>   after", "<|im_start|>user<|im_sep|>hi<|im_end|>",
    "<|dummy_0|>", "x <|dummy_1|> y", "<|tool|>[]<|/tool|>", "<|assistant|>", "   <|end|>   ",
    "<|end|>\n\n\n", "<0x41><0x0A>", "\u2581word \u2581\u2581", "<|placeholder3|>", "<|fim_prefix|>a<|fim_suffix|>",
    "<|endofprompt|>", "<<|end|>>", "<|<|user|>|>", "<|END|>", "<| end |>",
]

LONG = [
    "a" * 3000,
    "ab" * 1200,
    "supercalifragilisticexpialidocious" * 40,
    "9" * 2000,
    "é" * 1000,
    "中" * 1500,
    "😀" * 400,
    "\u0301" * 300,
    "Pneumonoultramicroscopicsilicovolcanoconiosis" * 20,
    "x" * 1000 + " " + "y" * 1000,
    "-" * 500 + "=" * 500,
    " " * 1000,
    "\n" * 300,
    "aGVsbG8gd29ybGQh" * 100,
]

# Characters Unicode assigned after 14.0 (PCRE2 10.42's tables); HF's Oniguruma knows them (unicode_delta.inc).
NEW_UNICODE = [
    "\U00031350\U00031351 CJK Ext-H", "\U0002EBF0\U0002EBF1 CJK Ext-I", "\U000139C6's (hieroglyph + 's)",
    "Kawi \U00011F04\U00011F05\U00011F50\U00011F51", "Kaktovik \U0001D2C0\U0001D2C1", "Todhri \U000105C0\U000105C1",
    "Garay \U00010D50\U00010D70 \U00010D40\U00010D41", "Nag Mundari \U0001E4D0\U0001E4D1", "\U0001FAE8 \U0001FABF",
]

INVALID = [
    b"\xff",
    b"abc\x80def",
    b"\xe2\x82",
    b"\xe2\x82 end",
    b"euro \xe2\x82\xac ok, cut \xe2\x82",
    b"\xc0\xaf overlong",
    b"\xed\xa0\x80 surrogate",
    b"\xf4\x90\x80\x80 too big",
    b"\xf0\x9f\x98",
    b"\xf0\x9f\x98 \xf0\x9f",
    b"\xfe\xfe\xff\xff",
    b"mixed \xc3\x28 bad \xa0\xa1 seq",
    b"\x80\x81\x82\x83",
    b"ok\xc3",
    b"\xe0\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"caf\xe9 latin-1",
    b"<|end\xff|>",
    b"\xef\xbf\xbd already replacement",
    b"\x00nul\x00byte",
]


def random_texts(rng: random.Random, pools, n):
    frags = [f for pool in pools for f in pool if len(f) < 400]
    seps = ["", " ", "  ", "\n", "\t", ", ", ". ", "\n\n", " \n", "   "]
    out = []
    for _ in range(n):
        k = rng.randint(2, 6)
        parts = []
        for _ in range(k):
            f = rng.choice(frags)
            if rng.random() < 0.3 and len(f) > 6:
                a = rng.randrange(len(f))
                b = rng.randrange(a, len(f) + 1)
                f = f[a:b]
            parts.append(f)
            parts.append(rng.choice(seps))
        out.append("".join(parts))
    return out


def random_unicode(rng: random.Random, n):
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
              (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2190, 0x23FF), (0x3000, 0x30FF),
              (0x4E00, 0x4EFF), (0xAC00, 0xACFF), (0xFF00, 0xFFEF), (0x1F300, 0x1F64F), (0x1F900, 0x1F9FF),
              (0x20000, 0x200FF), (0x1D400, 0x1D4FF)]
    out = []
    for _ in range(n):
        length = rng.randint(1, 60)
        chars = []
        for _ in range(length):
            lo, hi = rng.choice(ranges)
            cp = rng.randint(lo, hi)
            if 0xD800 <= cp <= 0xDFFF:
                cp = 0x41
            chars.append(chr(cp))
        out.append("".join(chars))
    return out


def random_invalid(rng: random.Random, n):
    out = []
    base = "plain ascii text ".encode() + "é中😀".encode()
    for _ in range(n):
        b = bytearray()
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.4:
                a = rng.randrange(len(base))
                b += base[a:a + rng.randint(1, 8)]
            elif r < 0.7:
                b.append(rng.randint(0x80, 0xFF))
            else:
                b += rng.choice(["é", "中", "😀", "€"]).encode()[: rng.randint(1, 3)]
        out.append(bytes(b))
    return out


def build_corpus(seed: int, family_specials: list[str], n_target: int):
    """Returns a list of inputs: str (valid text) or bytes (to be repaired)."""
    rng = random.Random(seed)
    texts: list[str | bytes] = []
    fixed = PROSE + CODE + WHITESPACE + DIGITS + EMOJI + CJK + RTL + COMBINING + SPECIAL_TEXT_GENERIC + LONG + NEW_UNICODE
    texts += fixed
    texts += ["", "a", "A", "'", "'s", " 's", "I", "?", ".", "\u2581", "\ufffd", "\U0010FFFD", "\x7f", "\x01"]
    # family specials in contexts
    for s in family_specials:
        texts += [s, f"x{s}y", f" {s} ", f"\n{s}\n", f"{s}\n\nHello", f"  {s}  world", f"word{s}", f"{s}{s}"]
    texts += INVALID
    texts += random_invalid(rng, 40)
    texts += random_unicode(rng, 60)
    pools = [PROSE, CODE, WHITESPACE, DIGITS, EMOJI, CJK, RTL, COMBINING, SPECIAL_TEXT_GENERIC + family_specials]
    texts += random_texts(rng, pools, max(0, n_target - len(texts)))
    # de-duplicate, keep order
    seen = set()
    out = []
    for t in texts:
        key = (type(t).__name__, t)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


# ----------------------------------------------------------------------------------------------
# Expectations
# ----------------------------------------------------------------------------------------------


def write_folder(dir_: Path, tokenizer, config, model_config, gz: bool):
    dir_.mkdir(parents=True, exist_ok=True)
    data = json.dumps(tokenizer, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if gz:
        with open(dir_ / "tokenizer.json.gz", "wb") as f:
            # mtime=0 and no file name: byte-identical output on every run
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as g:
                g.write(data)
    else:
        (dir_ / "tokenizer.json").write_bytes(data)
    (dir_ / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n",
                                                encoding="utf-8")
    if model_config is not None:
        (dir_ / "config.json").write_text(json.dumps(model_config, indent=2) + "\n", encoding="utf-8")


def apply_patch(tokenizer, config, model_config, patch):
    if not patch:
        return tokenizer, config, model_config
    tokenizer = copy.deepcopy(tokenizer)
    for k, v in patch.get("tokenizer_json", {}).items():
        tokenizer[k] = v
    if "tokenizer_config" in patch:
        config = patch["tokenizer_config"]
    if "config" in patch:
        model_config = patch["config"]
    return tokenizer, config, model_config


def make_expectations(name, fixture_dir, tokenizer, config, model_config, patch, corpus, rng, n_random_decode):
    from transformers import AutoTokenizer
    import tokenizers
    import transformers

    tj, tc, mc = apply_patch(tokenizer, config, model_config, patch)
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp), tj, tc, mc, gz=False)
        tok = AutoTokenizer.from_pretrained(tmp)
        raw = tokenizers.Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
    backend = json.loads(tok.backend_tokenizer.to_str())
    eff_added = sorted(backend["added_tokens"], key=lambda t: t["id"])

    cases = []
    n_diff_raw = 0
    for item in corpus:
        case = {}
        if isinstance(item, bytes):
            case["bytes_hex"] = item.hex()
            text = item.decode("utf-8", errors="replace")
        else:
            case["text"] = item
            text = item
        ids = tok.encode(text, add_special_tokens=True)
        ids_plain = tok.encode(text, add_special_tokens=False)
        case["ids"] = ids
        if ids_plain != ids:
            case["ids_plain"] = ids_plain
        ids_split = tok.encode(text, add_special_tokens=False, split_special_tokens=True)
        if ids_split != ids_plain:
            case["ids_split_special"] = ids_split
        case["decoded"] = tok.decode(ids, skip_special_tokens=False)
        skip = tok.decode(ids, skip_special_tokens=True)
        if skip != case["decoded"]:
            case["decoded_skip"] = skip
        if raw.encode(text).ids != ids:
            n_diff_raw += 1
        cases.append(case)

    # decode-only cases: random id sequences (byte tokens, specials, ids past the vocabulary)
    n_total = len(tok)
    specials = [t["id"] for t in eff_added]
    byte_ids = [i for s, i in tok.get_vocab().items() if len(s) == 6 and s.startswith("<0x") and s.endswith(">")]
    decode_cases = []
    for k in range(n_random_decode):
        length = rng.randint(1, 40)
        ids = []
        for _ in range(length):
            r = rng.random()
            if r < 0.15 and specials:
                ids.append(rng.choice(specials))
            elif r < 0.35 and byte_ids:
                ids.append(rng.choice(byte_ids))
            elif r < 0.38:
                ids.append(n_total + rng.randint(0, 1000))  # never produced by the tokenizer: dropped
            else:
                ids.append(rng.randrange(0, n_total))
        d = tok.decode(ids, skip_special_tokens=False)
        dc = {"ids": ids, "decoded": d}
        ds = tok.decode(ids, skip_special_tokens=True)
        if ds != d:
            dc["decoded_skip"] = ds
        decode_cases.append(dc)

    def tid(s):
        return None if s is None else tok.convert_tokens_to_ids(s)

    return {
        "name": name,
        "fixture": fixture_dir,
        "patch": patch,
        "generator": "scripts/make_tokenizer_expectations.py",
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "tokenizer_class": type(tok).__name__,
        "vocab_size": len(tok),
        "bos_token": tok.bos_token,
        "bos_token_id": tid(tok.bos_token),
        "eos_token": tok.eos_token,
        "eos_token_id": tid(tok.eos_token),
        "added_tokens": eff_added,
        "raw_tokenizers_differs_on": n_diff_raw,
        "cases": cases,
        "decode_cases": decode_cases,
    }


# ----------------------------------------------------------------------------------------------
# Unicode version delta (coordinator/tokenizer/unicode_delta.inc)
# ----------------------------------------------------------------------------------------------

DELTA_PROPERTIES = ["L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No", "P", "Pc",
                    "S", "Z"]


def write_unicode_delta(path: Path):
    """HF's regex engine (Oniguruma inside `tokenizers`) knows a newer Unicode than PCRE2 10.42 (Unicode 14.0,
    the same as this Python's unicodedata). For each general category, list the code points that Oniguruma puts
    in it and Unicode 14 does not (characters assigned since), so that \\p{X} can be widened to match."""
    import unicodedata

    import tokenizers
    from tokenizers import Regex, pre_tokenizers

    assert unicodedata.unidata_version == "14.0.0", "run with a Python whose unicodedata is 14.0.0 (= PCRE2 10.42)"
    cps = [cp for cp in range(0x110000) if not (0xD800 <= cp <= 0xDFFF)]
    lines = []
    for prop in DELTA_PROPERTIES:
        split = pre_tokenizers.Split(Regex("\\p{%s}" % prop), behavior="removed")
        members = set()
        for i in range(0, len(cps), 20000):
            chunk = cps[i:i + 20000]
            kept = set()
            for _, (a, b) in split.pre_tokenize_str("".join(map(chr, chunk))):
                kept.update(range(a, b))
            members.update(cp for k, cp in enumerate(chunk) if k not in kept)
        ours = {cp for cp in cps if unicodedata.category(chr(cp)).startswith(prop)}
        add = sorted(members - ours)
        removed = sorted(ours - members)
        ranges = []
        for cp in add:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
        body = "".join(f"\\\\x{{{a:X}}}" if a == b else f"\\\\x{{{a:X}}}-\\\\x{{{b:X}}}" for a, b in ranges)
        lines.append(f'    {{"{prop}", "{body}"}},  // +{len(add)} code points'
                     + (f"; not removed: {', '.join(f'U+{c:04X}' for c in removed)}" if removed else ""))
    path.write_text(
        "// Generated by scripts/make_tokenizer_expectations.py --unicode-delta; do not edit.\n"
        f"// Code points that HF tokenizers {tokenizers.__version__} (Oniguruma) puts in each general category and\n"
        "// Unicode 14.0 (PCRE2 10.42) does not: regex.cpp widens \\p{X} with them.\n"
        "#pragma once\n\n#include <string_view>\n\nnamespace phi::tokenizer {\n\n"
        "struct UnicodeDelta {\n    std::string_view property;\n    std::string_view add;  // PCRE2 class body\n};\n\n"
        "inline constexpr UnicodeDelta k_unicode_delta[] = {\n" + "\n".join(lines) + "\n};\n\n"
        "}  // namespace phi::tokenizer\n", encoding="utf-8")
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "tokenizers"))
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "tokenizers"))
    ap.add_argument("--only", default=None, help="comma-separated expectation names")
    ap.add_argument("--unicode-delta", action="store_true",
                    help="only (re)write coordinator/tokenizer/unicode_delta.inc")
    args = ap.parse_args()
    if args.unicode_delta:
        write_unicode_delta(REPO / "coordinator" / "tokenizer" / "unicode_delta.inc")
        return 0
    shared = Path(args.shared)
    out = Path(args.out)
    only = set(args.only.split(",")) if args.only else None

    families = {
        "phi2": build_phi2(shared),
        "phi3": build_phi3(shared),
        "phi4mini": build_phi4mini(shared),
    }
    for name, (tj, tc, mc) in families.items():
        write_folder(out / name, tj, tc, mc, gz=True)

    phi3_specials = ["<unk>", "<s>", "</s>"] + [c for _, c, _ in PHI3_SPECIALS]
    phi4mini_specials = [c for _, c in PHI4MINI_SPECIALS]
    phi4_specials = [t["content"] for t in PHI4_SPECIALS]
    phi3_tc = families["phi3"][1]
    # (expectation name, fixture folder, patch, specials used in the corpus, seed, corpus size)
    plan = [
        ("phi2", "phi2", None, ["<|endoftext|>", " " * 5, "\t\t\t"], 2, 560),
        ("phi3", "phi3", None, phi3_specials, 3, 560),
        ("phi4mini", "phi4mini", None, phi4mini_specials, 4, 560),
        ("phi4_cl100k", "phi4mini", phi4_patch(families["phi4mini"][0]), phi4_specials, 5, 560),
        # AutoTokenizer picks the tokenizer class from config.json's model_type: without the phi3 model_type
        # it builds LlamaTokenizer's own pipeline (Metaspace, legacy/prepend_scheme) or GPT2Tokenizer's
        # (GPT-2 regex even on o200k). These variants pin those class paths.
        ("phi3_llama_class", "phi3", {"config": {"model_type": "llama"}}, phi3_specials, 6, 300),
        ("phi3_llama_class_legacy", "phi3", {"config": None, "tokenizer_config": dict(phi3_tc, legacy=True)},
         phi3_specials, 7, 300),
        ("phi4mini_gpt2_class", "phi4mini", {"config": None}, phi4mini_specials, 8, 300),
    ]
    (out / "expectations").mkdir(parents=True, exist_ok=True)
    for name, fixture, patch, specials, seed, n in plan:
        if only and name not in only:
            continue
        tj, tc, mc = families[fixture]
        corpus = build_corpus(seed, specials, n)
        rng = random.Random(1000 + seed)
        exp = make_expectations(name, fixture, tj, tc, mc, patch, corpus, rng, 120)
        path = out / "expectations" / f"{name}.json"
        path.write_text(json.dumps(exp, ensure_ascii=False, indent=None, separators=(",", ":")) + "\n",
                        encoding="utf-8")
        print(f"{name}: {len(exp['cases'])} texts, {len(exp['decode_cases'])} decode cases, class "
              f"{exp['tokenizer_class']}, len {exp['vocab_size']}, raw tokenizers differs on "
              f"{exp['raw_tokenizers_differs_on']} -> {path.relative_to(REPO) if path.is_relative_to(REPO) else path}"
              f" ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    sys.exit(main())
