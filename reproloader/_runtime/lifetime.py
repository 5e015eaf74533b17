"""Workers die with their parent: the kernel's parent-death signal, set at worker start.

DataLoader workers notice a dead parent only between batches (torch's watchdog polls
``os.getppid()``), so a worker inside ``worker_init_fn``, a long ``__getitem__`` or a
blocked call outlives a parent killed with SIGKILL, forever if it never returns. On
Linux, :func:`die_with_parent` asks the kernel to SIGKILL the worker the moment its
parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere it does nothing.

Three details of that signal shape the code:

- It only covers deaths after it is set. A parent killed while the worker was still
  starting is caught by checking, once it is set, that the parent is still there.
- With the forkserver start method the worker's parent is the server, which lives as
  long as any worker does; there a thread waiting on a pidfd of the process that asked
  for the worker (Linux 5.3+) sends the SIGKILL instead.
- It follows the *thread* that started the worker, not the process: were the workers
  started by a thread that ends (an ``iter(loader)`` in a short-lived thread, with
  ``persistent_workers``), they would be killed with it. Forked workers can tell,
  because they run on a copy of the thread that forked them; those started from
  another thread than the main one skip the signal and keep torch's watchdog. Spawned
  workers cannot tell, so they are started, and thus must be iterated first, from a
  thread that outlives them (the main thread in practice).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import select
import signal
import sys
import threading
from typing import Final

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>

# The parent's main thread, as a forked child inherits it. pthread ids survive fork,
# so a forked worker runs on the forking thread's id: equal to this one only when the
# main thread forked it. A spawned worker imports this module afresh and gets its own.
_MAIN_THREAD: Final = threading.main_thread().ident


def die_with_parent() -> None:
    """Have the kernel SIGKILL this worker process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux") or threading.get_ident() != _MAIN_THREAD:
        return
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return  # not started by multiprocessing: no parent to follow
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's prctl
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return  # refused (a seccomp profile, say): torch's watchdog remains
    except (OSError, AttributeError):
        return
    if os.getppid() != parent.pid:
        # Forkserver: the server forked us and gets the signal's attention, but it
        # lives as long as any worker does. Watch the process that asked for us.
        _watch(parent.pid)
    # The signal covers deaths from now on; the parent may have died before.
    if _gone(parent.pid):
        os.kill(os.getpid(), signal.SIGKILL)


def _watch(pid: int) -> None:
    """SIGKILL this process when process ``pid`` exits, from a thread waiting on a pidfd."""
    try:
        descriptor = os.pidfd_open(pid)  # Linux 5.3+
    except (AttributeError, OSError):
        return  # gone already (the check that follows kills us) or no pidfd support

    def wait() -> None:
        select.select([descriptor], [], [])  # readable once the process has exited
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait, name="reproloader-parent-watch", daemon=True).start()


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie counts), as /proc tells."""
    if not os.path.exists(f"/proc/{os.getpid()}/stat"):
        return False  # no /proc to ask: assume alive rather than kill a healthy worker
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses; state follows the last ")".
    fields = stat.rsplit(b")", 1)[-1].split()
    return not fields or fields[0] in (b"Z", b"X", b"x")
