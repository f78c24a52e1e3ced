"""The watchdog: whatever ends the CLI, what it started does not outlive it.

SIGKILL, the out-of-memory killer, or Ray ending its driver with _exit(1) when the local
raylet dies: no handler, atexit or finally of the CLI runs then, and what it started
lives on (Prefect's temporary API server listened for minutes; Ray's agents too), while
the user sees a bare exit status. So a small watchdog process watches the CLI: a pipe
whose only writer is the CLI reaches end-of-file when the CLI ends, however it ends. The
watchdog then stops every process it saw descend from the CLI, and when the CLI had not
said "ok" (at a normal exit, after its own clean-up) it prints why, with the resume hint.

Services started by `rnngen up` run in sessions of their own, not under the CLI: a
command that uses them leaves them running.
"""

from __future__ import annotations

import atexit
import inspect
import os
import subprocess
import sys

_watchdog: dict[str, object] = {}  # "fd": the pipe's write end, "proc": the watchdog


def start() -> None:
    """Start the watchdog (once); on systems without pidfds (not Linux) there is none."""
    if _watchdog or not hasattr(os, "pidfd_open"):
        return
    read_end, write_end = os.pipe()  # neither end is inherited by other children
    try:
        # The watchdog runs these functions' own source in a bare interpreter (`-I`: no
        # site customisation): a few MB and milliseconds, not the CLI's imports.
        parts = (_descendants, _stop_all, _abrupt_end, _watch)
        code = "\n".join(inspect.getsource(f) for f in parts)
        code += f"\n_watch({os.getpid()}, {read_end})\n"
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", code],
            pass_fds=(read_end,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            process_group=0,  # not in the terminal's group: Ctrl-C is the CLI's business
        )
    except OSError:
        os.close(write_end)
        return
    finally:
        os.close(read_end)
    _watchdog.update(fd=write_end, proc=proc)
    # Registered before Prefect's server and Ray register theirs: runs after them.
    atexit.register(tell, "ok")


def tell(line: str) -> None:
    """Send the watchdog one line: `pid N` (stop it if the CLI dies) or `ok` (a clean exit)."""
    fd = _watchdog.get("fd")
    if isinstance(fd, int):
        try:
            os.write(fd, f"{line}\n".encode())
        except OSError:
            pass


# The watchdog's program: `_watch` and its helpers, self-contained (each imports what it
# uses, and uses nothing else of this module), since they run from their source alone.


def _descendants(roots):
    """The pids whose parent is one of `roots` or one of theirs (a scan of /proc)."""
    import os

    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _stop_all(pidfds):
    """SIGTERM the processes of `pidfds`, SIGKILL those still alive 5 s later."""
    import select
    import signal
    import time

    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        for fd in pidfds:
            try:
                signal.pidfd_send_signal(fd, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while pidfds and time.monotonic() < deadline:
            time.sleep(0.1)
            pidfds = [fd for fd in pidfds if not select.select([fd], [], [], 0)[0]]


def _abrupt_end(cli_pid, raylet, left):
    """The paragraph for a CLI that ended without its own clean-up: `raylet` is the pid of a
    local raylet that died before it, or None; `left`, how many processes it left."""
    if raylet is not None:
        why = (
            f"the local Ray node's raylet (pid {raylet}) died, and Ray then ended rnngen "
            f"(pid {cli_pid}); often the machine ran out of memory"
        )
    else:
        why = (
            f"rnngen (pid {cli_pid}) was killed (SIGKILL, the out-of-memory killer) or "
            "crashed, and could not stop what it had started"
        )
    stopping = (
        f" The {left} processes it started and left running (such as the temporary Prefect "
        "API and the local Ray) are being stopped."
        if left
        else ""
    )
    return (
        f"error: {why}.{stopping} Finished results are on disk; run the same command "
        "again to resume where it stopped.\n"
    )


def _watch(cli_pid, pipe_fd):
    """Until `pipe_fd` reaches end-of-file (the CLI ended), track the processes descended
    from `cli_pid` (a scan of /proc each second, and the pids the CLI sends), each by a
    pidfd: it names that process, never a later one with its pid. Then stop those still
    alive; unless the CLI said "ok", first say what happened."""
    import os
    import select
    import signal
    import time

    # Outlive a closed terminal (SIGHUP), and write to it from outside its foreground
    # group even under `stty tostop` (SIGTTOU).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    tracked, raylets = {}, {}  # pid -> pidfd; pidfd -> pid, of the local raylets
    said_ok, raylet_died, buffer, scanned = False, None, b"", 0.0  # raylet_died: (pid, t)

    def gone(fd):
        return bool(select.select([fd], [], [], 0)[0])

    def track(pids):
        for pid in pids - set(tracked) - {os.getpid()}:
            try:
                tracked[pid] = os.pidfd_open(pid)
                with open(f"/proc/{pid}/comm") as fh:
                    if fh.read().strip() == "raylet":
                        raylets[tracked[pid]] = pid
            except OSError:
                continue

    while True:
        if time.monotonic() - scanned >= 1.0:
            for pid, fd in list(tracked.items()):
                if fd not in raylets and gone(fd):
                    os.close(tracked.pop(pid))
            track(_descendants([cli_pid, *tracked]))
            scanned = time.monotonic()
        ready = select.select([pipe_fd, *raylets], [], [], 1.0)[0]
        for fd in set(ready) & set(raylets):  # a raylet ended while the CLI still ran
            raylet_died = (raylets.pop(fd), time.monotonic())
        if pipe_fd not in ready:
            continue
        data = os.read(pipe_fd, 4096)
        if not data:  # the CLI ended
            break
        *lines, buffer = (buffer + data).split(b"\n")
        for line in lines:
            said_ok = said_ok or line == b"ok"
            if line.startswith(b"pid "):
                track({int(line[4:])})

    alive = [fd for fd in tracked.values() if not gone(fd)]
    if not said_ok:
        # A raylet that ended with the CLI (a SIGKILL ends the thread that started it a
        # moment before the CLI's last thread) did not end it; Ray takes seconds to notice
        # a dead raylet and end its driver.
        caused = raylet_died and time.monotonic() - raylet_died[1] > 0.5
        message = _abrupt_end(cli_pid, raylet_died[0] if caused else None, len(alive))
        try:
            os.write(2, message.encode())
        except OSError:
            pass
    _stop_all(alive)
