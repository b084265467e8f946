# The trainer role: trains on MNIST and publishes versions into the model store.
# Build from the repository root: docker build -f docker/trainer.Dockerfile .
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

WORKDIR /app

COPY requirements/ requirements/
# The fonts the renderers draw training digits and negatives with.
RUN apt-get update \
 && apt-get install -y --no-install-recommends $(grep -v '^#' requirements/debian-fonts.txt) \
 && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir -r requirements/trainer.txt

# api/ for its preprocessing: training drawings pass through exactly what requests do.
COPY api/ api/
COPY trainer/ trainer/
COPY digits/ digits/
COPY models/ models/

USER app
CMD ["python", "-m", "trainer", "train", "--data", "/data/mnist"]
