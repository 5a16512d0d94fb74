"""Hostile but allowed files under the ingestion limits: a 49 MB HTML page on one line and a
620 KB PDF of 99,000 pages, each ingested by `python -m ingestion add` in its own process (the
real CLI, the bundled models), with its wall time and peak memory. Before the limits these took
371 s and 8.9 GB (the HTML, plus about 70 minutes of embedding) and 99,000 chunks (the PDF).

    python bench/hostile.py [--html-mb 49] [--pdf-pages 99000]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import print_result

ROOT = Path(__file__).resolve().parent.parent
# The CLI, reporting its own peak memory last on stderr.
_CHILD = (
    "import resource, sys\n"
    "from ingestion.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def one_line_html(path: Path, megabytes: int) -> Path:
    """An HTML page whose text is one paragraph on one line."""
    sentence = b"lorem ipsum dolor sit amet consectetur adipiscing elit "
    with path.open("wb") as out:
        out.write(b"<html><head><title>One line</title></head><body><p>")
        for _ in range(megabytes * 1024 * 1024 // len(sentence)):
            out.write(sentence)
        out.write(b"</p></body></html>")
    return path


def many_page_pdf(path: Path, pages: int) -> Path:
    """A small PDF whose page tree lists one page object `pages` times."""
    content = b"BT /F1 12 Tf 72 720 Td (Page text) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b"3 0 R " * pages + b"] /Count %d >>" % pages,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    body = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    body += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(bytes(body))
    return path


def ingest(path: Path, store: Path) -> dict[str, object]:
    """Run the CLI on one file in a child process: time, peak memory, what it reported."""
    env = {**os.environ, "QDRANT_PATH": str(store), "HF_HUB_OFFLINE": "1"}
    env.pop("QDRANT_URL", None)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, "add", str(path), "--collection", "hostile", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    peak_kb = int(done.stderr.rsplit("MAXRSS ", 1)[-1].split()[0])
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    failed = [line for line in done.stdout.splitlines() if line.startswith("failed")]
    return {
        "file_mb": round(path.stat().st_size / 1024 / 1024, 2),
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_kb / 1024),
        "chunks_written": summary["chunks_written"],
        "exit": done.returncode,
        "report": failed[0] if failed else "",
    }


def main() -> None:
    """Build the files, ingest each in a fresh process, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--html-mb", type=int, default=49)
    parser.add_argument("--pdf-pages", type=int, default=99_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        note = folder / "note.txt"
        note.write_text("The canteen opens at noon on weekdays.", encoding="utf-8")
        # The same run on a one-line note: what loading the models and the store costs.
        baseline = ingest(note, folder / "store-note")
        pdf = ingest(many_page_pdf(folder / "pages.pdf", args.pdf_pages), folder / "store-pdf")
        html = ingest(one_line_html(folder / "line.html", args.html_mb), folder / "store-html")
    print_result({"baseline": baseline, "pdf": pdf, "html": html})


if __name__ == "__main__":
    main()
