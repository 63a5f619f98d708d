"""Time the synthetic chains in a child process of their own (see
:class:`~flopgap.machine._chains.ChainTimer`, ``fresh_process``).

The child builds and counts every chain, writes one ``rows<TAB>json`` line (each chain's
label, op records and module calls), then answers each ``time I`` line on its stdin with
one ``blocks<TAB>json`` line: chain ``I`` timed in one burst, and each ``python`` line with
``python<TAB>seconds`` (a Python bytecode instruction's cost). It stops at ``quit`` or at
the end of its stdin. Build progress comes as ``progress<TAB>done<TAB>total<TAB>label``.
The protocol runs on a copy of the child's stdout; its file descriptor 1 goes to stderr,
so that what a library prints (oneDNN's verbose mode, say) cannot reach the pipe. While
the child lives, the parent's disturbance sentinel counts its threads as its own
(:func:`flopgap.timing.own_process`): the parent waits while it measures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from typing import Callable

from flopgap.timing import own_process

__all__ = ["ChainWorker"]


class ChainWorker:
    """The parent's end: starts the child (allocator pinned, ``threads`` torch threads)
    and waits for its rows."""

    def __init__(self, quick: bool, burst_s: float, threads: int,
                 progress: Callable[[int, int, str], None] | None = None):
        from flopgap.machine._isolated import child_env

        cmd = [sys.executable, "-m", "flopgap.machine._chain_worker", "--threads", str(threads),
               "--burst", repr(float(burst_s))] + (["--quick"] if quick else [])
        self._err = tempfile.TemporaryFile("w+")
        self._proc = subprocess.Popen(cmd, env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._err, text=True)
        own_process(self._proc.pid)
        try:
            while True:
                kind, payload = self._read()
                if kind == "rows":
                    self.rows: list[dict] = json.loads(payload)
                    break
                if kind == "progress" and progress is not None:
                    i, n, label = payload.split("\t", 2)
                    progress(int(i), int(n), label)
        except BaseException:   # Ctrl-C included: the child must not outlive us
            self.close(kill=True)
            raise

    def _read(self) -> tuple[str, str]:
        line = self._proc.stdout.readline()
        if not line:
            raise self._failed()
        kind, _, payload = line.rstrip("\n").partition("\t")
        return kind, payload

    def _failed(self):
        from flopgap.errors import FlopgapError

        if self._proc.poll() is None:
            self._proc.kill()
        rc = self._proc.wait()
        self._err.seek(0)
        lines = [ln for ln in self._err.read().splitlines() if ln.strip()]
        how = f"killed by signal {-rc}" if rc < 0 else f"exit {rc}"
        return FlopgapError(f"timing the synthetic chains failed ({how}): {lines[-1] if lines else 'no message'}")

    def _ask(self, command: str, reply: str) -> str:
        """Send one command line; the payload of the first ``reply`` line that answers it."""
        try:
            self._proc.stdin.write(command + "\n")
            self._proc.stdin.flush()
        except OSError:
            raise self._failed() from None
        while True:
            kind, payload = self._read()
            if kind == reply:
                return payload

    def time(self, i: int) -> list[float]:
        """Chain ``i`` timed in one burst: seconds per call, one per block."""
        return [float(t) for t in json.loads(self._ask(f"time {int(i)}", "blocks"))]

    def python(self) -> float:
        """Seconds per Python bytecode instruction of module code, measured in the child."""
        return float(self._ask("python", "python"))

    def close(self, kill: bool = False) -> None:
        """Stop the child (``kill``: at once, else after it reads ``quit``) and release
        its pipes."""
        try:
            if self._proc.poll() is None:
                if kill:
                    self._proc.kill()
                else:
                    try:
                        self._proc.stdin.write("quit\n")
                        self._proc.stdin.flush()
                    except OSError:
                        pass
                try:
                    self._proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        finally:
            own_process(self._proc.pid, False)
            for f in (self._proc.stdin, self._proc.stdout, self._err):
                try:
                    f.close()
                except OSError:
                    pass


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m flopgap.machine._chain_worker")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--burst", type=float, required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)

    import os

    out = os.fdopen(os.dup(1), "w")   # the protocol; whatever else writes to fd 1 goes to stderr
    sys.stdout.flush()
    os.dup2(2, 1)

    def send(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    import torch

    torch.set_num_threads(args.threads)
    from flopgap.machine._chains import ChainTimer, python_opcode_seconds
    from flopgap.machine._isolated import print_progress

    timer = ChainTimer(args.quick, lambda i, n, label: print_progress(i, n, label, file=out), burst_s=args.burst)
    send("rows\t" + json.dumps([{k: v for k, v in r.items() if k != "blocks"} for r in timer.rows]))
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "time" and len(cmd) == 2:
            send("blocks\t" + json.dumps(timer.time_one(int(cmd[1]))))
        elif cmd[0] == "python":
            send(f"python\t{python_opcode_seconds(timer.burst_s)!r}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
