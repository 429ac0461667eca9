"""The seed's settings: only what its text shows, plus what Django needs to start."""

import os

SECRET_KEY = os.environ.get("SEED_SECRET_KEY", "seed-reference-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
ROOT_URLCONF = "seedproject.urls"

# The seed builds f"redis://default:{redis_password}@{redis_host}:{redis_port}" and adds "/0".
REDIS_URL = os.environ["REDIS_URL"]

ASGI_APPLICATION = "seedproject.asgi.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [f"{REDIS_URL}"],
            # django SECRET_KEY
            "symmetric_encryption_keys": [SECRET_KEY],
        },
    }
}
