"""Stand-in for kafka-python's test/service.py: the suite's broker runs outside the suite.

The harness starts Tidelog before the suite and points it there with KAFKA_URI, so the fixtures
only ever build ``ExternalService``; every lifecycle call on it has nothing to do.
"""


class ExternalService:
    """A service someone else runs at ``host:port``."""

    def __init__(self, host, port):
        self.host = host
        self.port = port

    def open(self):
        pass

    def close(self):
        pass

    def stop(self):
        pass

    def dump_logs(self):
        pass

    def wait_for(self, pattern, timeout=30):
        return True


class SpawnedService:
    """Imported by the fixtures module; spawning brokers is not supported under this harness."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("this harness runs the suite against an external broker only (set KAFKA_URI)")
