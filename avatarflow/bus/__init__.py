"""The bus: how messages travel between stages, and the only door to Redis.

``base`` defines the ``Bus`` every stage runner and session front uses; ``memory`` carries
messages in one process (embedded mode); ``streams`` is the Redis streams bus of distributed
mode, one module per role; ``keys`` holds the Redis key layout and server-side scripts;
``avatars`` keeps analysed avatars in Redis. No module outside this package imports the
Redis client (``tests/bus/test_boundary.py`` checks it).
"""
