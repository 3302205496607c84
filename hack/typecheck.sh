#!/usr/bin/env bash
# mypy (strict on ovnk.core, ovnk.cni and the lab's ovnk_lab). The root folders are mapped onto the
# ovnk package at install time, which mypy cannot see through, so give it a
# symlink tree with the import layout.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TREE="$ROOT/.venv/typecheck"
rm -rf "$TREE"; mkdir -p "$TREE/ovnk"
for f in "$ROOT"/ovnk/*; do ln -s "$f" "$TREE/ovnk/$(basename "$f")"; done
ln -s "$ROOT/core" "$TREE/ovnk/core"
ln -s "$ROOT/cni" "$TREE/ovnk/cni"
ln -s "$ROOT/plugins" "$TREE/ovnk/plugins"
ln -s "$ROOT/lab/ovnk_lab" "$TREE/ovnk_lab"
cd "$TREE"
MYPYPATH="$TREE" exec "$ROOT/.venv/bin/mypy" --config-file "$ROOT/pyproject.toml" --cache-dir "$ROOT/.venv/mypy-cache" -p ovnk -p ovnk_lab "$@"
