"""The Llama 3 chat format: exact token layout and which tokens are trained on."""

from __future__ import annotations

from runtime.post.chat import IGNORE, encode_dialog, encode_prompt, shifted

DIALOG = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "add 2 3"},
          {"role": "assistant", "content": "5"}]


def test_dialog_renders_as_llama3_text(tok):
    enc = encode_dialog(tok, DIALOG)
    text = tok.decode(enc.tokens)
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nbe brief<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nadd 2 3<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n5<|eot_id|>")


def test_only_assistant_content_and_its_eot_are_targets(tok):
    enc = encode_dialog(tok, DIALOG)
    trained = [t for t, m in zip(enc.tokens, enc.target, strict=True) if m]
    assert trained == tok.encode("5") + [tok.eot_id]
    inputs, targets = shifted(enc)
    assert inputs == enc.tokens[:-1]
    assert [t for t in targets if t != IGNORE] == trained


def test_formatting_mask_drops_headers_and_eot(tok):
    enc = encode_dialog(tok, DIALOG)
    _, targets = shifted(enc, mask_formatting=True)
    assert [t for t in targets if t != IGNORE] == tok.encode("5")
    formatting = {t for t, f in zip(enc.tokens, enc.formatting, strict=True) if f}
    assert tok.eot_id in formatting and tok.special_id("<|start_header_id|>") in formatting


def test_prompt_ends_with_an_open_assistant_header(tok):
    ids = encode_prompt(tok, DIALOG[:2])
    assert tok.decode(ids).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
