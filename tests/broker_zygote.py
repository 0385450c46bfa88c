"""A process that has imported ``tidelog serve``'s modules once and forks a test broker from
them on request (tests/brokerproc.py starts it and talks to it; not a test module).

Each ``python -m tidelog serve`` of a test spent ~1 s of CPU importing the same modules before it
did anything of its own, and the suite starts hundreds. Here the import is paid once: a forked
child takes the broker's environment, working directory, log file and open-files limit from the
request and then runs ``tidelog`` as ``__main__`` exactly as ``python -m tidelog`` does (runpy,
the same ``sys.argv``, ``sys.path[0]`` the working directory); it exits through the interpreter's
normal exit (exit code, atexit, threads joined). What differs from an exec is only what an
import can fix before the broker's own code runs: tests/brokerproc.py falls back to an exec when
the request's environment differs from this process's in a variable read at start-up
(``PYTHON*``, locale, ``TIDELOG_CLOCK_SKEW_MS`` ...), and Python reseeds ``random`` in a forked
child. The children's hash seed is this process's (one random seed a test run, not one a broker).

Protocol, one JSON object a line each way over the socket on fd ``argv[1]``:
``{"spawn": {"args": [...], "env": {...}, "cwd": ..., "log": ..., "nofile": [soft, hard] | null}}``
-> ``{"pid": N}``; ``{"poll": N}`` -> ``{"returncode": int | null}`` (a child is reaped only when
asked, as Popen does: until then its pid stays its own; once its code is given the child is
forgotten and a poll of it answers an error, as its pid may be a new child's by then). The
zygote exits when the socket closes.
It keeps one thread and no open files of its own, so a fork copies nothing half-done.
"""

import json
import os
import socket
import sys

# What ``tidelog serve`` imports before it serves (the rest it imports itself, as it would).
PRELOAD = ("tidelog.cli.main", "tidelog.node", "tidelog.server.broker", "tidelog.storage.gc_policy",
           "tidelog.storage.heap_policy", "tidelog.cluster.etcd_store", "uvloop", "runpy")


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # uvloop is optional; the broker would import and fail the same way
            pass
    # The codecs every broker makes at the top of its start (Broker.start: warm_codecs), made
    # once here instead of once a forked broker.
    from tidelog.protocol.apis import warm_codecs

    warm_codecs()


def _exit_status(pid: int) -> int | None:
    """A child's exit code once it has exited (reaped now), else None. Nothing is remembered
    of a reaped child: the test process asks once it has an answer (as Popen keeps its own
    returncode), and its pid may be a new child's by the next question (pids wrap at pid_max,
    32,768 by default, within one test run)."""
    done, status = os.waitpid(pid, os.WNOHANG)
    return None if done == 0 else os.waitstatus_to_exitcode(status)


def _serve(sock: socket.socket) -> dict | None:
    """Answer requests until one forks: returns the spawn request in the child, None in the
    zygote once the test process has closed the socket."""
    reader = sock.makefile("rb")
    for line in reader:
        request = json.loads(line)
        if "poll" in request:
            try:
                answer = {"returncode": _exit_status(request["poll"])}
            except ChildProcessError:
                answer = {"error": f"no child {request['poll']} (reaped already, or never forked here)"}
        else:
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError as e:
                answer = {"error": f"fork: {e}"}
            else:
                if pid == 0:
                    reader.close()
                    sock.close()
                    return request["spawn"]
                answer = {"pid": pid}
        sock.sendall(json.dumps(answer).encode() + b"\n")
    return None


def _become(spawn: dict) -> None:
    """In the forked child: the process ``subprocess.Popen(args, stdout=log, stderr=STDOUT,
    env=env, cwd=cwd)`` with the limit applied would have been, up to the interpreter's start."""
    import resource
    import types

    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    log = os.open(spawn["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.clear()
    os.environ.update(spawn["env"])
    os.chdir(spawn["cwd"])
    if spawn.get("nofile"):
        resource.setrlimit(resource.RLIMIT_NOFILE, tuple(spawn["nofile"]))
    sys.path[0] = os.getcwd()  # as ``python -m`` sets it (a script's own directory here)
    sys.argv = ["-m", *spawn["args"][3:]]  # runpy puts the module's file first, as -m does
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main


if __name__ == "__main__":
    _preload()
    _control = socket.socket(fileno=int(sys.argv[1]))
    _spawn = _serve(_control)
    if _spawn is None:
        sys.exit(0)
    _become(_spawn)
    del _spawn, _control
    import runpy

    runpy._run_module_as_main("tidelog")  # what ``python -m tidelog`` calls
