"""Chat: rooms, direct conversations and their messages, pushed to ``chat.<room>``."""
