# The API role: Flask + gunicorn, Celery client, the page. No TensorFlow in this image.
# Build from the repository root: docker build -f docker/api.Dockerfile .
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

RUN useradd --uid 10001 --user-group --create-home --no-log-init --shell /usr/sbin/nologin app

WORKDIR /app

# The whole folder, so `-c constraints.txt` inside api.txt resolves.
COPY requirements/ requirements/
RUN pip install --no-cache-dir -r requirements/api.txt

# Only what the API imports: its package, the shared settings and wire contract
# (digits/, no TensorFlow) and the page it serves at /.
COPY digits/ digits/
COPY api/ api/
COPY web/ web/

USER app
EXPOSE 8000
CMD ["gunicorn", "-c", "api/gunicorn_conf.py", "api:create_app()"]
