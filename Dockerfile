# One image for web, worker and beat (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
RUN pip install --no-cache-dir . \
 && DJANGO_DEBUG=false DJANGO_SECRET_KEY=collectstatic-only REDIS_URL=redis://unused:6379/0 \
    python manage.py collectstatic --noinput \
 && useradd --system --home /app push && chown -R push /app
USER push

EXPOSE 8010
CMD ["uvicorn", "project.asgi:application", "--host", "0.0.0.0", "--port", "8010", "--proxy-headers", "--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio", "--ws-per-message-deflate", "false", "--lifespan", "off", "--no-access-log"]
