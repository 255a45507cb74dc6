"""Memory of ``relais serve`` while staff download a big file through ``/media``.

A file of ``--mb`` megabytes is stored as Relais stores a citizen's file (``media_chunks``
rows, ``bot.domain.media_store``), a real ``relais serve --no-workers`` process is started on the
database, and ``--clients`` clients download it at the same time through a signed link.
The server's resident memory (``VmRSS`` from ``/proc``, sampled every 10 ms) is printed
before and at its peak: streaming holds about one chunk per request, so the peak should not
grow with the file's size (the old ``/media`` held each file whole per request: 6 clients
on a 50 MB file took a server from 154 MB to 992 MB).

Run: ``.venv/bin/python -m bench.media [--db sqlite|postgres|both] [--mb 50] [--clients 6]``
(Linux: reads ``/proc/<pid>/status``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from bench.common import (
    BenchDB,
    DatabaseUnavailable,
    add_db_arguments,
    backends,
    machine_description,
    print_header,
    print_table,
    run,
    temp_database,
)
from bot.domain.media_links import media_link
from bot.domain.media_store import CHUNK, _write_chunks
from bot.storage.models import Contact, MediaItem, Message

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def store_file(db: BenchDB, size: int) -> int:
    """A citizen's message with one stored file of ``size`` bytes; returns the media id."""
    from bot.core.clock import Clock

    now = Clock().now()
    pattern = os.urandom(CHUNK)
    data = (pattern * (size // CHUNK + 1))[:size]
    async with db.sessions() as session, session.begin():
        contact = Contact(name="Bench", created_at=now)
        session.add(contact)
        await session.flush()
        message = Message(contact_id=contact.id, direction="in", channel="telegram",
                          created_at=now)
        session.add(message)
        await session.flush()
        item = MediaItem(message_id=message.id, contact_id=contact.id, channel="telegram",
                         content_type="application/pdf", ref="bench", created_at=now,
                         state="stored", size=size, stored_at=now)
        session.add(item)
        await session.flush()
        await _write_chunks(session, item, data)
        return item.id


async def wait_healthy(http: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes]
                       ) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"relais serve exited with status {proc.returncode}")
        try:
            async with http.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("relais serve did not answer /healthz")


async def download(http: aiohttp.ClientSession, link: str) -> int:
    total = 0
    async with http.get(link) as response:
        assert response.status == 200, response.status
        async for piece in response.content.iter_chunked(64 * 1024):
            total += len(piece)
    return total


async def measure(db: BenchDB, megabytes: float, clients: int) -> list[str]:
    size = int(megabytes * 1024 * 1024)
    media_id = await store_file(db, size)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with db.sessions() as session, session.begin():
        from bot.core.clock import Clock

        link = await media_link(session, base, media_id, Clock().now())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAIS_")}
    env.update(RELAIS_DATABASE_URL=db.url, RELAIS_HOST="127.0.0.1", RELAIS_PORT=str(port),
               RELAIS_PUBLIC_URL=base)
    proc = subprocess.Popen(  # noqa: ASYNC220 - one child process, started once
        [sys.executable, "-m", "bot", "serve", "--no-workers", "--log-level", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
            await wait_healthy(http, base, proc)
            await download(http, link)  # warm: imports, pools, first chunk reads
            before = rss_mb(proc.pid)
            peak = before
            done = asyncio.Event()

            async def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, rss_mb(proc.pid))
                    await asyncio.sleep(0.01)

            sampler = asyncio.create_task(sample())
            started = time.perf_counter()
            sizes = await asyncio.gather(*(download(http, link) for _ in range(clients)))
            seconds = time.perf_counter() - started
            done.set()
            await sampler
            assert all(s == size for s in sizes), sizes
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    moved = size * clients / (1024 * 1024)
    return [db.backend, f"{megabytes:g}", str(clients), f"{before:.0f}", f"{peak:.0f}",
            f"{peak - before:+.0f}", f"{seconds:.2f}", f"{moved / seconds:.0f}"]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_db_arguments(parser)
    parser.add_argument("--mb", type=float, default=50.0, help="file size (default 50)")
    parser.add_argument("--clients", type=int, default=6, help="concurrent downloads")
    args = parser.parse_args()
    print_header("Relais /media: server memory while staff download a big file", [
        machine_description(),
        f"{args.clients} concurrent downloads of one {args.mb:g} MB file, "
        f"stored in {CHUNK // 1024} KiB chunks",
    ])
    rows = []
    for backend in backends(args.db):
        try:
            async with temp_database(backend, args.pg_url, suffix="_media") as db:
                rows.append(await measure(db, args.mb, args.clients))
        except DatabaseUnavailable as exc:
            print(f"{backend}: skipped ({exc})", file=sys.stderr)
    print_table("Resident memory of relais serve (MB)", [
        "database", "file MB", "clients", "RSS before", "RSS peak", "growth", "seconds",
        "MB/s served",
    ], rows)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
