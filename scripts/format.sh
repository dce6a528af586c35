#!/bin/bash
# SPDX-License-Identifier: MIT
# Formats every C/C++ source and header of the project with the committed .clang-format:
#   scripts/format.sh           rewrites the files in place (make format)
#   scripts/format.sh --check   changes nothing, names each file that would change and
#                               exits 1 if there is one (make format-check)
# The files are those git knows or would add (tracked and untracked, .gitignore applied),
# so new files and folders are covered; outside a git checkout, the source folders.
# CLANG_FORMAT=clang-format-19 picks another binary.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cf=${CLANG_FORMAT:-clang-format}
check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
if ! command -v "$cf" >/dev/null; then
  echo "format: $cf not found (Debian: apt-get install clang-format)" >&2
  exit 2
fi

list() {
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard -- '*.c' '*.cc' '*.cpp' '*.h' '*.hpp'
  else
    find lib fusefs tests tools docs/examples -type f \
      \( -name '*.c' -o -name '*.cc' -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' \) -print0
  fi
}
files=()
while IFS= read -r -d '' f; do
  [ -f "$f" ] && files+=("$f")  # a tracked file deleted in the work tree is skipped
done < <(list | sort -z)
[ ${#files[@]} -gt 0 ] || { echo "format: no source files found" >&2; exit 2; }

if [ $check = 0 ]; then
  "$cf" -i --style=file "${files[@]}"
  exit 0
fi
bad=0
for f in "${files[@]}"; do
  if ! "$cf" --style=file --dry-run -Werror --ferror-limit=1 "$f" 2>/dev/null; then
    echo "needs formatting: $f"
    bad=$((bad + 1))
  fi
done
if [ $bad -gt 0 ]; then
  echo "$bad of ${#files[@]} files need formatting: run make format" >&2
  exit 1
fi
echo "${#files[@]} files formatted"
