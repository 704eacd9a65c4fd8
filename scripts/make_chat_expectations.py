#!/usr/bin/env python3
"""Generates tests/fixtures/chat/expectations.json, the data test_chat_template compares the C++
chat-template interpreter (coordinator/chat/) against, byte for byte.

  (a) phi_templates: every Phi chat template of ../shared/reference/phi-models.md section 4, rendered
      by HF transformers' own tokenizer.apply_chat_template(..., tokenize=False) for conversations
      with and without system messages (also empty ones), multi-turn, tools, and
      add_generation_prompt true/false.
  (b) rendered: hand-written templates that pin down Jinja corner cases, plus seeded random templates
      inside the supported subset (nested if/for/set, expressions, filters, tests, whitespace
      control, text with newlines and indentation so trim_blocks/lstrip_blocks matter, some calling
      raise_exception), each rendered on several random contexts by transformers' own compiled
      template (its ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks, loopcontrols,
      raise_exception and HF's tojson). Errors are recorded as expected errors.
  (c) refused: templates the interpreter must refuse at compile time, with the construct it must name.
  (d) constructs: templates using macro/caller, namespace(), block set, strftime_now(), |safe,
      str.format() and {% generation %} (hand-written, and in the shape of real ChatML, Llama-3.1,
      Mistral and Granite templates), rendered on every context with strftime_now() frozen at
      FROZEN_NOW (the C++ test freezes the same time).

Run with the pinned versions (a virtual environment outside the repository):
    pip install transformers==5.24.0 jinja2==3.1.6 tokenizers
    python scripts/make_chat_expectations.py            # writes tests/fixtures/chat/expectations.json
    python scripts/make_chat_expectations.py --write-unicode-table coordinator/chat/unicode_printable.inc
A larger local sweep (not committed): --seed 7 --count 5000 --out /tmp/chat.json, then run test_chat_template
with PHI_CHAT_EXPECTATIONS=/tmp/chat.json.
"""

import argparse
import json
import os
import random
import re
import sys
import unicodedata

PINNED = {"transformers": "5.24.0", "jinja2": "3.1.6"}
SEED = 20261126
N_RANDOM_TEMPLATES = 400
CONTEXTS_PER_TEMPLATE = 2
MAX_OUTPUT_CHARS = 20000

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_TOKENIZERS = os.path.join(os.path.dirname(ROOT), "shared", "tokenizers")

# ---------------------------------------------------------------------------------------------------
# (a) Phi chat templates, verbatim from ../shared/reference/phi-models.md section 4
# ---------------------------------------------------------------------------------------------------

PHI3_MINI = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif "
    "message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor "
    "%}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
