"""Editor support for `.herd`: keyword lists, TextMate grammar, Pygments lexer, LSP.

Everything here imports only the language front end (lark, pydantic), never torch, so
the language server starts in well under a second.
"""
