# The trainer role: trains on MNIST and publishes versions into the model store.
# Build from the repository root: docker build -f docker/trainer.Dockerfile .
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    MODEL_DIR=/var/lib/digits/models

RUN useradd --uid 10001 --user-group --create-home --no-log-init --shell /usr/sbin/nologin app \
 && mkdir -p /var/lib/digits/models \
 && chown app:app /var/lib/digits/models

WORKDIR /app

COPY requirements/ requirements/
RUN pip install --no-cache-dir -r requirements/trainer.txt

COPY trainer/ trainer/
COPY digits/ digits/
COPY models/ models/

USER app
CMD ["python", "-m", "trainer", "train", "--data", "/data/mnist"]
