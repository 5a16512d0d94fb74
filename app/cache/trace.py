"""The cache's mark on a trace: a served answer's trace carries the tag "cache-hit"."""

from langfuse import propagate_attributes

from app.tracing import Tracer

HIT_TAG = "cache-hit"


def tag_hit(tracer: Tracer) -> None:
    """Add the tag to the trace of the run in progress. Called between steps, where the run's
    root observation is the current one: Langfuse merges the tag into the trace's tags (the
    collections) and sets it on the root."""
    if tracer.enabled:
        with propagate_attributes(tags=[HIT_TAG]):
            pass
