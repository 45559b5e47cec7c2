#!/usr/bin/env bash
# Copies up to N inputs that `go test -fuzz` found interesting from the
# build cache into the package's testdata/fuzz/<Target>/ so they are
# committed and replayed by every `go test`. Usage: save-corpus.sh PKGDIR TARGET [N]
set -euo pipefail
dir=$1 target=$2 n=${3:-40}
pkg=$(cd "$dir" && go list .)
src="$(go env GOCACHE)/fuzz/$pkg/$target"
[ -d "$src" ] || { echo "no cached corpus for $pkg $target" >&2; exit 0; }
mkdir -p "$dir/testdata/fuzz/$target"
ls -S "$src" | head -n "$n" | while read -r f; do cp "$src/$f" "$dir/testdata/fuzz/$target/$f"; done
echo "$dir/testdata/fuzz/$target: $(ls "$dir/testdata/fuzz/$target" | wc -l) inputs"
