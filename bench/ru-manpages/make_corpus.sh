#!/bin/sh
# Rebuilds corpus/ and pages.tsv from the Russian man pages installed on a Debian 12 machine.
#   apt-get update && apt-get install -y manpages-ru man-db groff-base
#   sh bench/ru-manpages/make_corpus.sh
# Every real page (not an alias symlink) under /usr/share/man/ru is rendered to plain UTF-8
# text; pages whose body is still largely English (more than 35% of the prose lines are
# untranslated) are left out. See SOURCE.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/corpus"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in /usr/share/man/ru/man*/*.gz; do
    [ -L "$f" ] && continue                      # aliases (utmpx -> utmp, latin1 -> iso_8859-1...)
    name=$(basename "$f" .gz)                    # e.g. ls.1
    MANWIDTH=100 LANG=C.UTF-8 LC_ALL=C.UTF-8 man --nh --nj -l "$f" 2>/dev/null \
        | col -bx > "$tmp/$name.txt"
    pkg=$(dpkg -S "$f" | cut -d: -f1)
    ver=$(dpkg-query -W -f='${Version}' "$pkg")
    printf '%s.txt\t%s\t%s\t%s\n' "$name" "${f#/usr/share/man/ru/}" "$pkg" "$ver" >> "$tmp/pages.all"
done
rm -rf "$out"
mkdir -p "$out"
python3 - "$tmp" "$out" "$here/pages.tsv" <<'PY'
import re
import shutil
import sys
from pathlib import Path

tmp, out, tsv = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
stop = set("the and of is to are with this that which for be by an it not in as or on from".split())
rows = ["doc_id\tsource\tdebian_package\tversion"]
for line in sorted((tmp / "pages.all").read_text().splitlines()):
    doc = line.split("\t")[0]
    text = (tmp / doc).read_text("utf-8")
    prose = [ln for ln in text.splitlines() if len(ln.split()) >= 6]
    english = [
        ln for ln in prose
        if not re.search("[а-яё]", ln)
        and sum(w.lower() in stop for w in re.findall("[A-Za-z]+", ln)) >= 2
    ]
    if len(english) > 0.35 * max(1, len(prose)):
        print(f"left out (untranslated): {doc}", file=sys.stderr)
        continue
    shutil.copy(tmp / doc, out / doc)
    rows.append(line)
tsv.write_text("\n".join(rows) + "\n")
print(f"{len(rows) - 1} pages kept", file=sys.stderr)
PY
