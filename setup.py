"""The C extensions; everything else about the package is in pyproject.toml.

The record walk of produce validation runs for every record produced: in pure Python it doubled
the broker's CPU per GB of 1 KiB records. The extension is optional: where no C compiler is
found the install goes on, record_walk.py walks records in Python (same checks, slower) and the
broker says so at start with a WARNING. The fsync worker (storage/fsync.py FsyncWorker) is an
fsync thread that never waits for the GIL; without it the group commit's jobs run in Python
threads.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("tidelog.protocol._recordwalk", ["src/tidelog/protocol/_recordwalk.c"], optional=True),
                   # storage/fsync.py: the group commit's fsync thread in C, which never waits for the GIL
                   Extension("tidelog.storage._fsyncworker", ["src/tidelog/storage/_fsyncworker.c"], optional=True)])
