# Sourced by the shell tests: the binary under test ($1), the fixtures, the vocabulary, a scratch folder.
set -u
bin=$1
fx=${CLIPGUIDE_FIXTURES:-$PWD/../shared/fixtures}
vocab=$fx/tokenizer/bpe_simple_vocab_16e6.txt.gz
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Counting checks: `... && ok || bad "what failed"`; a script ends with its counts and fails if any failed.
pass=0
failed=0
ok() { pass=$((pass + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
