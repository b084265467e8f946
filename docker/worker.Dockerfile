# The worker role: a Celery worker (threads pool) holding the Keras CNN.
# Build from the repository root: docker build -f docker/worker.Dockerfile .
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    MODEL_DIR=/var/lib/digits/models \
    MODEL_CACHE=/var/cache/digits/models

RUN useradd --uid 10001 --user-group --create-home --no-log-init --shell /usr/sbin/nologin app \
 && mkdir -p /var/lib/digits/models /var/cache/digits/models \
 && chown app:app /var/lib/digits/models /var/cache/digits/models
# MODEL_DIR: a folder store, when the image runs without MODEL_STORE (a volume mounted
# there starts as a copy of this folder, owner included). MODEL_CACHE: the versions a
# worker fetched from an S3 store, verified; a new container fetches them again.

WORKDIR /app

COPY requirements/ requirements/
RUN pip install --no-cache-dir -r requirements/worker.txt

# The worker package and the model store, with the default model shipped in git
# (models/digits/<version>/) that seeds an empty store.
COPY worker/ worker/
COPY digits/ digits/
COPY models/ models/

USER app
CMD ["python", "-m", "worker"]
