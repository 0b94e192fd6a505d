#!/usr/bin/env bash
# The rerank HTML report rendered in headless Chromium: every thumbnail decodes, every score and the prompt are
# on the page, and a prompt or file name holding markup stays text.
source "$(dirname "$0")/common.sh"
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then echo "report: chromium is not installed (scripts/setup installs it)"; exit 1; fi

model=$(ls -d "$fx"/clip/*.openai.safetensors | head -n 1)
mkdir -p "$tmp/imgs"
cp "${model%.openai.safetensors}".images/*.png "$tmp/imgs/"
first=$(ls "$tmp/imgs" | head -n 1)
cp "$tmp/imgs/$first" "$tmp/imgs/<img src=x onerror=alert(1)>.png"
prompt='a red backpack <script>document.title="pwned"</script>'
negative='<b>bold</b><svg onload=alert(2)>'
"$bin" rerank -m "$model" --vocab "$vocab" -p "$prompt" --negative "$negative" "$tmp/imgs" --html "$tmp/report.html" \
  --format jsonl >"$tmp/rows.jsonl" || { echo "report: rerank failed"; exit 1; }
n=$(wc -l <"$tmp/rows.jsonl")

# A copy of the page with a probe that counts decoded images once everything has loaded.
cp "$tmp/report.html" "$tmp/probe.html"
cat >>"$tmp/probe.html" <<'PROBE'
<script>window.addEventListener("load", () => {
  const imgs = [...document.images];
  document.title = "decoded=" + imgs.filter(i => i.complete && i.naturalWidth > 0).length + "/" + imgs.length;
});</script>
PROBE
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$tmp/profile" --virtual-time-budget=5000 \
  --dump-dom "file://$tmp/probe.html" >"$tmp/dom.html" 2>/dev/null

failed=0
check() { if eval "$2"; then :; else echo "report: FAIL $1"; failed=$((failed + 1)); fi; }
check "all $n thumbnails decode" "grep -q '<title>decoded=$n/$n</title>' '$tmp/dom.html'"
check "prompt shown as text" "grep -qF 'a red backpack &lt;script&gt;' '$tmp/dom.html'"
check "negative prompt shown as text" "grep -qF '&lt;b&gt;bold&lt;/b&gt;&lt;svg onload=alert(2)&gt;' '$tmp/dom.html'"
check "no element from the negative prompt" "! grep -qE '<b>bold|<svg' '$tmp/dom.html'"
check "no injected element" "! grep -q 'onerror=alert' <(grep -o '<img [^>]*>' '$tmp/dom.html' | sed 's/alt=\"[^\"]*\"//')"
while read -r score; do
  check "score $score shown" "grep -qF '>$score<' '$tmp/dom.html'"
done < <(python3 -c "import json,sys; [print('%.4f' % json.loads(l)['score']) for l in open(sys.argv[1])]" "$tmp/rows.jsonl")
echo "report: $((n + 5 - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
