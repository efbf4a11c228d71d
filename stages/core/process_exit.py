"""``exit_process(code)``: how the command lines (``python -m stages``, ``distill3d``) end their process.

What the interpreter does at exit runs, in its order: ``threading``'s exit callbacks and the wait for non-daemon
threads (Prefect's log and event services drain there, while its server still answers), then the ``atexit``
handlers (logging's flush, Prefect's temporary-server stop, multiprocessing's joins), and stdout / stderr are
flushed; then the process ends without the interpreter's finalisation, which tears down
every imported module one object at a time: 1.4 s after importing torch and diffusers' UNet, 2.3 s after a
`distill3d generate` run (measured from the last atexit handler to the process's end), paid by every stage dvc runs
after its output was already written. Every output is written and closed before this point (atomically, by
``stages.core.store``); only a file left open and unflushed would lose data, and none is.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_code(code: object) -> int:
    """``SystemExit``'s convention: None -> 0, an int as is, anything else printed to stderr -> 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_process(code: object = 0) -> NoReturn:
    """End the process with ``code`` (as ``sys.exit`` takes it) after the atexit handlers and a flush."""
    status = exit_code(code)
    try:
        if threading.current_thread() is threading.main_thread():
            threading._shutdown()  # what Py_Finalize calls first (wait_for_thread_shutdown)
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or broken pipe: nothing more to write
                pass
        os._exit(status)
