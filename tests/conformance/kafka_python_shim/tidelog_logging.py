"""pytest plugin (``-p test.tidelog_logging``): which kafka-python loggers the captured logs keep.

The harness runs the suite at log_level=DEBUG so that kafka.cluster's DEBUG lines (every
Metadata request and the topics it names) are in a failed test's log, where the harness's
client_race looks for them; the rest of kafka-python stays at INFO, as before.
"""

import logging


def pytest_configure(config):
    logging.getLogger("kafka").setLevel(logging.INFO)
    logging.getLogger("kafka.cluster").setLevel(logging.DEBUG)
