"""A sandbox worker: a process of its own that parses untrusted files, one at a time.

Started by `bot.files.sandbox` as `python -c "from bot.files.parse_worker import main; main()"`
with a bare environment (no tokens to read) and its limits as arguments. It loads the
parsers, caps its own address space (`RLIMIT_AS`), says it is ready, then serves jobs
on stdin/stdout until stdin closes. Before each job it sets its CPU-time limit
(`RLIMIT_CPU`) that job's allowance above what it has used: past it the kernel ends
the process (SIGXCPU) and the pool starts another.

Frames are a 4-byte big-endian length and a body. A job is a JSON header frame
(`{"kind", "bound"}`) then a frame of the file's bytes; an answer is one JSON frame,
`{"ok": text}` or `{"error": reason, "limit": "memory" | ""}`. JSON, never pickle:
a worker that a crafted file took over must not be able to run code in the bot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import resource
import struct
import sys
from pathlib import Path
from typing import BinaryIO

HEADER = struct.Struct(">I")
NICENESS = 10  # a worker's CPU priority below the bot's


def read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    body = stream.read(size)
    return body if len(body) == size else None


def write_frame(stream: BinaryIO, body: bytes) -> None:
    stream.write(HEADER.pack(len(body)) + body)
    stream.flush()


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    seconds, memory_mb = float(sys.argv[1]), int(sys.argv[2])
    logging.disable(logging.CRITICAL)  # pypdf warns about every odd file; the answer's note says enough
    # Under memory pressure in the pod, the kernel's OOM killer takes a worker, never the bot;
    # short of CPU, the bot's own work (other conversations) goes first.
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("1000")
    os.nice(NICENESS)
    # Encrypted PDFs are refused, so pypdf's decryption backend is never needed; kept out, it
    # leaves each worker 12 MB more of its address space for parsing.
    sys.modules["cryptography"] = None  # type: ignore[assignment]
    from bot.files.parsers import PARSERS, preload

    preload()

    # The parsers are loaded first, so the cap applies to parsing and not to starting up.
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    write_frame(stdout, b'{"ready": true}')
    while (header := read_frame(stdin)) is not None and (data := read_frame(stdin)) is not None:
        job = json.loads(header)
        # Whole seconds are the limit's unit: the allowance is rounded up, never down.
        allowance = math.ceil(_cpu_used() + seconds)
        resource.setrlimit(resource.RLIMIT_CPU, (allowance, cpu_hard))
        answer: dict[str, str]
        try:
            answer = {"ok": PARSERS[job["kind"]](data, int(job["bound"]))}
        except MemoryError:
            answer = {"error": "memory", "limit": "memory"}
        except ValueError as unreadable:
            answer = {"error": str(unreadable), "limit": ""}
        except Exception:  # a parser's own bug: this file is unreadable, the next may not be
            answer = {"error": "it is not a file I can read", "limit": ""}
        del data
        write_frame(stdout, json.dumps(answer).encode())
        if answer.get("limit") == "memory":
            return  # after a MemoryError the heap may be fragmented or half-built: start afresh


if __name__ == "__main__":
    main()
