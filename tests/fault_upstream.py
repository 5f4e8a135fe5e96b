"""A raw HTTP/1.1 upstream that misbehaves at the socket level, for tests and the benchmark.

It speaks OpenAI chat completions (``/v1/chat/completions``), the Responses API
(``/v1/responses``) and Anthropic messages (``/v1/messages``), streaming or not, and picks a fault from the model name
``fault-<kind>``:

- ``reset``: the connection is reset before any reply;
- ``cut``: the reply stops half-way and the connection closes (a non-stream body
  shorter than its Content-Length; a stream after a few events, between events);
- ``midevent``: a stream is reset in the middle of an event;
- ``short``: a stream ends cleanly (chunked terminator) before ``[DONE]`` /
  ``message_stop``;
- ``stall``: nothing for `stall_s` seconds, then a normal reply;
- ``500``, ``429``: an error in the protocol's shape;
- ``malformed``: a 200 whose JSON (or one event's data) does not parse.

Anything else is a normal reply. Runs on its own event loop in a thread (`serve()`),
or in a process of its own (the benchmark).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
from collections.abc import Iterator

STALL_S = 3.0


def _openai_events(model: str, n: int) -> list[bytes]:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model}
    out = []
    for i in range(n):
        choice = {"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}
        out.append(f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode())
    last = {"index": 0, "delta": {}, "finish_reason": "stop"}
    out.append(f"data: {json.dumps({**base, 'choices': [last]})}\n\n".encode())
    out.append(b"data: [DONE]\n\n")
    return out


def _anthropic_events(model: str, n: int) -> list[bytes]:
    def ev(kind: str, data: dict[str, object]) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 12, "output_tokens": 0}}  # fmt: skip
    return [
        ev("message_start", {"message": message}),
        ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        *[ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                           "text": f"tok{i} "}})
          for i in range(n)],
        ev("content_block_stop", {"index": 0}),
        ev("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"output_tokens": n}}),
        ev("message_stop", {}),
    ]  # fmt: skip


def _response(model: str, status: str, text: str) -> dict[str, object]:
    output = [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": text, "annotations": []}]}]  # fmt: skip
    return {"id": "resp_1", "object": "response", "created_at": 1, "status": status,
            "model": model, "output": output if status == "completed" else [],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": 12, "output_tokens": 10, "total_tokens": 22}}  # fmt: skip


def _responses_events(model: str, n: int) -> list[bytes]:
    def ev(kind: str, seq: int, data: dict[str, object]) -> bytes:
        payload = {"type": kind, "sequence_number": seq, **data}
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

    text = "".join(f"tok{i} " for i in range(n))
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    return [
        ev("response.created", 0, {"response": _response(model, "in_progress", "")}),
        *[ev("response.output_text.delta", i + 1, {**where, "delta": f"tok{i} "})
          for i in range(n)],
        ev("response.output_text.done", n + 1, {**where, "text": text}),
        ev("response.completed", n + 2, {"response": _response(model, "completed", text)}),
    ]  # fmt: skip


def _events(path: str, model: str, n: int) -> list[bytes]:
    if path.endswith("/messages"):
        return _anthropic_events(model, n)
    if path.endswith("/responses"):
        return _responses_events(model, n)
    return _openai_events(model, n)


def _json_reply(path: str, model: str) -> bytes:
    if path.endswith("/responses"):
        return json.dumps(_response(model, "completed", "hello " * 40)).encode()
    if path.endswith("/messages"):
        body: dict[str, object] = {
            "id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "hello " * 40}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 40},
        }  # fmt: skip
    else:
        body = {
            "id": "c1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hello " * 40}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 40, "total_tokens": 51},
        }  # fmt: skip
    return json.dumps(body).encode()


def _error_reply(path: str, status: int) -> bytes:
    if path.endswith("/messages"):
        kind = "rate_limit_error" if status == 429 else "api_error"
        body: dict[str, object] = {"type": "error", "error": {"type": kind, "message": "injected"}}
    else:
        kind = "rate_limit_error" if status == 429 else "server_error"
        body = {"error": {"message": "injected", "type": kind, "code": None}}
    return json.dumps(body).encode()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 stall_s: float = STALL_S, events: int = 10) -> None:  # fmt: skip
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            path = lines[0].split(b" ")[1].decode("latin-1").split("?")[0]
            length = 0
            for line in lines[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length) if length else b""
            data = json.loads(body) if body else {}
            model = str(data.get("model", ""))
            fault = model.removeprefix("fault-") if model.startswith("fault-") else "none"
            stream = bool(data.get("stream"))
            if fault == "reset":
                _reset(writer)
                return
            if fault == "stall":
                await asyncio.sleep(stall_s)
                if reader.at_eof() or writer.transport.is_closing():
                    return  # the proxy gave up on us, as it should
            if fault in ("500", "429"):
                status = int(fault)
                payload = _error_reply(path, status)
                reason = b"Too Many Requests" if status == 429 else b"Internal Server Error"
                writer.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                             b"retry-after: 1\r\ncontent-length: %d\r\n\r\n"
                             % (status, reason, len(payload)) + payload)  # fmt: skip
                await writer.drain()
                continue
            if not stream:
                payload = _json_reply(path, model)
                if fault == "malformed":
                    payload = payload[: len(payload) // 2] + b"}}]"
                if fault == "cut":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n" % len(payload)
                                 + payload[: len(payload) // 2])  # fmt: skip
                    await writer.drain()
                    _reset(writer)
                    return
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n" % len(payload) + payload)  # fmt: skip
                await writer.drain()
                continue
            sse = _events(path, model, events)
            if fault == "malformed":
                sse[2] = b"data: {this is not json\n\n"
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
            for i, event in enumerate(sse):
                if fault == "cut" and i == 3:
                    await writer.drain()
                    _reset(writer)
                    return
                if fault == "midevent" and i == 3:
                    half = event[: len(event) // 2]
                    writer.write(f"{len(half):x}\r\n".encode() + half + b"\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    _reset(writer)
                    return
                if fault == "short" and i == len(sse) - 2:
                    break
                writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def start(port: int = 0, stall_s: float = STALL_S) -> asyncio.Server:
    async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await handle(r, w, stall_s)

    return await asyncio.start_server(on_client, "127.0.0.1", port, backlog=1024)


@contextlib.contextmanager
def serve(stall_s: float = STALL_S) -> Iterator[str]:
    """Run the upstream on loopback in a thread; yield its base URL (no /v1)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, asyncio.Server] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        holder["server"] = loop.run_until_complete(start(0, stall_s))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    server = holder["server"]
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def serve_forever(port: int, stall_s: float = STALL_S) -> None:
    """Serve in this process until killed (the benchmark's upstream process)."""

    async def main() -> None:
        server = await start(port, stall_s)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
