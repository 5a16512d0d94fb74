"""Ingestion throughput: the whole pipeline (read, chunk, embed, store) against the embedder
alone on the same chunk texts, measured in one run so the ratio is fair on a noisy machine."""

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_bench, print_result
from ingestion.errors import UnreadableDocumentError
from ingestion.pipeline import discover


async def run(corpus: Path, language: str, model: str | None) -> dict[str, float | int | str]:
    """Ingest the corpus, then encode the same chunks with the embedder alone."""
    files = discover([corpus])
    async with fresh_bench(language, model) as bench:
        report = await bench.ingestor.ingest(files, "bench", language)
        texts: list[str] = []
        for source in files:
            try:
                chunks = bench.ingestor.chunk(source, source.read(), "bench", bench.dense)
            except UnreadableDocumentError:
                continue
            texts.extend(chunk.embedding_text() for chunk in chunks)
        started = time.perf_counter()
        bench.dense.embed_passages(texts)
        encode_seconds = time.perf_counter() - started
    pipeline_rate = report.chunks_written / report.seconds
    encode_rate = len(texts) / encode_seconds
    return {
        "model": bench.dense.model_name,
        "chunks": report.chunks_written,
        "pipeline_chunks_per_s": round(pipeline_rate, 2),
        "encode_chunks_per_s": round(encode_rate, 2),
        "ratio": round(pipeline_rate / encode_rate, 3),
    }


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--language", choices=["en", "ru"], default="en")
    parser.add_argument("--model", help="one dense model (default: the language's)")
    args = parser.parse_args()
    print_result(asyncio.run(run(args.corpus, args.language, args.model)))


if __name__ == "__main__":
    main()
