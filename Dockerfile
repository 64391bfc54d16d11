# ctxbudget decision service. Build: docker build -t ctxbudget .
# Run:   docker run -p 8181:8181 -v $PWD/policies:/policies:ro -v ctxbudget-audit:/audit \
#          -e CTXBUDGET_SERVE_TOKENS='{"support-assistant": ["<32 random characters>"]}' \
#          -e CTXBUDGET_AUDIT_SECRET=/run/secrets/audit.secret ctxbudget   # policies that keep no content
# One container per host or per core group; each keeps its own audit log (docs/service.md).
FROM python:3.11-slim

RUN useradd --system --uid 10001 --home-dir /nonexistent ctxbudget \
 && mkdir -p /audit && chown ctxbudget /audit
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY schemas ./schemas
RUN pip install --no-cache-dir '.[serve]'

USER ctxbudget
VOLUME ["/audit"]
EXPOSE 8181
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; \
sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8181/health').status == 200 else 1)"
# 0.0.0.0 inside the container only: publish the port to the load balancer, not the world.
ENTRYPOINT ["ctxbudget", "serve", "--host", "0.0.0.0", "--port", "8181", \
            "--policies", "/policies", "--audit-log", "/audit/decisions.jsonl"]
CMD ["--workers", "2"]
