#!/usr/bin/env bash
# Scope-assertion tests of the TextMate grammar with the real VS Code tokenizer
# (vscode-tmgrammar-test = vscode-textmate + vscode-oniguruma), run in Node.
# Exit codes: 0 passed or skipped (no node), 1 a test failed, 3 npm packages unavailable.
set -uo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node not found: skipping TextMate tests"
  exit 0
fi
if [ ! -x node_modules/.bin/vscode-tmgrammar-test ]; then
  if ! npm ci --no-audit --no-fund --loglevel=error; then
    echo "npm ci failed (offline?): cannot run TextMate tests" >&2
    exit 3
  fi
fi
# the committed grammar must be the generated one (see herdlang/editor/keywords.py)
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  ROOT="$(cd .. && pwd)"
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
if "$PY" -c "import herdlang" >/dev/null 2>&1; then
  (cd .. && "$PY" -m herdlang.editor.keywords --check) || exit 1
fi
node_modules/.bin/vscode-tmgrammar-test -g vscode/syntaxes/herd.tmLanguage.json 'tests/*.test.herd'
