"""Tidelog: a durable message queue that speaks the Apache Kafka wire protocol."""

import sys

__version__ = "0.1.0"


def _import_kio_without_hypothesis() -> None:
    """kio registers a hypothesis strategy for each of its types when hypothesis is importable
    (kio.static._phantom), and Tidelog never draws kio values from hypothesis. Where hypothesis is
    installed (the test extra) that import costs every broker and cleaner worker process ~0.15 s,
    and in a working directory without hypothesis's ``.hypothesis`` cache it builds hypothesis's
    unicode tables there: ~1.3 s of CPU and a 238 MiB peak RSS at each start. So kio's first import
    sees no hypothesis; a process that imported hypothesis before Tidelog (a test run) keeps it."""
    if "hypothesis" in sys.modules or "kio.static._phantom" in sys.modules:
        return
    sys.modules["hypothesis"] = None  # an import of it raises ImportError, which kio catches
    try:
        import kio.static._phantom  # noqa: F401  (kio 0.6's layout; pyproject.toml pins it)
    except ImportError:  # another layout: nothing to keep hypothesis from
        pass
    finally:
        if sys.modules.get("hypothesis", ...) is None:
            del sys.modules["hypothesis"]


_import_kio_without_hypothesis()
