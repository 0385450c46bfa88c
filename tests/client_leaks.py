"""Find the Kafka clients a test leaves open (tests/conftest.py's ``kafka_client_leaks`` guard).

A client left open by a test keeps running during the rest of the suite: librdkafka's threads
reconnect to a broker stopped long ago (``rdkafka#consumer-146 ... Connection refused``), a
kafka-python producer's sender thread keeps its sockets, and each of them costs CPU and file
descriptors in every later test. Every client made in the test process is registered here (a
weak reference and where it was made); after a test's teardown, one made during the test that is
still alive and not closed is a leak.

confluent-kafka's Producer, Consumer and ShareConsumer are C types: tests get subclasses that
register themselves (installed as ``confluent_kafka.Producer`` etc. before any test module
imports them). Its AdminClient, kafka-python's and aiokafka's clients are Python classes: their
``__init__`` is wrapped in place. Registering costs a list
append and a weak reference; the check after a test walks the clients made during it.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import traceback
import weakref
from dataclasses import dataclass

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass
class _Made:
    ref: weakref.ref
    kind: str
    where: str
    serial: int
    abandoned: bool = False


_made: list[_Made] = []
CLOSE_TIMEOUT_S = 10.0  # a leaked client whose close() blocks longer is left to its threads
_serial = 0


def _where() -> str:
    """The innermost frames in tests/ that made the client (the test and its helper)."""
    frames = [f"{os.path.relpath(frame.filename, os.path.dirname(_TESTS_DIR))}:{frame.lineno} ({frame.name})"
              for frame in traceback.extract_stack(sys._getframe(2), limit=12)
              if frame.filename.startswith(_TESTS_DIR) and not frame.filename.endswith("client_leaks.py")]
    return " <- ".join(reversed(frames[-3:])) or "outside tests/"


def _register(client, kind: str) -> None:
    global _serial
    _serial += 1
    _made.append(_Made(weakref.ref(client), kind, _where(), _serial))


def _is_open(client) -> bool:
    return not getattr(client, "_tidelog_test_closed", False) and getattr(client, "_closed", False) is False


def _confluent_class(base, kind: str):
    """A subclass of a confluent-kafka C type that registers itself and notes close()."""

    def __init__(self, *args, **kwargs):
        base.__init__(self, *args, **kwargs)
        _register(self, kind)

    namespace = {"__init__": __init__, "__module__": base.__module__, "__qualname__": base.__qualname__,
                 "_tidelog_test_closed": False}
    if hasattr(base, "close"):
        def close(self, *args, **kwargs):
            result = base.close(self, *args, **kwargs)
            self._tidelog_test_closed = True
            return result

        namespace["close"] = close
        namespace["__exit__"] = lambda self, *exc: (close(self), None)[1]
    return type(base.__name__, (base,), namespace)


def _wrap_python_class(cls, kind: str) -> None:
    original = cls.__init__
    if getattr(original, "_tidelog_registers", False):
        return

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _register(self, kind)

    __init__._tidelog_registers = True
    cls.__init__ = __init__


def install() -> None:
    """Register every Kafka client made from now on (call before test modules import clients)."""
    import confluent_kafka
    import confluent_kafka.admin

    for name in ("Producer", "Consumer", "ShareConsumer"):
        base = getattr(confluent_kafka, name, None)
        if base is not None and not getattr(base, "_tidelog_registers", False):
            sub = _confluent_class(base, f"confluent_kafka.{name}")
            sub._tidelog_registers = True
            setattr(confluent_kafka, name, sub)
    # A Python class over a C type (its __init__ names itself: a subclass would recurse), and
    # without close(): alive after the test is open.
    _wrap_python_class(confluent_kafka.admin.AdminClient, "confluent_kafka.admin.AdminClient")
    import kafka

    for name in ("KafkaConsumer", "KafkaProducer", "KafkaAdminClient"):
        _wrap_python_class(getattr(kafka, name), f"kafka.{name}")
    import aiokafka
    import aiokafka.admin

    for cls in (aiokafka.AIOKafkaConsumer, aiokafka.AIOKafkaProducer, aiokafka.admin.AIOKafkaAdminClient):
        _wrap_python_class(cls, f"aiokafka.{cls.__name__}")


def mark() -> int:
    """The serial of the last client made so far: clients after it are the next test's."""
    return _serial


def open_since(serial: int) -> list[tuple[object, _Made]]:
    """Clients made after ``serial`` that are still alive and not closed (after a collection
    when some are: a client in a reference cycle is freed, and so closed, by it)."""
    def survivors():
        found = []
        for made in _made:
            if made.serial > serial:
                client = made.ref()
                if client is not None and _is_open(client):
                    found.append((client, made))
        return found

    found = survivors()
    if found:
        del found
        gc.collect()
        found = survivors()
    _made[:] = [made for made in _made if made.ref() is not None]
    return found


def abandon(client) -> None:
    """A client stuck for good inside a native call (a librdkafka bug a test works around by
    replacing it, as an application's watchdog would): it cannot be closed, its close() would
    block, so it is neither closed nor reported; its librdkafka threads are not counted either."""
    client._tidelog_test_closed = True
    for made in _made:
        if made.ref() is client:
            made.abandoned = True


def abandoned_since(serial: int) -> int:
    """Abandoned clients made after ``serial`` and still alive (each keeps an rdk:main thread)."""
    return sum(1 for made in _made if made.serial > serial and made.abandoned and made.ref() is not None)


def close(client) -> bool:
    """Close a leaked client so that it stops running during the next tests; False when close()
    did not return within CLOSE_TIMEOUT_S (another thread is blocked in the client: the
    suite goes on rather than hang)."""
    def run() -> None:
        try:
            if hasattr(client, "_tidelog_test_closed"):  # confluent-kafka
                if hasattr(client, "close"):
                    client.close()
            elif hasattr(client, "close") and not _is_coroutine_function(client.close):
                client.close()
        except Exception:  # noqa: BLE001 - best effort on a client already in a bad state
            pass

    closer = threading.Thread(target=run, name="close-leaked-client", daemon=True)
    closer.start()
    closer.join(CLOSE_TIMEOUT_S)
    return not closer.is_alive()


def _is_coroutine_function(function) -> bool:
    import inspect

    return inspect.iscoroutinefunction(function)


def librdkafka_handles() -> int:
    """librdkafka instances alive in this process: one ``rdk:main`` thread each."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as comm:
                count += comm.read().startswith("rdk:main")
        except OSError:
            pass
    return count
