"""The TextMate grammar for `.herd`, built from the word lists in `keywords.py`.

VS Code (and GitHub's linguist, Sublime, Shiki, ...) read the generated JSON file
`editors/vscode/syntaxes/herd.tmLanguage.json`. Keeping the source here means block kinds,
units and keywords come from the grammar and schema instead of being typed twice.

Structure: top level holds imports and block headers; `{ ... }` bodies hold entries.
An entry `key = value` (or `key >= value`) is a begin/end region ending at a separator,
a comment, the end of the line or the next `key =`, so inside it bare words are
references and `name(` is a call, while outside it `kind label` is a nested block head.
"""

from __future__ import annotations

import json
import re
from typing import Any

from herdlang.editor.keywords import Words

NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def _alt(words: tuple[str, ...] | list[str]) -> str:
    """`(?:a|b|c)` with longest words first so `tokens` wins over `token`."""
    ordered = sorted(words, key=lambda w: (-len(w), w))
    return "(?:" + "|".join(re.escape(w) for w in ordered) + ")"


def build(words: Words) -> dict[str, Any]:
    """The grammar as a dict (the JSON VS Code loads)."""
    kw = _alt(words.keywords)
    name = rf"(?!{kw}\b){NAME}"  # a word that is not a keyword
    number = r"(?:\d[\d_]*(?:\.\d[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?"
    suffix = f"[{words.suffixes}]"
    entry_end = (
        r"(?=[;,}\])]|#|$)"
        rf"|(?=\b{NAME}\s*(?:=(?!=)|>=|<=|==|!=|>|<))"
        rf"|(?=\b{NAME}\s*\{{)"
        rf"|(?=\b{_alt(words.step_kinds + words.section_kinds)}\s+{NAME}\s*[({{])"
    )
    repo: dict[str, Any] = {}
    repo["comment"] = {
        "name": "comment.line.number-sign.herd",
        "match": r"(#).*$",
        "captures": {"1": {"name": "punctuation.definition.comment.herd"}},
    }
    repo["string"] = {
        "name": "string.quoted.double.herd",
        "begin": '"',
        "beginCaptures": {"0": {"name": "punctuation.definition.string.begin.herd"}},
        "end": '(")|$',
        "endCaptures": {
            "1": {"name": "punctuation.definition.string.end.herd"},
        },
        "patterns": [{"name": "constant.character.escape.herd", "match": r"\\."}],
    }
    repo["percentage"] = {
        "match": r"(?<![\w.])([+-]?\d[\d_]*(?:\.\d+)?)(%)",
        "captures": {
            "1": {"name": "constant.numeric.percentage.herd"},
            "2": {"name": "constant.numeric.percentage.herd keyword.other.unit.percent.herd"},
        },
    }
    repo["number"] = {
        "comment": "digits with _, fraction, exponent, scale suffix (K M B T G), then a unit",
        "match": (
            rf"(?<![\w.])([+-]?{number}({suffix})?)(?![A-Za-z0-9_])"
            rf"(?:[ \t]+({_alt(words.units)})\b(?![ \t]*=))?"
        ),
        "captures": {
            "1": {"name": "constant.numeric.herd"},
            "2": {"name": "keyword.other.unit.suffix.herd"},
            "3": {"name": "keyword.other.unit.herd"},
        },
    }
    repo["constant"] = {
        "patterns": [
            {"name": "constant.language.boolean.herd", "match": r"\b(?:true|false)\b"},
            {"name": "constant.language.null.herd", "match": r"\bnone\b"},
        ]
    }
    repo["operator"] = {
        "patterns": [
            {"name": "keyword.operator.arrow.herd", "match": "->"},
            {"name": "keyword.other.at.herd", "match": r"\bat\b"},
            {"name": "keyword.operator.comparison.herd", "match": "(?:>=|<=|==|!=|>|<)"},
            {"name": "keyword.operator.assignment.herd", "match": "="},
        ]
    }
    repo["separator"] = {"name": "punctuation.separator.herd", "match": "[;,]"}
    repo["call"] = {
        "begin": rf"\b(?:({_alt(words.call_names)})|({name}))\s*(\()",
        "beginCaptures": {
            "1": {"name": "support.function.herd"},
            "2": {"name": "entity.name.function.herd"},
            "3": {"name": "punctuation.section.parens.begin.herd"},
        },
        "end": r"\)",
        "endCaptures": {"0": {"name": "punctuation.section.parens.end.herd"}},
        "patterns": [{"include": "#arguments"}],
    }
    repo["arguments"] = {
        "patterns": [
            {"include": "#comment"},
            {
                "match": rf"\b({name})\s*(=)(?!=)",
                "captures": {
                    "1": {"name": "variable.parameter.herd"},
                    "2": {"name": "keyword.operator.assignment.herd"},
                },
            },
            {"include": "#value"},
        ]
    }
    repo["list"] = {
        "begin": r"\[",
        "beginCaptures": {"0": {"name": "punctuation.section.brackets.begin.herd"}},
        "end": r"\]",
        "endCaptures": {"0": {"name": "punctuation.section.brackets.end.herd"}},
        "patterns": [{"include": "#comment"}, {"include": "#value"}],
    }
    repo["parens"] = {
        "begin": r"\(",
        "beginCaptures": {"0": {"name": "punctuation.section.parens.begin.herd"}},
        "end": r"\)",
        "endCaptures": {"0": {"name": "punctuation.section.parens.end.herd"}},
        "patterns": [{"include": "#arguments"}],
    }
    repo["reference"] = {
        "match": rf"\b({name})((?:\.{NAME})*)",
        "captures": {
            "1": {"name": "variable.other.reference.herd"},
            "2": {"name": "variable.other.reference.herd"},
        },
    }
    repo["value"] = {
        "patterns": [
            {"include": "#comment"},
            {"include": "#string"},
            {"include": "#percentage"},
            {"include": "#number"},
            {"include": "#constant"},
            {"include": "#operator"},
            {"include": "#call"},
            {"include": "#list"},
            {"include": "#parens"},
            {"include": "#reference"},
            {"include": "#separator"},
        ]
    }
    repo["import"] = {
        "match": r"\b(import)\b",
        "captures": {"1": {"name": "keyword.control.import.herd"}},
    }
    repo["block-header"] = {
        "comment": "top level: KIND [NAME [extends PARENT]]; unknown kinds are errors (H0202)",
        "match": (
            rf"\b(?:({_alt(words.block_kinds)})\b|({name}))"
            rf"(?:\s+({name})(?:\s+(extends)\b(?:\s+({name}))?)?)?"
        ),
        "captures": {
            "1": {"name": "storage.type.block.herd"},
            "2": {"name": "invalid.illegal.unknown-block.herd"},
            "3": {"name": "entity.name.type.block.herd"},
            "4": {"name": "keyword.other.extends.herd"},
            "5": {"name": "entity.other.inherited-class.herd"},
        },
    }
    repo["extends"] = {
        "comment": "`extends PARENT` apart from the block's name (a comment between them)",
        "match": rf"\b(extends)\b(?:\s+({name}))?",
        "captures": {
            "1": {"name": "keyword.other.extends.herd"},
            "2": {"name": "entity.other.inherited-class.herd"},
        },
    }
    repo["block-arguments"] = {
        "begin": r"\(",
        "beginCaptures": {"0": {"name": "punctuation.section.parens.begin.herd"}},
        "end": r"\)",
        "endCaptures": {"0": {"name": "punctuation.section.parens.end.herd"}},
        "patterns": [{"include": "#arguments"}],
    }
    repo["body"] = {
        "name": "meta.block.herd",
        "begin": r"\{",
        "beginCaptures": {"0": {"name": "punctuation.section.block.begin.herd"}},
        "end": r"\}",
        "endCaptures": {"0": {"name": "punctuation.section.block.end.herd"}},
        "patterns": [{"include": "#entries"}],
    }
    repo["assignment"] = {
        "begin": rf"\b({name})\s*(=)(?!=)",
        "beginCaptures": {
            "1": {"name": "variable.other.property.herd"},
            "2": {"name": "keyword.operator.assignment.herd"},
        },
        "end": entry_end,
        "patterns": [{"include": "#value"}],
    }
    repo["condition"] = {
        "begin": rf"\b({name})\s*(>=|<=|==|!=|>|<)",
        "beginCaptures": {
            "1": {"name": "variable.other.property.herd"},
            "2": {"name": "keyword.operator.comparison.herd"},
        },
        "end": entry_end,
        "patterns": [{"include": "#value"}],
    }
    repo["continuation"] = {
        "comment": "a ramp continued on the next line: `-> 16M tokens at 2.87T tokens`",
        "begin": "->",
        "beginCaptures": {"0": {"name": "keyword.operator.arrow.herd"}},
        "end": entry_end,
        "patterns": [{"include": "#value"}],
    }
    steps = []
    for step in words.step_kinds:
        names = words.components.get(step, ())
        component = rf"({_alt(names)})\b|" if names else "()"
        steps.append(
            {
                "match": rf"\b({re.escape(step)})\b(?:\s+(?:{component}({name})))?",
                "captures": {
                    "1": {"name": "storage.type.step.herd"},
                    "2": {"name": "support.class.component.herd"},
                    "3": {"name": "entity.name.type.step.herd"},
                },
            }
        )
    nested = {
        "match": (
            rf"\b(?:({_alt(words.section_kinds)})\b|({name}))"
            rf"(?:(?:\s+({name}))(?=\s*(?:[({{;}}#]|$))|(?=\s*[({{]))"
        ),
        "captures": {
            "1": {"name": "storage.type.section.herd"},
            "2": {"name": "storage.type.nested.herd"},
            "3": {"name": "entity.name.type.block.herd"},
        },
    }
    repo["nested-header"] = {"patterns": [*steps, nested]}
    repo["entries"] = {
        "patterns": [
            {"include": "#comment"},
            {"include": "#assignment"},
            {"include": "#condition"},
            {"include": "#continuation"},
            {"include": "#nested-header"},
            {"include": "#block-arguments"},
            {"include": "#body"},
            {"include": "#value"},
        ]
    }
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
        "comment": "GENERATED by `python -m herdlang.editor.keywords --write` from herdlang/editor/textmate.py; do not edit",
        "name": "herd",
        "scopeName": "source.herd",
        "fileTypes": ["herd"],
        "patterns": [
            {"include": "#comment"},
            {"include": "#import"},
            {"include": "#string"},
            {"include": "#extends"},
            {"include": "#block-header"},
            {"include": "#block-arguments"},
            {"include": "#body"},
            {"include": "#separator"},
        ],
        "repository": repo,
    }


def dumps(words: Words) -> str:
    """The grammar file's exact text (stable, so a test can compare it)."""
    return json.dumps(build(words), indent=2, ensure_ascii=False) + "\n"
