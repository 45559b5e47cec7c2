#!/usr/bin/env bash
# Runs every fuzz target in the module for a short time (default 3s each),
# starting from the committed corpus in each package's testdata/fuzz/.
set -euo pipefail
fuzztime=${1:-3s}
go=${GO:-go}
status=0
passed=0
failed=0
for pkg in $($go list ./...); do
  dir=$($go list -f '{{.Dir}}' "$pkg")
  targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u || true)
  # Packages whose tests need a build tag (cgo audio devices) declare it.
  tags=""
  if grep -qs '^//go:build audiodevice' "$dir"/*_test.go; then tags="-tags=audiodevice"; fi
  for t in $targets; do
    echo "fuzz $pkg $t ($fuzztime) $tags"
    if ! $go test $tags -run '^$' -fuzz "^${t}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/fuzz-$$.log 2>&1; then
      cat /tmp/fuzz-$$.log
      status=1
      failed=$((failed + 1))
    else
      passed=$((passed + 1))
    fi
  done
done
rm -f /tmp/fuzz-$$.log
echo "fuzz: $passed passed, $failed failed"
exit $status
