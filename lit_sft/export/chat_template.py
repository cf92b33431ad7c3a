"""A prompt style as a Jinja chat template, for `tokenizer_config.json`.

`tokenizer.apply_chat_template(messages, add_generation_prompt=True)` then renders exactly the
text `lit_sft.serving.render.render_chat` renders (the training prompt for one user message), so
transformers, vLLM and TGI prompt the model as lit_sft trained it. A user message may carry an
`input` field (Alpaca's input); a system message is rendered where the style has a system turn.
"""

from __future__ import annotations

import json

from lit_sft.prompts import PromptStyle
from lit_sft.serving.render import EOS_TEXT, system_turn

_SYSTEM_MARK = "\x00SYSTEM\x00"  # stands for the system message while its turn is split up


def _literal(text: str) -> str:
    """`text` as a Jinja string literal (Jinja reads Python's escapes, which JSON's are)."""
    return json.dumps(text)


def chat_template(style: PromptStyle) -> str:
    """The Jinja template of `style`: turns as `render_chat` renders them."""
    before, _, after = system_turn(style, _SYSTEM_MARK).partition(_SYSTEM_MARK)
    system = ""
    if before or after:  # an empty system message has no turn, as in `PromptStyle.prompt`
        system = (
            "{%- if message['content'] -%}"
            f"{{{{ {_literal(before)} + message['content'] + {_literal(after)} }}}}"
            "{%- endif -%}"
        )
    user = f"{{{{ {_literal(style.instruction_prefix)} + message['content'] }}}}"
    user_input = f"{{{{ {_literal(style.input_prefix)} + message['input'] }}}}"
    header = _literal(style.response_header)
    answer = f"{{{{ {header} + message['content'] + {_literal(EOS_TEXT)} }}}}"
    return "".join(
        [
            "{%- for message in messages -%}",
            "{%- if message['role'] == 'system' -%}",
            system,
            "{%- elif message['role'] == 'user' -%}",
            user,
            "{%- if message.get('input') -%}",
            user_input,
            "{%- endif -%}",
            "{%- elif message['role'] == 'assistant' -%}",
            answer,
            "{%- endif -%}",
            "{%- endfor -%}",
            f"{{%- if add_generation_prompt -%}}{{{{ {header} }}}}{{%- endif -%}}",
        ]
    )
