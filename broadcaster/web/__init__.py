"""The web service (DESIGN §10, issue 12): one ASGI app with the HTTP API for producers
(`/api/v1`), Prometheus metrics (`/metrics`), `/healthz` and `/readyz`.

    app.py       the app factory: wires the parts below to one Bootstrap
    docs.py      the docs page: Swagger UI from package files (no CDN)
    config.py    the web's own settings (WEB_*), read from the environment
    tokens.py    bearer tokens: created by the CLI, only a hash stored
    auth.py      the request side of tokens: scopes, constant-time check, failure delay
    problems.py  every error as RFC 9457 application/problem+json
    limits.py    the request body size limit (413)
    models.py    what the API takes and gives (pydantic; the producer's JobRequest reused)
    queries.py   the reads the API needs beyond the JobStore (cursor pages, campaigns)
    api.py       the /api/v1 routes
    scheduling.py  POST /broadcasts: validate all, refuse conflicts, insert, replays
    metrics.py   /metrics: figures from the tables and Redis, cached; request metrics
    attempt_totals.py  running totals over broadcast_attempts for /metrics
    health.py    /healthz and /readyz
    server.py    uvicorn, stopped by SIGTERM like every broadcaster process
"""
