#!/usr/bin/env sh
# Print the path of a Python >= 3.12 interpreter (gemma 4 needs it), or fail saying so.
# 3.12 is preferred (the pinned stack was verified on it), then any newer one. pyenv shims fail
# for versions that are installed but not active, so pyenv's real binaries are tried directly.
ok() { [ -n "$1" ] && [ -x "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }
on_path() { command -v "$1" 2>/dev/null; }
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
pyenv_bins() { ls -d "$root"/versions/"$1"*/bin/python3 2>/dev/null | sort -rV; }
for path in "${PYTHON:+$(on_path "$PYTHON")}" "$(on_path python3.12)" $(pyenv_bins 3.12.) \
            "$(on_path python3.13)" $(pyenv_bins 3.13.) "$(on_path python3)" \
            $(pyenv_bins 3.1) /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
  if ok "$path"; then echo "$path"; exit 0; fi
done
echo "error: no Python >= 3.12 found (gemma 4 requires it)." >&2
echo "Install one (e.g. 'pyenv install 3.12' or your OS's python3.12 package)," >&2
echo "or name it: make PYTHON=/path/to/python3.12 ..." >&2
exit 1
