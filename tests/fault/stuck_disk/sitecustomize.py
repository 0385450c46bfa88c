"""A stuck disk for a real broker process (tests/fault/test_internal_write_stalls.py): with
TESTS_HOLD_FSYNC naming a file and this directory on PYTHONPATH, every flush job the log
manager runs in its flush threads waits while that file exists, as a job on a disk that stopped
answering would; removing the file lets them go on. Test code, imported at the interpreter's start
(Python's sitecustomize hook), so the broker's own code is unchanged.

The fault hook is armed (``faults.armed``) with nothing to fail: the log manager then gives every
job to its Python flush threads (the C fsync thread bypasses the hook), whose ``sync_fds`` and
``sync_filesystem`` are wrapped here. Only calls off the main thread wait: the event loop's own
syncs (checkpoints, a recovery's) are left alone, so the loop is never what is stuck."""

import os
import threading
import time

_HOLD = os.environ.get("TESTS_HOLD_FSYNC")

if _HOLD:
    from tidelog.storage import manager as _manager
    from tidelog.storage.faults import faults as _faults

    _faults.armed = True

    def _held(call):
        def held(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread():
                while os.path.exists(_HOLD):
                    time.sleep(0.005)
            return call(*args, **kwargs)
        return held

    _manager.sync_fds = _held(_manager.sync_fds)
    _manager.sync_filesystem = _held(_manager.sync_filesystem)
