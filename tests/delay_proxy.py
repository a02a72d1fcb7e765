"""A TCP proxy that delays every byte by a fixed time in each direction: latency on a link
where the kernel has no `tc netem` (this machine's kernel is built without
CONFIG_NET_SCH_NETEM, and without the fq qdisc that BPF-set departure times need).

    python tests/delay_proxy.py DELAY_MS LISTEN_HOST:PORT=TARGET_HOST:PORT ...

Each chunk read is written on after DELAY_MS, in order, whatever the chunk size; both
directions are delayed, so a round trip through the proxy costs 2 x DELAY_MS more. Prints
"ready" once every listener is bound.
"""

from __future__ import annotations

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def forward() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(chunk)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(forward())
    try:
        while chunk := await reader.read(1 << 16):
            queue.put_nowait((loop.time() + delay, chunk))
    except ConnectionError:
        pass
    queue.put_nowait((loop.time() + delay, b""))
    await sender


async def main(delay_ms: float, routes: list[tuple[str, int, str, int]]) -> None:
    delay = delay_ms / 1000

    def handler(target_host: str, target_port: int):
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer, delay),
                                 pipe(up_reader, writer, delay), return_exceptions=True)
        return handle

    servers = [await asyncio.start_server(handler(th, tp), host, port)
               for host, port, th, tp in routes]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    parsed = []
    for route in sys.argv[2:]:
        listen, target = route.split("=")
        host, port = listen.rsplit(":", 1)
        target_host, target_port = target.rsplit(":", 1)
        parsed.append((host, int(port), target_host, int(target_port)))
    asyncio.run(main(float(sys.argv[1]), parsed))