PHI35_MINI = PHI3_MINI.replace(
    "{% if message['role'] == 'system' %}", "{% if message['role'] == 'system' and message['content'] %}"
)
PHI3_MEDIUM = (
    "{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' + '\n' + message['content'] + "
    "'<|end|>' + '\n' + '<|assistant|>' + '\n'}}{% elif (message['role'] == 'assistant') %}{{message['content'] + "
    "'<|end|>' + '\n'}}{% endif %}{% endfor %}"
)
PHI3_MINI_APRIL_2024 = "{{ bos_token }}" + PHI3_MEDIUM
PHI4_MINI = (
    "{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and message['tools'] is "
    "not none %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + message['tools'] + '<|/tool|>' "
    "+ '<|end|>' }}{% else %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endif %}{% "
    "endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)
PHI4 = (
    "{% for message in messages %}{% if (message['role'] == 'system') %}{{'<|im_start|>system<|im_sep|>' + "
    "message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + "
    "message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'assistant') %}"
    "{{'<|im_start|>assistant<|im_sep|>' + message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"
)
# First HF release of phi-4 (dotnet/machinelearning issue #7337 dump): the generation prompt after every user turn.
PHI4_FIRST_RELEASE = (
    "{% for message in messages %}{% if (message['role'] == 'system') %}{{'<|im_start|>system<|im_sep|>' + "
    "message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + "
    "message['content'] + '<|im_end|><|im_start|>assistant<|im_sep|>'}}{% elif (message['role'] == 'assistant') "
    "%}{{message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}"
)

# name -> (template, tokenizer folder in ../shared/tokenizers, special tokens)
PHI_MODELS = {
    "Phi-3-mini (current)": (PHI3_MINI, "phi3", {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<|endoftext|>"}),
    "Phi-3-mini (April 2024, with bos)": (PHI3_MINI_APRIL_2024, "phi3", {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<|endoftext|>"}),
    "Phi-3.5-mini / Phi-3.5-MoE": (PHI35_MINI, "phi3", {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<|endoftext|>"}),
    "Phi-3-medium": (PHI3_MEDIUM, "phi3", {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<|endoftext|>"}),
    "Phi-4-mini (with tools)": (PHI4_MINI, "o200k", {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}),
    "phi-4 (current)": (PHI4, "o200k", {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}),
    "phi-4 (first release)": (PHI4_FIRST_RELEASE, "o200k", {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}),
}

TOOLS_JSON = json.dumps([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])

PHI_CONVERSATIONS = {
    "user only": [{"role": "user", "content": "Hi"}],
    "system + user": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hi"}],
    "empty system + user": [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}],
    "multi-turn with system": [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    "multi-turn without system": [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi, how can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ],
    "ends with assistant": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    "unicode and whitespace": [
        {"role": "system", "content": "  Réponds en français.\n"},
        {"role": "user", "content": "日本語で\tお願いします 😀\n\nline 2  "},
    ],
    "null fields dropped": [{"role": "user", "content": "Hi", "name": None}, {"role": "assistant", "content": "Yo", "tool_calls": None}],
    "system with tools": [{"role": "system", "content": "You can call tools.", "tools": TOOLS_JSON}, {"role": "user", "content": "Weather in Paris?"}],
    "system with null tools": [{"role": "system", "content": "No tools.", "tools": None}, {"role": "user", "content": "Hi"}],
    "tool turn": [
        {"role": "system", "content": "S", "tools": TOOLS_JSON},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]<|/tool_call|>"},
        {"role": "tool", "content": "{\"temp\": 21}"},
    ],
}


def check_versions():
    import jinja2
    import transformers

    got = {"transformers": transformers.__version__, "jinja2": jinja2.__version__}
    if got != PINNED:
        sys.exit(f"make_chat_expectations.py needs {PINNED}, found {got}")
    return got


def make_phi_cases():
    from transformers import PreTrainedTokenizerFast

    cases = []
    for name, (template, folder, special) in PHI_MODELS.items():
        tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(SHARED_TOKENIZERS, folder, "tokenizer.json"), **special)
        for conv_name, conv in PHI_CONVERSATIONS.items():
            if "tools" in conv_name or conv_name == "tool turn":
                if not name.startswith("Phi-4-mini"):
                    continue
            for gen in (False, True):
                expected = tok.apply_chat_template(conv, chat_template=template, tokenize=False, add_generation_prompt=gen)
                cases.append({
                    "name": f"{name} / {conv_name} / add_generation_prompt={gen}",
                    "template": template,
                    "messages": conv,
                    "add_generation_prompt": gen,
                    "tools": None,
                    "special_tokens": tok.special_tokens_map,
                    "expected": expected,
                })
    return cases


# ---------------------------------------------------------------------------------------------------
# (b) rendered templates: hand-written corner cases and seeded random templates
# ---------------------------------------------------------------------------------------------------

HANDWRITTEN = [
    # scoping: set inside a loop does not leak and restarts every iteration; if has no scope
    "{% set x = 1 %}{% for m in [1,2,3] %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}",
    "{% for m in [1,2,3] %}{{ y }}{% set y = m %}{% endfor %}|{{ y }}",
    "{% set y = 9 %}{% for m in [1,2,3] %}{{ y }}{% if m == 2 %}{% set y = m %}{% endif %}{{ y }}{% endfor %}|{{ y }}",
    "{% if true %}{% set z = 5 %}{% endif %}{{ z }}",
    # a name assigned later in a scope is a local that starts undefined for loops running earlier
    "{% for m in [1] %}[{{ s }}]{% endfor %}{% set s = 'x' %}{{ s }}",
    "{{ s }}{% for m in [1] %}[{{ s }}]{% endfor %}{% set s = 'x' %}{{ s }}",
    "{% for m in [1, 2] %}{% for q in [1] %}[{{ n }}]{% endfor %}{% set n = m %}{{ n }}{% endfor %}{{ n }}",
    "{% for m in [1] %}[{{ s }}]{% endfor %}{% if false %}{% set s = 'x' %}{% endif %}{{ s }}",
    "{% for m in [1] %}[{{ s }}]{% endfor %}{% if n > 100 %}{{ s }}{% set s = 1 %}{% elif n > 50 %}{% set s = 2 %}{% else %}{% set s = 3 %}{% endif %}{{ s }}",
    "{% for m in [1] %}{% for x in [1] if s %}{{ x }}{% endfor %}[{{ s }}]{% endfor %}{% set s = '' %}",
    "{% for m in [1] %}{% for x in [] %}{% else %}[{{ s }}]{% endfor %}{% set s = 'y' %}{% endfor %}",
    "{% for a in [1, 2] %}{% for b in [3, 4] %}{{ a }}{{ b }}{{ loop.index }}/{{ loop.length }} {% endfor %}{{ loop.index }};{% endfor %}",
    "{% for x in [] %}body{% else %}{% set e = 1 %}empty{{ e }}{% endfor %}[{{ e }}]",
    # for/else with break and continue: Jinja only counts iterations that reach the end of the body
    "{% for x in [1] %}{% break %}{% else %}E{% endfor %}",
    "{% for x in [1, 2] %}{% continue %}{% else %}E{% endfor %}",
    "{% for x in [1, 2, 3] %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}{% else %}E{% endfor %}",
    "{% for x in [1, 2, 3, 4] %}{% if x > 2 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    # loop variables, filtered loops, lookahead
    "{% for x in 'abc' %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.previtem }}{{ loop.nextitem }}|{% endfor %}",
    "{% for x in items if x is odd %}{{ x }}:{{ loop.index }}/{{ loop.length }}{{ loop.last }} {% endfor %}",
    "{% for x in items|select('even') %}{{ x }}{{ loop.last }}{{ loop.length }}{% endfor %}",
    "{% for k, v in cfg.items() %}{{ k }}={{ v }};{% endfor %}",
    "{% for k, v in cfg|items %}{{ k }}={{ v }};{% endfor %}{% for k in cfg %}{{ k }}{% endfor %}",
    "{% for (a, b), c in [((1, 2), 3), ('xy', 'z')] %}{{ a }}{{ b }}{{ c }}{% endfor %}",
    "{% set a, b = 'xy' %}{{ a }}-{{ b }}{% set p, q = 1, [2] %}{{ p }}{{ q }}",
    # whitespace control, trim_blocks, lstrip_blocks
    "  {% if true %}\n    yes\n  {% endif %}\nafter",
    "a  {%- if true -%}  b  {%- endif -%}  c",
    "line\n    {%+ if true %}kept indent{% endif +%}\nnext",
    "{# comment #}\n  {#- c2 -#}  x {#+ c3 +#}\ny\n",
    "{{ 'a' }}  \n  {{- 'b' -}}  \n  {{ 'c' }}\n",
    "x\n\t {% for i in range(2) %}\n\t  {{ i }}\n\t {% endfor %}\n",
    "{%- for m in messages -%}\n  <{{ m.role }}>\n  {%- if m.content %} {{ m.content|trim }}{% endif %}\n{% endfor -%}\n",
    "a\r\nb\r{% if true %}\r\nc{% endif %}\n",
    "\u00a0\u3000{% if true %}x{% endif %}\u2028{% if true %}\ny{% endif %}",
    # literals and str()/repr()
    "{{ 1.0 }} {{ 1e16 }} {{ 1.5e-5 }} {{ 0.0001 }} {{ 123456789012345678.0 }} {{ 1/3 }} {{ 2**0.5 }} {{ -0.0 }} {{ 10/4 }}",
    "{{ [1, 'a', none, true, 1.5, (1,), {'k': 'v'}, ()] }} {{ (1, 2) }} {{ {} }} {{ [] }}",
    "{{ ['it\\'s', 'a\"b', 'a\\'b\"c', '\\n\\t\\x01\u00e9\\xa0\\u200b\\\\', '\U0001F600'] }}",
    "{{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 1_000 }} {{ 1_0.5 }} {{ 00 }} {{ 1.5E+3 }}",
    "{{ 'a' 'b' \"c\" }} {{ '\\q' }} {{ 'a\\\nb' }} {{ '\\101\\x42\\u0043' }}",
    "{{ {1: 'a', true: 'b', 1.0: 'c'} }} {{ {'a': 1, 'a': 2} }}",
    "{{ undefined_x }}|{{ [undefined_x] }}|{{ undefined_x is defined }}|{{ undefined_x ~ 'y' }}",
    # operators
    "{{ 7 // -2 }} {{ 7 % -2 }} {{ -7.5 // 2 }} {{ -7.5 % 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ true + true }} {{ 'ab' * 3 }} {{ [1] * 2 }} {{ 3 * 'x' }}",
    "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ (1, 'a') == (1, 'a') }} {{ [1] == (1,) }} {{ 1 == 1.0 }} {{ 'é' > 'z' }}",
    "{{ 'a' in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in range(3) }} {{ x in undefined_y }}",
    "{{ 0 or 'x' }} {{ '' and 'y' }} {{ none or [] }} {{ 1 and 2 }} {{ not [] }} {{ 'a' if 0 else 'b' }}|{{ 'a' if 0 }}|",
    "{{ 1 + 2 ~ 3 }} {{ 'a' ~ 1 + 2 }} {{ -2 ** 2 }} {{ (-2) ** 2 }} {{ 2 * 3 + 4 }} {{ not 1 == 2 }}",
    # attributes, items, slices
    "{{ messages[0].role }} {{ messages[-1]['content'] }} {{ messages[99] }} {{ messages[1:]|length }} {{ messages[::-1][0].role }}",
    "{{ 'abcdef'[1:4] }} {{ 'abcdef'[::2] }} {{ 'abcdef'[-2:] }} {{ 'héllo'[1] }} {{ 'héllo'[::-1] }} {{ [1,2,3][:-1] }}",
    "{{ items[1:100] }} {{ items[5:1] }} {{ items[::-2] }} {{ s[2:] }} {{ range(10)[2:8:3] }} {{ range(5) }}",
    "{{ cfg.a }} {{ cfg['b'] }} {{ cfg.nested.x }} {{ cfg.list.0 }} {{ cfg.missing }} {{ cfg.get('a') }} {{ cfg.get('zz', 5) }} {{ cfg.keys()|list }}",
    "{{ cfg.items() }} {{ cfg.keys() }} {{ cfg.values() }} {{ cfg.items()|length }} {{ ('a', 1) in cfg.items() }}",
    "{{ messages.append }}|{{ cfg.update }}|{{ 'x'.foo }}|{{ none.x }}|{{ messages.append is defined }}",
    # filters
    "{{ cfg|tojson }}|{{ cfg|tojson(indent=2) }}|{{ 'é<>&\\n'|tojson }}|{{ [1.5, none, true]|tojson(sort_keys=true) }}",
    "{{ {'b': 1, 'a': [1, {'c': ()}]}|tojson(sort_keys=true, indent=1) }}|{{ 'é'|tojson(ensure_ascii=true) }}|{{ cfg|tojson(2) }}",
    "{{ messages|tojson(separators=(',', ':')) }}|{{ '\U0001F600\\x7f'|tojson(true) }}|{{ {1: 2, 1.5: 3, true: 4, none: 5}|tojson }}",
    "{{ '  x  '|trim }}|{{ 'xxaxx'|trim('x') }}|{{ none|trim }}|{{ 12|string }}|{{ [1]|string }}|{{ 'AbC'|lower }}|{{ 'abc'|upper }}|{{ 'hELLO wORLD'|capitalize }}",
    "{{ names|join(', ') }}|{{ [1, 2, none]|join }}|{{ messages|join('|', attribute='role') }}|{{ 'abc'|join('-') }}",
    "{{ items|first }} {{ items|last }} {{ 'abc'|first }} {{ 'abc'|last }} {{ []|first }} {{ cfg|first }} {{ cfg|last }}",
    "{{ items|list }} {{ 'ab'|list }} {{ cfg|list }} {{ items|reverse|list }} {{ 'abc'|reverse }} {{ items|length }} {{ cfg|count }}",
    "{{ messages|map(attribute='role')|list }} {{ messages|map(attribute='missing', default='d')|list }} {{ names|map('upper')|list }}",
    "{{ items|select('odd')|list }} {{ items|reject('odd')|list }} {{ items|select|list }} {{ items|select('gt', 2)|list }} {{ items|select('divisibleby', 2)|list }}",
    "{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|list }} {{ messages|rejectattr('role', 'in', ['user'])|list|length }}",
    "{{ undefined_x|default('d') }} {{ none|default('d') }} {{ none|default('d', true) }} {{ ''|d('e', boolean=true) }} {{ 0|default(5) }}",
    "{{ 'a-b-c'|replace('-', '+') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ 'abc'|replace('', '.') }} {{ (-3)|abs }} {{ -2.5|abs }}",
    "{{ (messages|selectattr('role', 'equalto', 'user')|first).content }} {{ messages|selectattr('role', 'equalto', 'nobody')|first }}",
    # tests
    "{{ 1 is number }} {{ true is number }} {{ true is integer }} {{ 1.0 is float }} {{ none is none }} {{ 'x' is string }} {{ cfg is mapping }} {{ items is sequence }} {{ cfg is sequence }}",
    "{{ 'x' is iterable }} {{ 5 is iterable }} {{ undefined_x is sequence }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 2 is in [1, 2] }} {{ 1 is eq 1 }} {{ 2 is gt 1 }}",
    "{{ true is true }} {{ 1 is true }} {{ false is false }} {{ false is boolean }} {{ cfg.items() is sequence }} {{ undefined_x is undefined }} {{ x is not defined }}",
    # methods
    "{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  a'.lstrip() }}|{{ 'a  '.rstrip() }}|{{ 'abc'.startswith('a') }}|{{ 'abc'.endswith(('x', 'c')) }}",
    "{{ ' a  b '.split() }}|{{ 'a,b,,c'.split(',') }}|{{ 'a,b,c'.split(',', 1) }}|{{ ' a b '.split(none, 1) }}|{{ 'a b'.split(maxsplit=0) }}",
    "{{ 'AbC'.upper() }}|{{ 'AbC'.lower() }}|{{ 'abc'.replace('b', 'XY') }}|{{ '-'.join(['a', 'b']) }}|{{ 'hello'.capitalize() }}",
    "{{ '\u00a0a\u2003'.strip() }}|{{ 'a\u2028b\x1cc'.split() }}|{{ '\u00a0x\u00a0'|trim }}",
    # raise_exception and errors
    "{% if messages|length > 100 %}ok{% else %}{{ raise_exception('Too few messages: ' ~ messages|length) }}{% endif %}",
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}",
    "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('tool messages are not supported: ' ~ m.content) }}{% endif %}{% endfor %}fine",
    "{{ 'a' + 1 }}",
    "{{ undefined_x.y }}",
    "{{ 1 / 0 }}",
    "{{ none + 1 }}",
    "{{ [1, 2][::0] }}",
    "{{ messages[1:'a'] }}",
    "{{ items|last }}{{ (items|select('odd'))|last }}",
    "{{ 5|length }}",
    "{{ range(200000)|length }}",
    "{% set a, b = [1, 2, 3] %}",
    "{% for a, b in [1] %}{% endfor %}",
    "{{ 1 < 'a' }}",
    "{{ 'x' in 5 }}",
    "{{ [] in {} }}",
    "{{ {[1]: 2} }}",
]

# Random templates -------------------------------------------------------------------------------

ROLES = ["system", "user", "assistant", "tool"]
WORDS = ["alpha", "Beta", "gamma", "x", "y", "hello", "World", "<|end|>", "a,b", "Zz", ""]
CONTENTS = ["Hi", "Hello, world!", "  padded  ", "", "line1\nline2", "Réponse en français", "日本語", "emoji 😀",
            "tab\there", "quote ' and \"", "a,b,c", "<|user|>", "trailing\n", "\\backslash", "x" * 30, "MiXeD CaSe"]


def random_context(rng):
    def content():
        return rng.choice(CONTENTS)

    messages = []
    for _ in range(rng.choice([0, 1, 2, 2, 3, 4, 5])):
        m = {"role": rng.choice(ROLES + ["user", "assistant"])}
        if rng.random() < 0.93:
            m["content"] = content()
        if rng.random() < 0.15:
            m["name"] = rng.choice(["bob", "alice"])
        if rng.random() < 0.1:
            m["tool_calls"] = [{"type": "function", "function": {"name": "f", "arguments": {"x": rng.randint(0, 9)}}}]
        messages.append(m)
    ctx = {
        "messages": messages,
        "add_generation_prompt": rng.random() < 0.5,
        "bos_token": rng.choice(["<s>", "<|endoftext|>", ""]),
        "eos_token": rng.choice(["</s>", "<|end|>", "<|endoftext|>"]),
        "tools": None if rng.random() < 0.6 else [{"type": "function", "function": {"name": "get_weather", "parameters": {"city": "str"}}}],
        "documents": None,
        "s": rng.choice(CONTENTS),
        "word": rng.choice(["user", "Assistant", "SYSTEM", "tool", "x y"]),
        "n": rng.randint(0, 5),
        "k": rng.randint(-3, 3),
        "f": rng.choice([0.5, 1.25, -2.0, 3.0, 1e-7, 12345.678, 0.1]),
        "flag": rng.random() < 0.5,
        "items": [rng.randint(-2, 9) for _ in range(rng.randint(0, 5))],
        "names": [rng.choice(["bob", "alice", "carol", "dave"]) for _ in range(rng.randint(0, 4))],
        "cfg": {"a": rng.randint(0, 3), "b": rng.choice(["on", "off", "é"]), "list": [1, 2, 3],
                "nested": {"x": rng.choice(["deep", "er"]), "y": None}},
        "nothing": None,
    }
    if rng.random() < 0.3:
        del ctx["cfg"]["nested"]
    return ctx


INDENTS = ["2", "0", "none", '"  "']
ROLE_LITERALS = ['"user"', '"system"', '"assistant"']
KEY_LITERALS = ['"a"', '"list"', '"zz"']
SELECT_ARGS = ['"even"', '"odd"', '"gt", 1', '"ne", 2']


class TemplateGenerator:
    """Random templates inside the interpreter's subset. Types steer expressions towards values that
    make sense where they are used; errors still happen (and are expected outputs)."""

    def __init__(self, rng):
        self.rng = rng

    def r(self):
        return self.rng.random()

    def pick(self, xs):
        return self.rng.choice(xs)

    # ---- literals ----

    def str_lit(self):
        s = self.pick(["", "a", "Hi", " ", "\\n", "<|user|>\\n", "x y", "it\\'s", "é", "😀", "\\t", "a,b", "-", ": ", "\\\\"])
        q = self.pick(["'", "'", '"'])
        if q == '"':
            s = s.replace("\\'", "'")
        return q + s + q

    def int_lit(self):
        return self.pick(["0", "1", "2", "3", "5", "10", "-1", "7"])

    # ---- typed expressions ----

    def vars_of(self, scope, t):
        return [n for n, vt in scope.items() if vt == t]

    def expr(self, t, scope, d):
        if d > 3:
            return self.leaf(t, scope)
        f = getattr(self, "e_" + t)
        return f(scope, d + 1)

    def atom(self, t, scope, d):
        """An expression usable before `.attr`, `[...]` or `|filter`."""
        e = self.expr(t, scope, d)
        if re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*|'[^']*'|\[[^\[\]]*\]", e):
            return e
        return "(" + e + ")"

    @staticmethod
    def stmt_expr(e):
        """`{% if %}` and `{% for %}` take no top-level conditional expression."""
        return "(" + e + ")" if " if " in e else e

    def leaf(self, t, scope):
        vs = self.vars_of(scope, t)
        if vs and self.r() < 0.7:
            return self.pick(vs)
        return {"str": self.str_lit(), "astr": self.pick(["'user'", "'Hi'", "'abc'"]), "int": self.int_lit(),
                "float": self.pick(["1.5", "0.25", "2.0"]), "bool": self.pick(["true", "false"]),
                "ints": "[1, 2, 3]", "strs": "['a', 'b']", "msgs": "messages", "msg": "messages[0]",
                "dict": "cfg", "any": self.pick(["none", "1", "'s'"])}[t]

    def e_str(self, scope, d):
        c = self.r()
        if c < 0.25:
            return self.leaf("str", scope)
        opts = [
            lambda: self.expr("astr", scope, d),
            lambda: f"{self.expr('str', scope, d)} ~ {self.expr('any', scope, d)}",
            lambda: f"{self.expr('str', scope, d)} + {self.expr('str', scope, d)}",
            lambda: f"{self.atom('any', scope, d)}|string",
            lambda: f"{self.atom('str', scope, d)}|trim",
            lambda: f"{self.atom('str', scope, d)}.strip()",
            lambda: f"{self.atom('str', scope, d)}.rstrip()",
            lambda: f"({self.expr('str', scope, d)})[{self.pick(['1:', ':2', '::-1', '-2:', '1:3', ':-1'])}]",
            lambda: f"{self.atom('str', scope, d)}|replace({self.str_lit()}, {self.str_lit()})",
            lambda: f"{self.atom('str', scope, d)}.replace({self.str_lit()}, {self.str_lit()})",
            lambda: f"{self.atom('strs', scope, d)}|join({self.str_lit()})",
            lambda: f"{self.atom('msgs', scope, d)}|map(attribute='role')|join(',')",
            lambda: f"{self.atom('str', scope, d)}.split({self.pick(['', repr(','), 'none', repr(' ')])})|join('|')",
            lambda: f"{self.atom('any', scope, d)}|tojson",
            lambda: f"{self.atom('any', scope, d)}|tojson(indent={self.pick(INDENTS)})",
            lambda: f"{self.atom('dict', scope, d)}|tojson(sort_keys=true)",
            lambda: f"({self.expr('str', scope, d)} if {self.expr('bool', scope, d)} else {self.expr('str', scope, d)})",
            lambda: f"{self.atom('str', scope, d)}|default({self.str_lit()})",
            lambda: f"{self.pick(['undefined_name', 'nothing', 'cfg.nope'])}|default({self.str_lit()}{self.pick(['', ', true'])})",
            lambda: f"{self.atom('strs', scope, d)}|first",
            lambda: f"{self.atom('msg', scope, d)}['content']",
            lambda: f"{self.atom('msg', scope, d)}.content",
            lambda: f"{self.atom('msg', scope, d)}.content|default('')",
            lambda: "cfg.nested.x",
            lambda: "cfg['b']",
            lambda: f"({self.expr('str', scope, d)}) * {self.pick(['0', '2', '3'])}",
            lambda: f"{self.atom('str', scope, d)}|reverse",
            lambda: f"{self.expr('any', scope, d)} ~ ''",
            lambda: f"{self.atom('dict', scope, d)}.get({self.pick(KEY_LITERALS)}, {self.str_lit()})|string",
            lambda: f"{self.atom('msgs', scope, d)}|join(', ', attribute='role')",
            lambda: f"{self.atom('msgs', scope, d)}|map(attribute='tool_calls.0.function.name', default='-')|join",
            lambda: f"{self.atom('msg', scope, d)}.keys()|list|join('+')",
            lambda: f"({self.expr('int', scope, d)} < {self.expr('int', scope, d)} <= {self.expr('int', scope, d)})|string",
            lambda: f"[{self.expr('any', scope, d)}, {self.expr('any', scope, d)}]|tojson(separators=(',', ':'))",
            lambda: f"{self.expr('str', scope, d)}|list|first",
        ]
        return self.pick(opts)()

    def e_astr(self, scope, d):
        opts = [
            lambda: self.leaf("astr", scope),
            lambda: "word", lambda: "bos_token", lambda: "eos_token",
            lambda: f"{self.atom('msg', scope, d)}.role",
            lambda: f"{self.atom('msg', scope, d)}['role']",
            lambda: f"{self.atom('astr', scope, d)}|upper",
            lambda: f"{self.atom('astr', scope, d)}|lower",
            lambda: f"{self.atom('astr', scope, d)}|capitalize",
            lambda: f"{self.atom('astr', scope, d)}.upper()",
            lambda: f"{self.atom('int', scope, d)}|string",
        ]
        return self.pick(opts)()

    def e_int(self, scope, d):
        c = self.r()
        if c < 0.3:
            return self.leaf("int", scope)
        opts = [
            lambda: "n", lambda: "k", lambda: "cfg.a",
            lambda: f"{self.expr('int', scope, d)} + {self.expr('int', scope, d)}",
            lambda: f"{self.expr('int', scope, d)} - {self.expr('int', scope, d)}",
            lambda: f"{self.expr('int', scope, d)} * {self.expr('int', scope, d)}",
            lambda: f"{self.expr('int', scope, d)} // {self.pick(['2', '3', '-2'])}",
            lambda: f"{self.expr('int', scope, d)} % {self.pick(['2', '3', '-3'])}",
            lambda: f"-{self.expr('int', scope, d)}",
            lambda: f"({self.expr('int', scope, d)}) ** {self.pick(['0', '2'])}",
            lambda: f"{self.atom('ints', scope, d)}|length",
            lambda: f"{self.atom('msgs', scope, d)}|length",
            lambda: f"{self.atom('str', scope, d)}|length",
            lambda: f"{self.atom('ints', scope, d)}|first",
            lambda: f"{self.atom('ints', scope, d)}|last",
            lambda: f"{self.atom('ints', scope, d)}[{self.pick(['0', '-1', '1'])}]",
            lambda: f"({self.expr('int', scope, d)})|abs",
            lambda: f"{self.atom('ints', scope, d)}|select('odd')|list|length",
            lambda: f"range({self.expr('int', scope, d)})|list|length",
            lambda: f"({self.expr('bool', scope, d)}) + 1",
        ]
        if "loop" in scope:
            opts += [lambda: "loop.index", lambda: "loop.index0", lambda: "loop.length", lambda: "loop.revindex",
                     lambda: "loop.revindex0", lambda: "loop.depth"]
        return self.pick(opts)()

    def e_float(self, scope, d):
        opts = [
            lambda: "f", lambda: self.leaf("float", scope),
            lambda: f"{self.expr('int', scope, d)} / {self.pick(['2', '3', '4', '-8'])}",
            lambda: f"{self.expr('float', scope, d)} * {self.expr('int', scope, d)}",
            lambda: f"{self.expr('float', scope, d)} + {self.expr('float', scope, d)}",
            lambda: f"{self.expr('float', scope, d)} // {self.pick(['1', '0.5', '-2'])}",
            lambda: f"{self.expr('float', scope, d)} % {self.pick(['1', '0.5', '-2'])}",
            lambda: "0.1 + 0.2", lambda: "1e-7", lambda: "1.5e300 * 10", lambda: "2 ** -3",
        ]
        return self.pick(opts)()

    def e_bool(self, scope, d):
        c = self.r()
        if c < 0.15:
            return self.leaf("bool", scope)
        cmp = self.pick(["==", "!=", "<", ">", "<=", ">="])
        any_ = lambda: self.expr("any", scope, d)
        opts = [
            lambda: "flag", lambda: "add_generation_prompt",
            lambda: f"{self.expr('int', scope, d)} {cmp} {self.expr('int', scope, d)}",
            lambda: f"{self.expr('str', scope, d)} {self.pick(['==', '!='])} {self.expr('str', scope, d)}",
            lambda: f"{self.expr('astr', scope, d)} {cmp} {self.expr('astr', scope, d)}",
            lambda: f"{self.atom('msg', scope, d)}.role == {self.pick(ROLE_LITERALS)}",
            lambda: f"{self.atom('msg', scope, d)}['role'] in ['user', 'system']",
            lambda: f"'content' in {self.expr('msg', scope, d)}",
            lambda: f"{any_()} is {self.pick(['defined', 'undefined', 'none', 'string', 'number', 'integer', 'float', 'mapping', 'iterable', 'sequence', 'boolean'])}",
            lambda: f"{any_()} is not {self.pick(['defined', 'none', 'string'])}",
            lambda: f"{self.pick(['undefined_name', 'nothing', 'tools', 'cfg.nested', 'messages[5]'])} is {self.pick(['defined', 'none', 'not none', 'not defined'])}",
            lambda: f"{self.expr('int', scope, d)} is {self.pick(['odd', 'even', 'divisibleby 2', 'divisibleby(3)', 'eq 2', 'gt 1', 'lessthan 3', 'in [1, 2]'])}",
            lambda: f"{self.str_lit()} in {self.expr('str', scope, d)}",
            lambda: f"{self.expr('int', scope, d)} {self.pick(['in', 'not in'])} {self.expr('ints', scope, d)}",
            lambda: f"{self.pick(KEY_LITERALS)} in cfg",
            lambda: f"not {self.expr('bool', scope, d)}",
            lambda: f"{self.expr('bool', scope, d)} and {self.expr('bool', scope, d)}",
            lambda: f"{self.expr('bool', scope, d)} or {self.expr('bool', scope, d)}",
            lambda: f"{self.atom('str', scope, d)}.startswith({self.str_lit()})",
            lambda: f"{self.atom('str', scope, d)}.endswith(({self.str_lit()}, {self.str_lit()}))",
            lambda: f"{self.atom('msgs', scope, d)}|selectattr('role', 'equalto', 'user')|list|length > 0",
            lambda: f"{any_()}",
            lambda: f"{self.expr('ints', scope, d)}",
            lambda: f"{self.expr('str', scope, d)}",
        ]
        if "loop" in scope:
            opts += [lambda: "loop.first", lambda: "loop.last", lambda: "loop.index is even", lambda: "loop.previtem == loop.nextitem",
                     lambda: "loop.previtem is defined", lambda: "loop.nextitem is defined"]
        return self.pick(opts)()

    def e_ints(self, scope, d):
        opts = [
            lambda: self.leaf("ints", scope), lambda: "items", lambda: "cfg.list",
            lambda: f"{self.atom('ints', scope, d)}[{self.pick(['1:', ':2', '::-1', '-2:', '::2'])}]",
            lambda: f"{self.atom('ints', scope, d)}|reverse|list",
            lambda: f"range({self.expr('int', scope, d)})|list",
            lambda: f"{self.atom('ints', scope, d)}|select({self.pick(SELECT_ARGS)})|list",
            lambda: f"{self.atom('ints', scope, d)}|reject('odd')|list",
            lambda: f"{self.expr('ints', scope, d)} + {self.expr('ints', scope, d)}",
            lambda: f"[{self.expr('int', scope, d)}, {self.expr('int', scope, d)}]",
            lambda: f"{self.atom('ints', scope, d)}|list",
        ]
        return self.pick(opts)()

    def e_strs(self, scope, d):
        opts = [
            lambda: self.leaf("strs", scope), lambda: "names",
            lambda: f"{self.atom('str', scope, d)}.split()",
            lambda: f"{self.atom('str', scope, d)}.split(',')",
            lambda: f"{self.atom('msgs', scope, d)}|map(attribute='role')|list",
            lambda: f"{self.atom('msgs', scope, d)}|map(attribute='content', default='-')|list",
            lambda: "names|map('upper')|list",
            lambda: f"{self.atom('strs', scope, d)}[{self.pick(['1:', ':-1', '::-1'])}]",
            lambda: f"{self.atom('strs', scope, d)}|reject('equalto', 'bob')|list",
            lambda: f"[{self.expr('str', scope, d)}, {self.expr('astr', scope, d)}]",
            lambda: f"{self.atom('str', scope, d)}|list",
        ]
        return self.pick(opts)()

    def e_msgs(self, scope, d):
        opts = [
            lambda: "messages",
            lambda: f"messages[{self.pick(['1:', ':-1', '::-1', '-2:'])}]",
            lambda: "messages|selectattr('role', 'equalto', 'user')|list",
            lambda: "messages|rejectattr('role', 'equalto', 'system')|list",
            lambda: "messages|selectattr('content')|list",
            lambda: "messages|reverse|list",
        ]
        return self.pick(opts)()

    def e_msg(self, scope, d):
        vs = self.vars_of(scope, "msg")
        if vs and self.r() < 0.8:
            return self.pick(vs)
        return self.pick(["messages[0]", "messages[-1]", "messages|first", "messages|last", "(messages|selectattr('role', 'equalto', 'user')|first)"])

    def e_dict(self, scope, d):
        return self.pick(["cfg", "cfg.nested", f"{{'k': {self.expr('any', scope, d)}, 'n': {self.expr('int', scope, d)}}}",
                          "tools[0] if tools else {}", "messages[0]", "{}"])

    def e_any(self, scope, d):
        t = self.pick(["str", "astr", "int", "float", "bool", "ints", "strs", "dict", "msg", "msgs"])
        if self.r() < 0.12:
            return self.pick(["none", "nothing", "tools", "undefined_name", "(1, 'a')", "cfg.items()|list", "cfg.keys()|list",
                              "[none, true, 1.5, 'x', [1, [2]]]", "documents", "messages[-1].tool_calls"])
        return self.expr(t, scope, d)

    # ---- statements ----

    def text(self):
        pieces = ["\n", "  ", "\n  ", "\t", "\n\t", " \n", "x", "Hi ", " world", "\n\n", "  \n  ", "<|end|>\n", "é ", " ",
                  "\n    ", "[", "]", ":", "\u00a0", "line\n"]
        return "".join(self.pick(pieces) for _ in range(self.rng.randint(0, 3)))

    def open_tag(self):
        return "{%" + self.pick(["", "", "", "-", "-", "+"]) + self.pick([" ", " ", "  ", "\n"])

    def close_tag(self):
        return self.pick([" ", " ", "\n"]) + self.pick(["", "", "", "-", "-", "+"]) + "%}"

    def tag(self, body):
        return self.open_tag() + body + self.close_tag()

    def output(self, expr):
        return "{{" + self.pick(["", "", "-"]) + self.pick([" ", "", "\n"]) + expr + self.pick([" ", ""]) + self.pick(["", "", "-"]) + "}}"

    def block(self, scope, d, in_loop):
        parts = []
        for _ in range(self.rng.randint(1, 4 if d < 2 else 2)):
            parts.append(self.text())
            parts.append(self.statement(scope, d, in_loop))
        parts.append(self.text())
        return "".join(parts)

    def statement(self, scope, d, in_loop):
        c = self.r()
        if d >= 3 or c < 0.35:
            t = self.pick(["str", "str", "astr", "int", "float", "bool", "any", "ints", "strs"])
            if self.r() < 0.05:
                return self.tag("print " + self.expr(t, scope, 0))
            return self.output(self.expr(t, scope, 0))
        if c < 0.52:
            s = self.tag("if " + self.stmt_expr(self.expr("bool", scope, 0))) + self.block(dict(scope), d + 1, in_loop)
            for _ in range(self.rng.randint(0, 2)):
                s += self.tag("elif " + self.stmt_expr(self.expr("bool", scope, 0))) + self.block(dict(scope), d + 1, in_loop)
            if self.r() < 0.5:
                s += self.tag("else") + self.block(dict(scope), d + 1, in_loop)
            return s + self.tag("endif")
        if c < 0.72:
            return self.for_loop(scope, d)
        if c < 0.84:
            name = self.pick(["a", "b", "acc", "sep", "n", "s", "total", "msg_text"])
            t = self.pick(["str", "int", "bool", "ints", "strs", "astr"])
            if self.r() < 0.3 and name in scope:
                t = scope[name]
                value = {"str": f"{name} ~ {self.expr('any', scope, 1)}", "astr": f"{name} ~ 'x'", "int": f"{name} + 1",
                         "bool": f"not {name}", "ints": f"{name} + [1]", "strs": f"{name} + ['z']"}.get(t, name)
            else:
                value = self.expr(t, scope, 0)
            scope[name] = t
            return self.tag(f"set {name} = {value}")
        if c < 0.92 or (c < 0.97 and in_loop):
            return "{#" + self.pick(["", "-", "+"]) + self.pick([" note ", "\n multi\nline ", ""]) + self.pick(["", "-", "+"]) + "#}"
        if c < 0.97 or not in_loop:
            cond = self.stmt_expr(self.expr("bool", scope, 0))
            msg = self.pick(["'bad input'", "'role: ' ~ " + self.expr("any", scope, 1), "'Ünïcode ✓'"])
            return self.tag("if " + cond) + self.output(f"raise_exception({msg})") + self.tag("endif")
        return self.tag("if " + self.stmt_expr(self.expr("bool", scope, 0))) + self.tag(self.pick(["break", "continue"])) + self.tag("endif")

    def for_loop(self, scope, d):
        inner = dict(scope)
        c = self.r()
        if c < 0.35:
            var = self.pick(["message", "m"])
            it = self.expr("msgs", scope, 1)
            inner[var] = "msg"
        elif c < 0.55:
            var = self.pick(["x", "i"])
            it = self.pick(["items", "range(n)", "range(3)", self.expr("ints", scope, 1), "[]", "items|reverse"])
            inner[var] = "int"
        elif c < 0.7:
            var = "w"
            it = self.pick(["names", self.expr("strs", scope, 1), "'abc'", "s"])
            inner[var] = "str"
        elif c < 0.85:
            var = "key, value"
            it = self.pick(["cfg.items()", "cfg|items", "{'p': 1, 'q': 'two'}.items()", "(messages[0].items() if messages else [])"])
            inner["key"] = "str"
            inner["value"] = "any"
        else:
            var = "key"
            it = self.pick(["cfg", "cfg.nested", "(tools[0] if tools else {})"])
            inner["key"] = "str"
        inner["loop"] = "loop"
        filt = ""
        if self.r() < 0.2:
            filt = " if " + self.stmt_expr(self.expr("bool", inner, 1).replace("loop.", "cfg."))
        s = self.tag(f"for {var} in {self.stmt_expr(it)}{filt}") + self.block(inner, d + 1, True)
        if self.r() < 0.3:
            s += self.tag("else") + self.block(dict(scope), d + 1, False)
        return s + self.tag("endfor")

    def template(self):
        scope = {"messages": "msgs", "add_generation_prompt": "bool", "bos_token": "astr", "eos_token": "astr",
                 "s": "str", "word": "astr", "n": "int", "k": "int", "f": "float", "flag": "bool", "items": "ints",
                 "names": "strs", "cfg": "dict"}
        return self.block(scope, 0, False)


def hf_render(template, context):
    """Renders with transformers' own compiled template; returns a case dict fragment."""
    import jinja2
    from transformers.utils.chat_template_utils import _compile_jinja_template

    chunks = []
    try:
        for chunk in _compile_jinja_template(template).generate(**context):
            chunks.append(chunk)
    except jinja2.exceptions.TemplateSyntaxError as e:
        return {"syntax_error": str(e)}
    except Exception as e:  # noqa: BLE001 - every failure is an expected outcome
        # text rendered before the failure, to reject cases that printed a memory address first
        partial = "".join(chunks)
        if type(e) is jinja2.exceptions.TemplateError:
            return {"raises": str(e), "partial": partial}
        return {"error": type(e).__name__, "message": str(e), "partial": partial}
    return {"expected": "".join(chunks)}


def usable(result):
    if "syntax_error" in result:
        return False
    out = result.get("expected", result.pop("partial", None))
    # the interpreter refuses to print objects whose str() is a memory address
    return len(out) <= MAX_OUTPUT_CHARS and " at 0x" not in out and "<generator" not in out and "<built-in" not in out


def make_rendered_cases(seed, count):
    rng = random.Random(seed)
    contexts = [random_context(rng) for _ in range(12)]
    cases = []
    for i, template in enumerate(HANDWRITTEN):
        results = []
        for ci in (0, 1, 2):
            result = hf_render(template, contexts[ci])
            if "syntax_error" in result:
                raise SystemExit(f"hand-written template {i} does not parse: {result['syntax_error']}\n{template}")
            result.pop("partial", None)
            results.append({"context": ci, **result})
        cases.append({"id": f"hand-{i}", "template": template, "results": results})
    gen = TemplateGenerator(rng)
    made = 0
    skipped = {"syntax": 0, "unusable": 0}
    while made < count:
        template = gen.template()
        results = []
        for _ in range(CONTEXTS_PER_TEMPLATE):
            ci = rng.randrange(len(contexts))
            results.append((ci, hf_render(template, contexts[ci])))
        if any("syntax_error" in r for _, r in results):
            skipped["syntax"] += 1
            continue
        if not all(usable(r) for _, r in results):
            skipped["unusable"] += 1
            continue
        cases.append({"id": f"random-{made}", "template": template, "results": [{"context": ci, **r} for ci, r in results]})
        made += 1
    print(f"random templates: {made} kept, skipped {skipped}", file=sys.stderr)
    return contexts, cases



# ---------------------------------------------------------------------------------------------------
# (d) constructs of fine-tunes' templates (macro/caller, namespace(), block set, strftime_now() with
#     a frozen clock, |safe, str.format(), {% generation %}), hand-written and in the shape of the
#     real templates that use them, rendered by transformers' own compiled template
# ---------------------------------------------------------------------------------------------------

FROZEN_NOW = (2026, 11, 26, 9, 5, 7)  # strftime_now() sees this naive local datetime on both sides

CONSTRUCTS = [
    # macro: parameters, defaults referring to earlier ones, varargs/kwargs, errors, closures
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('x') }} {{ greet('y', '?') }} {{ greet(punct='.', name='z') }}",
    "{% macro f(a, b=a ~ '!') %}{{ a }}{{ b }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ f(1) }}|{{ f(1, 2, 3, z=4) }}|{{ f() }}|{{ f }}|{{ f|string }}|{{ f.name }}",
    "{% macro f(a) %}{{ a }}{% endmacro %}{{ f(1, 2) }}",
    "{% macro f(a) %}{{ a }}{% endmacro %}{{ f(1, q=2) }}",
    "{% macro f(a) %}{{ a }}{% endmacro %}{{ f(1, a=2) }}",
    "{% macro f() %}[{{ x }}]{% endmacro %}{% for x in [1] %}{{ f() }}{% endfor %}{% set x = 5 %}{{ f() }}",
    "{{ f() }}{% macro f() %}x{% endmacro %}",
    "{% macro f(x) %}{% set x = x ~ '!' %}{% set y = 1 %}{{ x }}{% endmacro %}{{ f('a') }}{{ y }}{% set x = 'outer' %}{{ f(x) }}{{ x }}",
    "{% macro f() %}{{ loop.index }}{% endmacro %}{% for i in [1] %}{{ f() }}{% endfor %}",
    "{% macro item(m) %}<{{ m.role }}>{{ m.content|default('', true)|trim }}</{{ m.role }}>\n{% endmacro %}{% for m in messages %}{{ item(m) }}{% endfor %}",
    "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n }}*{{ fact(n - 1) }}{% endif %}{% endmacro %}{{ fact(4) }}",
    "{% macro outer() %}{% macro inner(v) %}({{ v }}){% endmacro %}{{ inner(1) }}{{ inner(2) }}{% endmacro %}{{ outer() }}{{ inner is defined }}",
    "{% for m in messages %}{% macro show() %}{{ m.role }}#{{ loop.index }}{% endmacro %}{{ show() }} {% endfor %}",
    "{% macro render_content(content) %}{% if content is string %}{{ content }}{% else %}{% for part in content %}{% if part.type == 'text' %}{{ part.text }}{% endif %}{% endfor %}{% endif %}{% endmacro %}{{ render_content('plain') }}|{{ render_content([{'type': 'text', 'text': 'a'}, {'type': 'image'}, {'type': 'text', 'text': 'b'}]) }}",
    "{%- macro m(x) -%}\n  [{{ x }}]\n{%- endmacro -%}\n{{ m(1) }}\n{{ m(2) }}\n",
    "{% macro m() %}{{ raise_exception('from a macro: ' ~ varargs|length) }}{% endmacro %}{{ m(1, 2) }}",
    # caller / call blocks
    "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ messages|length }}{% endcall %}",
    "{% macro f(a) %}<{{ caller(a) }}>{% endmacro %}{% for i in [1, 2] %}{% call(v) f(i) %}{{ v }}{{ loop.index }}{{ i }}{% endcall %}{% endfor %}",
    "{% macro each(xs) %}{% for x in xs %}{{ caller(x, loop.index) }}{% endfor %}{% endmacro %}{% call(x, i, sep=', ') each(['a', 'b']) %}{{ i }}={{ x }}{{ sep }}{% endcall %}",
    "{% macro f() %}<{{ caller() }}>{% endmacro %}{{ f() }}",
    "{% macro f() %}{{ caller() }}{{ caller() }}{% endmacro %}{% call f() %}{% set z = 1 %}{{ z }}{% endcall %}{{ z }}",
    # namespace()
    "{% set ns = namespace(found=false, n=0) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.found = true %}{% set ns.n = ns.n + 1 %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n }}",
    "{% set ns = namespace(a=1, b='x') %}{{ ns }}|{{ ns.a }}|{{ ns['b'] }}|{{ ns.zz }}|{{ ns is mapping }}|{{ ns is defined }}|{{ ns == ns }}",
    "{% set ns = namespace({'a': 2}, c=3) %}{{ ns.a }}{{ ns.c }}{{ ns.items }}{% set ns2 = namespace([('k', 'v')]) %}{{ ns2.k }}{{ namespace() }}",
    "{% set ns = namespace(a=1) %}{{ ns|length }}",
    "{% set ns = namespace(a=1) %}{{ ns|tojson }}",
    "{% set ns = namespace(_a=1) %}",
    "{% set ns = namespace(a=1) %}{% set ns._b = 1 %}",
    "{% set x = 1 %}{% set x.a = 1 %}",
    "{% set ns.a = 1 %}",
    "{% set ns = namespace(last=none) %}{% for m in messages %}{% set ns.last = m %}{% endfor %}{{ ns.last.role if ns.last else 'none' }}",
    "{% set ns = namespace(items=[]) %}{% for m in messages %}{% set ns.items = ns.items + [m.role] %}{% endfor %}{{ ns.items|join(',') }}",
    "{% set ns = namespace(x=1) %}{% macro bump() %}{% set ns.x = ns.x * 2 %}{% endmacro %}{{ bump() }}{{ bump() }}{{ ns.x }}",
    # block set
    "{% set x %}a{{ 1 }}b{% endset %}{{ x }}{{ x|length }}{% set y | upper %}q{{ x }}{% endset %}{{ y }}",
    "{% set x | trim | replace('a', 'b') %}\n  a {{ messages|length }} a\n{% endset %}[{{ x }}]",
    "{% for m in messages %}{% set line %}{{ m.role }}: {{ m.content }}{% endset %}{{ line|length }};{% endfor %}{{ line }}",
    "{% set x %}{% set inner = 5 %}{{ inner }}{% endset %}{{ x }}[{{ inner }}]",
    "{% set body %}{% for t in tools or [] %}{{ t|tojson }}\n{% endfor %}{% endset %}{{ body|trim }}",
    # strftime_now with the frozen date
    "{{ strftime_now('%Y-%m-%d %d %b %Y %H:%M:%S %A %a %B %j %p %I %y %e %%') }}",
    "{{ strftime_now('%Z|%z|%f|') }}{{ strftime_now('') }}{{ strftime_now(format='%m/%d') }}",
    "{% set date_string = strftime_now('%d %B %Y') %}Today Date: {{ date_string }}",
    "{{ strftime_now(5) }}",
    # |safe and Markup
    "{{ ('<a>'|safe) + '<b>' }}|{{ '<c>' + ('<a>'|safe) }}|{{ ('<a>'|safe) ~ '<' }}|{{ ('x'|safe) * 2 }}|{{ ('a{}'|safe).format('<') }}|{{ ('<a>'|safe).replace('a', '<') }}",
    "{{ ('ab'|safe)[0] + '<' }}|{{ ('ab'|safe)|upper + '<' }}|{{ ('ab'|safe)|trim + '<' }}|{{ ('ab'|safe)|string + '<' }}|{{ (('ab'|safe)|replace('a', 'b')) + '<' }}",
    "{{ messages[0].content|safe if messages else '' }}|{{ (1|safe) + '&' }}|{{ none|safe }}|{{ [1, '<']|safe }}|{{ ('x'|safe) == 'x' }}|{{ ('<'|safe)|length }}|{{ ['&'|safe] }}",
    "{{ (','|safe).join(['<', 1, '>'|safe]) }}|{{ ('a<b'|safe).split('<') }}|{{ ('<x>'|safe)|tojson }}|{{ ('ab'|safe)[1:] + '\"' }}|{{ '&'|safe|safe + \"'\" }}",
    "{{ ('x'|safe) + 1 }}",
    # str.format
    "{{ '{} {}'.format(1, 2) }}|{{ '{:>5}|{:<4}|{:^6}|{:05d}|{:.2f}|{:,}|{!r}'.format('a', 'b', 'c', 42, 3.14159, 1234567, 'q') }}",
    "{{ '{0.a} {0[b]} {1}'.format(cfg, 'x') }}|{{ '{name}={value!r}'.format(name='k', value=[1, 'v']) }}|{{ '{{literal}} {}'.format(none) }}",
    "{{ '{:+d}|{: d}|{:x}|{:#x}|{:X}|{:o}|{:#b}|{:_d}|{:*^9}|{:>+8.3f}|{:e}|{:.1%}|{:g}|{:.3g}'.format(5, 7, 255, 255, 255, 8, 5, 1234567, 'mid', 2.5, 12345.678, 0.256, 0.0001, 1234.5) }}",
    "{{ '{:.3}|{:10.2}|{:=+6d}|{:06.2f}|{}|{:d}|{}|{:}'.format('abcdef', 'xyz', 42, -1.5, true, false, 1.0, 'é') }}",
    "{{ 'a{}b{x}c{0}'.format(1, x='y') }}",
    "{{ '{0}{}'.format(1, 2) }}",
    "{{ '{} {}'.format(1) }}",
    "{{ '{missing}'.format(a=1) }}",
    "{{ 'x}'.format() }}",
    "{{ '{:d}'.format('s') }}",
    "{{ '{0[nope]}'.format({'a': 1}) }}",
    "{% for m in messages %}{{ '<|{}|>\\n{}\\n'.format(m.role, m.content|default('')) }}{% endfor %}",
    # generation blocks
    "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{{ loop.index }}{% set z = 3 %}{{ z }}{% endgeneration %}{{ z }}{% else %}{{ m.content }}{% endif %}\n{% endfor %}",
    "{%- for message in messages %}\n    {%- if message['role'] == 'assistant' %}\n        {{- '<|assistant|>' }}\n        {%- generation %}\n            {{- message['content'] + eos_token }}\n        {%- endgeneration %}\n    {%- else %}\n        {{- '<|' + message['role'] + '|>' + message['content'] }}\n    {%- endif %}\n{%- endfor %}",
]

# Templates in the shape of the real ones operators meet in fine-tunes' tokenizer_config.json.
REAL_SHAPED = [
    # ChatML (Qwen-2.5 style): namespace loop over messages, tools through tojson
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are a helpful assistant.' }}\n    {%- endif %}\n    {{- \"\\n\\n# Tools\\n\\n<tools>\" }}\n    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n    {{- \"\\n</tools><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n{%- for message in messages[::-1] %}\n    {%- set index = (messages|length - 1) - loop.index0 %}\n    {%- if ns.multi_step_tool and message.role == \"user\" %}\n        {%- set ns.multi_step_tool = false %}\n        {%- set ns.last_query_index = index %}\n    {%- endif %}\n{%- endfor %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content|default('') + '<|im_end|>' + '\\n' }}\n    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content|default('') }}\n        {%- if loop.index0 > ns.last_query_index %}{{- '[after last query]' }}{%- endif %}\n        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n        {{- '<|im_start|>user\\n<tool_response>\\n' + message.content|default('') + '\\n</tool_response><|im_end|>\\n' }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n",
    # Llama-3.1 style: strftime_now date, system message extraction, block set, tojson(indent=4)
    "{{- bos_token }}\n{%- if not date_string is defined %}\n    {%- if strftime_now is defined %}\n        {%- set date_string = strftime_now(\"%d %b %Y\") %}\n    {%- else %}\n        {%- set date_string = \"26 Jul 2024\" %}\n    {%- endif %}\n{%- endif %}\n{%- if messages and messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|default('')|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n{%- set tool_block %}\n{%- for t in tools or [] %}\n{{- t | tojson(indent=4) }}\n{{- \"\\n\\n\" }}\n{%- endfor %}\n{%- endset %}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{%- if tool_block %}{{- \"Tools:\\n\" + tool_block }}{%- endif %}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n{%- for message in messages %}\n    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content']|default('')|trim + '<|eot_id|>' }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n",
    # Mistral style: alternation check through a namespace, macro for the instruction block
    "{%- macro inst(content, system='') -%}\n[INST] {% if system %}{{ system }}\n\n{% endif %}{{ content }}[/INST]\n{%- endmacro -%}\n{%- if messages and messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}\n{{- bos_token }}\n{%- set ns = namespace(index=0) %}\n{%- for message in loop_messages %}\n    {%- if message.role in ['user', 'assistant'] %}\n        {%- if (message['role'] == 'user') != (ns.index % 2 == 0) %}\n            {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n        {%- endif %}\n        {%- set ns.index = ns.index + 1 %}\n    {%- endif %}\n{%- endfor %}\n{%- for message in loop_messages %}\n    {%- if message['role'] == 'user' %}\n        {{- inst(message['content']|default(''), system_message if loop.last and system_message is defined else '') }}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content']|default('') + eos_token }}\n    {%- endif %}\n{%- endfor %}\n",
    # Granite style: macros with caller, namespace flags, str.format of roles
    "{%- macro role_block(role) -%}\n<|start_of_role|>{{ role }}<|end_of_role|>{{ caller() }}<|end_of_text|>\n{% endmacro -%}\n{%- set ns = namespace(has_system=false) %}\n{%- for m in messages %}{%- if m.role == 'system' %}{%- set ns.has_system = true %}{%- endif %}{%- endfor %}\n{%- if not ns.has_system %}\n{%- call role_block('system') %}Knowledge Cutoff Date: April 2024.\nToday's Date: {{ strftime_now('%B %d, %Y') }}.{% endcall %}\n{%- endif %}\n{%- for m in messages %}\n{%- call role_block(m.role) %}{{ m.content|default('')|safe }}{% endcall %}\n{%- endfor %}\n{%- if add_generation_prompt %}{{ '<|start_of_role|>{}<|end_of_role|>'.format('assistant') }}{%- endif %}",
]


def frozen_clock():
    """Makes transformers' strftime_now() see FROZEN_NOW (it calls datetime.now())."""
    import datetime as datetime_module

    import transformers.utils.chat_template_utils as ctu

    class FrozenDatetime(datetime_module.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(*FROZEN_NOW)

    ctu.datetime = FrozenDatetime
    ctu._compile_jinja_template.cache_clear()


def make_construct_cases(contexts):
    frozen_clock()
    cases = []
    for kind, templates in (("construct", CONSTRUCTS), ("real", REAL_SHAPED)):
        for i, template in enumerate(templates):
            results = []
            for ci in range(len(contexts)):
                result = hf_render(template, contexts[ci])
                if "syntax_error" in result:
                    raise SystemExit(f"{kind} template {i} does not parse: {result['syntax_error']}\n{template}")
                result.pop("partial", None)
                results.append({"context": ci, **result})
            cases.append({"id": f"{kind}-{i}", "template": template, "results": results})
    return cases

# ---------------------------------------------------------------------------------------------------
# (c) templates that must be refused at compile time
# ---------------------------------------------------------------------------------------------------

REFUSED = [
    ("{% filter upper %}x{% endfilter %}", "filter block", 1),
    ("{% call undefined_macro() %}x{% endcall %}", "undefined_macro()", 1),
    ("line one\n{% macro m(caller) %}{{ caller() }}{% endmacro %}", "macro parameter named caller", 2),
    ("{% macro m(a, kwargs) %}{% endmacro %}", "macro parameter named kwargs", 1),
    ("{% set ns = namespace() %}{% set ns.a, b = 1, 2 %}", "namespace attribute assignment", 1),
    ("{% set ns = namespace() %}{% set ns.a %}x{% endset %}", "block set of a namespace attribute", 1),
    ("{% macro m() %}{% endmacro %}{{ m.render() }}", ".render()", 1),
    ("{% include 'other.jinja' %}", "include", 1),
    ("{% import 'macros.jinja' as m %}", "import", 1),
    ("{% from 'macros.jinja' import m %}", "from", 1),
    ("{% extends 'base.jinja' %}", "extends", 1),
    ("{% block content %}x{% endblock %}", "block", 1),
    ("{% with a = 1 %}{{ a }}{% endwith %}", "with", 1),
    ("{% autoescape true %}x{% endautoescape %}", "autoescape", 1),
    ("{% raw %}{{ x }}{% endraw %}", "raw", 1),
    ("{%- raw -%}x{% endraw %}", "raw", 1),
    ("{{ dict(a=1) }}", "dict()", 1),
    ("{{ cycler('a', 'b').next() }}", "cycler()", 1),
    ("{{ foo() }}", "foo()", 1),
    ("{{ messages|title }}", "|title", 1),
    ("{{ messages|sort|list }}", "|sort", 1),
    ("{{ x|int }}", "|int", 1),
    ("{{ x|indent(2) }}", "|indent", 1),
    ("{{ names|map('title')|list }}", "|title", 1),
    ("{{ items|select('callable')|list }}", "is callable", 1),
    ("{{ x is callable }}", "is callable", 1),
    ("{{ x is sameas y }}", "is sameas", 1),
    ("{{ s.title() }}", ".title()", 1),
    ("{% for m in messages %}{{ loop.cycle('odd', 'even') }}{% endfor %}", "loop.cycle()", 1),
    ("{% for item in tree recursive %}{{ loop(item.children) }}{% endfor %}", "recursive for loop", 1),
    ("{{ f(*args) }}", "argument unpacking", 1),
    ("{{ x.__class__ }}", "attribute __class__", 1),
    ("{{ café }}", "non-ASCII identifier", 1),
    ("{{ '\\N{BULLET}' }}", "\\N{...} escape", 1),
    ("{{ none[1:] }}", "slice of a constant", 1),
    ("{{ (messages|map(attribute='role'))() }}", "call of an expression", 1),
]


def make_refused_cases():
    from transformers.utils.chat_template_utils import _compile_jinja_template

    cases = []
    for template, construct, line in REFUSED:
        try:  # records whether HF itself would compile it (most are valid Jinja that HF renders)
            _compile_jinja_template(template)
            hf_compiles = True
        except Exception:  # noqa: BLE001
            hf_compiles = False
        cases.append({"template": template, "construct": construct, "line": line, "hf_compiles": hf_compiles})
    return cases


# ---------------------------------------------------------------------------------------------------


def write_unicode_table(path):
    ranges = []
    start = None
    for cp in range(0x80, 0x110000):
        bad = not chr(cp).isprintable()
        if bad and start is None:
            start = cp
        elif not bad and start is not None:
            ranges.append((start, cp - 1))
            start = None
    if start is not None:
        ranges.append((start, 0x10FFFF))
    lines = [
        "// Generated by scripts/make_chat_expectations.py --write-unicode-table; do not edit.",
        "// Python %d.%d.%d (Unicode %s): code point ranges >= 0x80 where str.isprintable() is False."
        % (sys.version_info[:3] + (unicodedata.unidata_version,)),
        "constexpr CodePointRange k_nonprintable_ranges[] = {",
    ]
    row = []
    for a, b in ranges:
        row.append("{0x%X, 0x%X}," % (a, b))
        if len(row) == 6:
            lines.append("    " + " ".join(row))
            row = []
    if row:
        lines.append("    " + " ".join(row))
    lines.append("};")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "chat", "expectations.json"))
    ap.add_argument("--write-unicode-table", metavar="PATH", help="write the isprintable() table and exit")
    ap.add_argument("--seed", type=int, default=SEED, help="random-template seed (other seeds: local stress runs)")
    ap.add_argument("--count", type=int, default=N_RANDOM_TEMPLATES, help="number of random templates")
    args = ap.parse_args()
    if args.write_unicode_table:
        write_unicode_table(args.write_unicode_table)
        return
    versions = check_versions()
    phi = make_phi_cases()
    contexts, rendered = make_rendered_cases(args.seed, args.count)
    refused = make_refused_cases()
    constructs = make_construct_cases(contexts)
    data = {
        "generated_by": "scripts/make_chat_expectations.py",
        "versions": {**versions, "python": "%d.%d.%d" % sys.version_info[:3]},
        "seed": args.seed,
        "phi_templates": phi,
        "contexts": contexts,
        "rendered": rendered,
        "refused": refused,
        "frozen_now": list(FROZEN_NOW),
        "constructs": constructs,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
    results = [r for c in rendered for r in c["results"]]
    n_err = sum(1 for r in results if "error" in r)
    n_raise = sum(1 for r in results if "raises" in r)
    print(f"wrote {args.out}: {len(phi)} Phi cases, {len(rendered)} templates rendered on {len(results)} contexts "
          f"({n_err} expected errors, {n_raise} raise_exception), {len(refused)} refused", file=sys.stderr)


if __name__ == "__main__":
    main()
