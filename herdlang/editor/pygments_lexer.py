"""Pygments lexer for `.herd` (`pygmentize -l herd`, Sphinx, MkDocs).

Registered through the `pygments.lexers` entry point in pyproject. Block kinds, units,
keywords and component names come from `herdlang.editor.keywords`, i.e. from the Lark
grammar and the Pydantic schema, so the lexer never lags behind the language.

States mirror the TextMate grammar: `root` holds imports and block headers, `body`
holds entries, `value` runs from `=` to the end of the entry (separator, comment, end of
line or next key), `args`/`list` nest inside values and may span lines.
"""

from __future__ import annotations

import re

from pygments.lexer import RegexLexer, bygroups, include
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Whitespace,
)

from herdlang.editor.keywords import words as herd_words

_W = herd_words()
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_KW = "(?:" + "|".join(_W.keywords) + r")\b"
_IDENT = rf"(?!{_KW}){_NAME}"
_UNITS = "|".join(sorted(_W.units, key=lambda u: (-len(u), u)))
_NUMBER = r"[+-]?(?:\d[\d_]*(?:\.\d[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?"


def _alt(names: tuple[str, ...]) -> str:
    return "(?:" + "|".join(re.escape(n) for n in sorted(names, key=lambda n: (-len(n), n))) + ")"


_ENTRY_END = (
    rf"(?=[;,}}\])]|#|\n)|(?={_NAME}\s*(?:=(?!=)|>=|<=|==|!=|>|<))"
    rf"|(?={_NAME}\s*\{{)|(?={_alt(_W.step_kinds + _W.section_kinds)}\s+{_NAME}\s*[({{])"
)


def _step_rules() -> list:
    rules = []
    for step in _W.step_kinds:
        names = _W.components.get(step, ())
        if names:
            rules.append(
                (
                    rf"({re.escape(step)})(\s+)({_alt(names)})\b",
                    bygroups(Keyword.Type, Whitespace, Name.Builtin),
                )
            )
        rules.append((rf"({re.escape(step)})(\s+)({_IDENT})", bygroups(Keyword.Type, Whitespace, Name.Class)))
    return rules


class HerdLexer(RegexLexer):
    """Lexer for herd training-pipeline specs."""

    name = "herd"
    aliases = ["herd"]
    filenames = ["*.herd"]
    mimetypes = ["text/x-herd"]
    url = "https://github.com/herd/herd"

    tokens = {
        "common": [
            (r"[ \t\r]+", Whitespace),
            (r"\n", Whitespace),
            (r"#.*?$", Comment.Single),
        ],
        "root": [
            include("common"),
            (r"(import)\b", Keyword.Namespace),
            (r'"', String.Double, "string"),
            (
                rf"({_alt(_W.block_kinds)})\b"
                rf"(?:(\s+)({_IDENT})(?:(\s+)(extends)\b(?:(\s+)({_IDENT}))?)?)?",
                bygroups(Keyword.Declaration, Whitespace, Name.Class, Whitespace, Keyword, Whitespace, Name.Class),
            ),
            (
                rf"({_IDENT})(?:(\s+)({_IDENT})(?:(\s+)(extends)\b(?:(\s+)({_IDENT}))?)?)?",
                bygroups(Name.Tag, Whitespace, Name.Class, Whitespace, Keyword, Whitespace, Name.Class),
            ),
            # `extends` apart from the block's name (a comment between them ends the match above)
            (rf"(extends)\b(?:(\s+)({_IDENT}))?", bygroups(Keyword, Whitespace, Name.Class)),
            (r"\(", Punctuation, "args"),
            (r"\{", Punctuation, "body"),
            (r"[;,]", Punctuation),
        ],
        "body": [
            include("common"),
            (r"\}", Punctuation, "#pop"),
            (rf"({_IDENT})(\s*)(=)(?!=)", bygroups(Name.Attribute, Whitespace, Operator), "value"),
            (rf"({_IDENT})(\s*)(>=|<=|==|!=|>|<)", bygroups(Name.Attribute, Whitespace, Operator), "value"),
            (r"->", Operator, "value"),
            *_step_rules(),
            (
                rf"({_alt(_W.section_kinds)})\b(?:(\s+)({_IDENT}))?",
                bygroups(Keyword.Type, Whitespace, Name.Class),
            ),
            (rf"({_IDENT})(?:(\s+)({_IDENT}))?", bygroups(Name.Tag, Whitespace, Name.Class)),
            (r"\(", Punctuation, "args"),
            (r"\{", Punctuation, "body"),
            (r"[;,]", Punctuation),
            include("values"),
        ],
        "value": [
            (r"[ \t\r]+", Whitespace),
            (_ENTRY_END, Whitespace, "#pop"),
            include("values"),
        ],
        "values": [
            (r"#.*?$", Comment.Single),
            (r'"', String.Double, "string"),
            (r"[+-]?\d[\d_]*(?:\.\d+)?%", Number),
            (
                rf"({_NUMBER}[{_W.suffixes}]?)(?![A-Za-z0-9_])(?:([ \t]+)({_UNITS})\b(?![ \t]*=))?",
                bygroups(Number, Whitespace, Keyword.Pseudo),
            ),
            (r"(true|false|none)\b", Keyword.Constant),
            (r"at\b", Keyword),
            (r"->", Operator),
            (r">=|<=|==|!=|>|<|=", Operator),
            (rf"({_alt(_W.call_names)})(\s*)(\()", bygroups(Name.Builtin, Whitespace, Punctuation), "args"),
            (rf"({_IDENT})(\s*)(\()", bygroups(Name.Function, Whitespace, Punctuation), "args"),
            (r"\[", Punctuation, "list"),
            (r"\(", Punctuation, "args"),
            (rf"{_IDENT}(?:\.{_NAME})*", Name.Variable),
            (r"[;,]", Punctuation),
        ],
        "args": [
            include("common"),
            (r"\)", Punctuation, "#pop"),
            (rf"({_IDENT})(\s*)(=)(?!=)", bygroups(Name.Attribute, Whitespace, Operator)),
            include("values"),
        ],
        "list": [
            include("common"),
            (r"\]", Punctuation, "#pop"),
            include("values"),
        ],
        "string": [
            (r'"', String.Double, "#pop"),
            (r"\\.", String.Escape),
            (r'[^"\\\n]+', String.Double),
            (r"\n", String.Double, "#pop"),  # unterminated: end at the line
        ],
    }
