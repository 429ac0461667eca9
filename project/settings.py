"""Settings, read from the environment once, with development defaults.

Production mode (``DJANGO_DEBUG=false``) refuses the development secret key.
With ``REDIS_URL`` unset the project runs its own embedded Redis
(see ``project/redis_server.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from project.redis_options import RedisPlace, async_client_options
from project.redis_server import ensure_embedded_redis

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = BASE_DIR / ".run"

T = TypeVar("T")

DEVELOPMENT_SECRET_KEY = "django-insecure-development-only-key-do-not-deploy"  # noqa: S105


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {value!r}")


def _env_number(
    name: str, default: T, parse: Callable[[str], T], what: str, minimum: float | None
) -> T:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = parse(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be {what}, got {value!r}") from exc
    if minimum is not None and number < minimum:  # type: ignore[operator]
        raise ImproperlyConfigured(f"{name} must be {minimum:g} or more, got {value!r}")
    return number


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    return _env_number(name, default, int, "an integer", minimum)


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    return _env_number(name, default, float, "a number", minimum)


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", DEVELOPMENT_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be set to a secret value when DJANGO_DEBUG is false"
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_celery_beat",
    "ws",
    "tasks",
    "dashboard",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database: SQLite by default, PostgreSQL (or any) through DATABASE_URL ---------------
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat write the same file: WAL lets readers run beside the
    # writer, IMMEDIATE takes the write lock up front instead of failing mid-transaction.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests run the server in other processes, which must see the same file; one
    # file per test session, so two sessions in one checkout do not collide.
    DATABASES["default"]["TEST"] = {"NAME": str(RUN_DIR / f"test-db-{os.getpid()}.sqlite3")}
else:
    # One test database per test session here too (test_<name>_<pid>).
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# daphne serves no static files itself; WhiteNoise does, from the apps' folders while
# developing and from STATIC_ROOT (``collectstatic``) in production.
WHITENOISE_USE_FINDERS = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Redis: channel layer, Celery broker, sequence numbers and history ------------------
# One Redis (REDIS_URL, else the embedded one); or shards (REDIS_SHARD_URLS, comma-separated
# URLs); or Sentinel (REDIS_SENTINELS host:port,... and REDIS_SENTINEL_MASTER, one master
# name or several: one shard each). project/redis_options.py says what goes where.
REDIS_SHARD_URLS = env_list("REDIS_SHARD_URLS", "")
REDIS_SENTINELS = env_list("REDIS_SENTINELS", "")
REDIS_SENTINEL_MASTER = env_list("REDIS_SENTINEL_MASTER", "mymaster")
REDIS_URL = os.environ.get("REDIS_URL") or (
    "" if REDIS_SHARD_URLS or REDIS_SENTINELS else ensure_embedded_redis()
)
try:
    REDIS_PLACE = RedisPlace.from_values(
        REDIS_URL, REDIS_SHARD_URLS, REDIS_SENTINELS, REDIS_SENTINEL_MASTER
    )
except ValueError as error:
    raise ImproperlyConfigured(str(error)) from None
# A Redis request that meets a dropped connection (Redis restarted, failed over) is sent
# again on a new one this many times, with exponential backoff and jitter up to
# REDIS_RETRY_BACKOFF_S (project/redis_options.py says why). Past that, a socket's request
# is answered with the retryable error 4503 and the client tries again.
REDIS_RETRIES = env_int("REDIS_RETRIES", 3, minimum=0)
REDIS_RETRY_BACKOFF_S = env_float("REDIS_RETRY_BACKOFF_S", 0.5, minimum=0.001)

CHANNEL_LAYERS = {
    "default": {
        # channels-redis' pub/sub layer, with each consumer's queue bounded (ws/layer.py).
        "BACKEND": "ws.layer.PushChannelLayer",
        "CONFIG": {
            "hosts": REDIS_PLACE.layer_hosts(
                async_client_options(REDIS_RETRIES, REDIS_RETRY_BACKOFF_S)
            ),
            "prefix": "asgi",
            # Messages queued for one consumer before it is told to resync.
            "capacity": env_int("PUSH_CHANNEL_CAPACITY", 1000),
        },
    }
}

# --- the push transport (ws/) -----------------------------------------------------------
# Every setting is optional: ws/conf.py holds the defaults and a system check of each
# value. This project reads them from the environment.
# Begins every Redis key ws writes: two projects on one Redis database each take their own.
PUSH_KEY_PREFIX = os.environ.get("PUSH_KEY_PREFIX", "push")
PUSH_MAX_FRAME_BYTES = env_int("PUSH_MAX_FRAME_BYTES", 64 * 1024)
PUSH_MAX_BAD_FRAMES = env_int("PUSH_MAX_BAD_FRAMES", 10)
PUSH_HISTORY_SIZE = env_int("PUSH_HISTORY_SIZE", 100)
# History older than this is not replayed, and an idle topic's history expires.
PUSH_HISTORY_TTL_S = env_int("PUSH_HISTORY_TTL_S", 3600)
# Most messages replayed on one resume; a client further behind gets a reset.
PUSH_REPLAY_LIMIT = env_int("PUSH_REPLAY_LIMIT", 100)
# How often each server process checks that the channel layer's Redis is the one its
# subscriptions live on (not restarted, flushed or unreachable): within about twice
# this after Redis returns, every socket has caught up on what it missed.
PUSH_LAYER_CHECK_S = env_float("PUSH_LAYER_CHECK_S", 2.0)
# How long a pushing task waits for Redis in its own process before Celery's retry.
PUSH_TASK_PATIENCE_S = env_float("PUSH_TASK_PATIENCE_S", 30.0)
# On SIGTERM a web process closes its sockets spread over this many seconds (1012: they
# reconnect elsewhere and resume), then exits; 0 closes them all at once (ws/drain.py).
PUSH_DRAIN_S = env_float("PUSH_DRAIN_S", 10.0, minimum=0)
PUSH_MAX_SUBSCRIPTIONS = env_int("PUSH_MAX_SUBSCRIPTIONS", 100)
PUSH_RATE_PER_S = env_float("PUSH_RATE_PER_S", 20.0)
PUSH_RATE_BURST = env_float("PUSH_RATE_BURST", 40.0)
PUSH_RATE_MAX_REFUSED = env_int("PUSH_RATE_MAX_REFUSED", 50)
PUSH_MAX_CONNECTIONS_PER_USER = env_int("PUSH_MAX_CONNECTIONS_PER_USER", 10)
# Presence: each server process refreshes its sockets' entries every REFRESH seconds;
# an entry not refreshed for TTL seconds (its process died) is swept and announced as left.
PUSH_PRESENCE_TTL_S = env_float("PUSH_PRESENCE_TTL_S", 15.0)
PUSH_PRESENCE_REFRESH_S = env_float("PUSH_PRESENCE_REFRESH_S", 5.0)
if not 0 < PUSH_PRESENCE_REFRESH_S < PUSH_PRESENCE_TTL_S:
    raise ImproperlyConfigured(
        "PUSH_PRESENCE_REFRESH_S must be above 0 and below PUSH_PRESENCE_TTL_S, got "
        f"{PUSH_PRESENCE_REFRESH_S:g} and {PUSH_PRESENCE_TTL_S:g}"
    )
# Origins other than the socket's own that may open sockets (scheme://host[:port]).
PUSH_ALLOWED_ORIGINS = env_list("PUSH_ALLOWED_ORIGINS", "")
PUSH_TOKEN_MAX_AGE_S = env_int("PUSH_TOKEN_MAX_AGE_S", 300)
# A socket with no Origin header must authenticate with a token within this time.
PUSH_AUTH_TIMEOUT_S = env_float("PUSH_AUTH_TIMEOUT_S", 5.0)
# The clock dashboard (tasks/clock.py): its period, and the seed room that gets it too.
PUSH_CLOCK_INTERVAL_S = env_float("PUSH_CLOCK_INTERVAL_S", 5.0)
PUSH_CLOCK_SEED_ROOM = os.environ.get("PUSH_CLOCK_SEED_ROOM", "clock")
# Model changes recompute a dashboard at most this often (every process counted).
DASHBOARD_COALESCE_MS = env_int("DASHBOARD_COALESCE_MS", 250)
# How often beat looks for scheduled admin broadcasts whose send time has passed.
BROADCAST_CHECK_S = env_float("BROADCAST_CHECK_S", 10.0)

# --- chat (chat/) -----------------------------------------------------------------------
# Where the chat page sends a visitor who is not signed in (Django's LoginView).
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:index"
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 2000)
# At most CHAT_RATE_MESSAGES messages per user in any CHAT_RATE_WINDOW_S seconds.
CHAT_RATE_MESSAGES = env_int("CHAT_RATE_MESSAGES", 10)
CHAT_RATE_WINDOW_S = env_float("CHAT_RATE_WINDOW_S", 10.0)
CHAT_HISTORY_PAGE_SIZE = env_int("CHAT_HISTORY_PAGE_SIZE", 50)
CHAT_HISTORY_PAGE_MAX = env_int("CHAT_HISTORY_PAGE_MAX", 200)
# Who may contact whom (the people picker, direct conversations, a new room's members): the
# dotted path of a function (user) -> QuerySet of the users they may contact. The default,
# chat.people.active_users, is every other active user.
CHAT_CONTACT_RULE = os.environ.get("CHAT_CONTACT_RULE", "chat.people.active_users")
CHAT_PEOPLE_PAGE_MAX = env_int("CHAT_PEOPLE_PAGE_MAX", 50, minimum=1)
# Members a room made on the page may start with (its maker included).
CHAT_ROOM_MAX_MEMBERS = env_int("CHAT_ROOM_MAX_MEMBERS", 100, minimum=2)
# Voice calls (chat/calls.py): a ringing call nobody answers ends after this many seconds.
CALL_RING_TIMEOUT_S = env_float("CALL_RING_TIMEOUT_S", 30.0)
CALL_MAX_PARTICIPANTS = env_int("CALL_MAX_PARTICIPANTS", 6)
# How often beat sweeps live calls (chat.tasks.sweep_calls) for participants with no live
# socket on call.<room>: those whose every server process died, whom no process's presence
# sweep announces. They count as gone once their entries are PUSH_PRESENCE_TTL_S old.
CALL_SWEEP_S = env_float("CALL_SWEEP_S", 60.0)
# ICE servers handed to browsers (GET /chat/api/calls/ice-servers): STUN URLs, and TURN
# URLs with time-limited credentials (TURN REST scheme, coturn's static-auth-secret).
# Unset, STUN is asked of the TURN servers' hosts (coturn answers STUN on its TURN port), or
# of none: on one machine or a LAN, host candidates connect. Across NATs without TURN, set a
# public STUN server, such as stun:stun.l.google.com:19302.
CALL_ICE_SERVERS = env_list("CALL_ICE_SERVERS", "")
CALL_TURN_URLS = env_list("CALL_TURN_URLS", "")
CALL_TURN_SECRET = os.environ.get("CALL_TURN_SECRET", "")
CALL_TURN_TTL_S = env_int("CALL_TURN_TTL_S", 3600)
# "all": any candidate (host, STUN, TURN); "relay": only through TURN (hides the peers'
# addresses from each other, and is what a test of the TURN path sets).
CALL_ICE_TRANSPORT_POLICY = os.environ.get("CALL_ICE_TRANSPORT_POLICY", "all")
if CALL_ICE_TRANSPORT_POLICY not in ("all", "relay"):
    raise ImproperlyConfigured(
        f"CALL_ICE_TRANSPORT_POLICY must be 'all' or 'relay', got {CALL_ICE_TRANSPORT_POLICY!r}"
    )
# A participant whose last socket on call.<room> goes is "reconnecting" for this long (the
# others keep their peer connection); a page of theirs that subscribes again within it is
# back in the call, media untouched. 0: they leave at once.
CALL_REJOIN_GRACE_S = env_float("CALL_REJOIN_GRACE_S", 20.0, minimum=0)
# A page gives up on a peer connection that ICE restarts could not bring back in this long,
# and reports it lost: everyone is shown the link as lost.
CALL_PEER_GIVE_UP_S = env_float("CALL_PEER_GIVE_UP_S", 30.0, minimum=1)
# Renegotiations (offers, ICE restarts and rejoins) one user may make in one call, per
# CALL_RENEGOTIATION_WINDOW_S: a joiner of a full mesh offers to five peers at once.
CALL_RENEGOTIATIONS = env_int("CALL_RENEGOTIATIONS", 60, minimum=1)
CALL_RENEGOTIATION_WINDOW_S = env_float("CALL_RENEGOTIATION_WINDOW_S", 60.0, minimum=1)

# --- Celery -----------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or REDIS_PLACE.celery_url()
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or REDIS_PLACE.celery_url()
# With Sentinel: which master (kombu's and Celery's sentinel:// transports read it here).
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = REDIS_PLACE.celery_transport_options()
CELERY_RESULT_EXPIRES = 3600
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A task is acknowledged after it ran, and re-queued if its worker process died.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
    **REDIS_PLACE.celery_transport_options(),
}
# A retry (autoretry_for on Redis errors) is itself a message to the broker: while Redis
# is away, keep trying to send it for about a minute instead of failing the task.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 30,
    "interval_start": 0.5,
    "interval_step": 0.5,
    "interval_max": 2,
}
# django-celery-beat's database scheduler, after syncing the code's schedules (tasks/beat.py):
# these jobs, and one per dashboard with a schedule (dashboard-<name>, the clock's too).
CELERY_BEAT_SCHEDULER = "tasks.beat:Scheduler"
CELERY_BEAT_SCHEDULE = {
    "send-due-broadcasts": {
        "task": "tasks.tasks.send_due_broadcasts",
        "schedule": BROADCAST_CHECK_S,
        # The next check finds the same broadcasts: a missed one need not be kept.
        "options": {"expires": BROADCAST_CHECK_S},
    },
    "sweep-calls": {
        "task": "chat.tasks.sweep_calls",
        "schedule": CALL_SWEEP_S,
        # The next sweep finds the same participants: a late one is not worth running.
        "options": {"expires": CALL_SWEEP_S},
    },
}

# --- logging: one line per event, with the process that wrote it -------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "line"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django": {"level": "INFO"},
        "daphne": {"level": "INFO"},
    },
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
