"""Running it in production: health and metrics over HTTP, the per-question log line,
retention of personal data, and deleting one person's data on request."""
