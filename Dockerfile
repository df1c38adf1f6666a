# One image for every offsite role (worker, beat, control, Flower); the command picks the role.
FROM python:3.11-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gnupg \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/offsite
COPY pyproject.toml README.md beat_schedule.py ./
COPY offsite offsite
COPY tasks tasks
COPY workers workers
RUN pip install --no-cache-dir '.[monitor]'
ENV OFFSITE_CONFIG=/etc/offsite/offsite.yaml
