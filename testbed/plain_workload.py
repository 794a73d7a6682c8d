"""AI calls over plaintext HTTP to a model server (tests/ebpf/test_plaintext.py): the openai SDK (plain
and streamed), ollama's Python client (chat, streamed chat, generate), httpx with 20 concurrent calls,
curl over HTTP/1.1 and over HTTP/2 by prior knowledge (h2c), and a raw socket that sends its request
as two buffers of one sendmsg and peeks at the answer (MSG_PEEK) before reading it with recvmsg into
two buffers. Each prompt starts with a marker.

Usage: python -m testbed.plain_workload BASE_URL [--only openai]
Prints {"pid", "calls": [{"marker", "client", "model", "streaming", "text", "usage", "pid"}]} as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from urllib.parse import urlsplit

import httpx
import ollama
import openai

ASK = "what is plaintext?"
MODEL = "gpt-4o-mini"
LOCAL_MODEL = "llama3.2"


def call(marker: str, client: str, model: str, streaming: bool, text: str, usage,
         pid: int | None = None) -> dict:
    return {"marker": marker, "client": client, "model": model, "streaming": streaming, "text": text,
            "usage": list(usage) if usage else None, "pid": pid or os.getpid()}


def openai_calls(base: str) -> list[dict]:
    c = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-plain-test", max_retries=0)
    r = c.chat.completions.create(model=MODEL,
                                  messages=[{"role": "user", "content": f"[plain-openai] {ASK}"}])
    out = [call("[plain-openai]", "openai-sdk", MODEL, False, r.choices[0].message.content,
                (r.usage.prompt_tokens, r.usage.completion_tokens))]
    text, usage = "", None
    ask = [{"role": "user", "content": f"[plain-openai-stream] {ASK}"}]
    for chunk in c.chat.completions.create(model=MODEL, stream=True, stream_options={"include_usage": True},
                                           messages=ask):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
    out.append(call("[plain-openai-stream]", "openai-sdk", MODEL, True, text, usage))
    return out


def ollama_calls(base: str) -> list[dict]:
    c = ollama.Client(host=base)
    r = c.chat(model=LOCAL_MODEL, messages=[{"role": "user", "content": f"[plain-ollama] {ASK}"}],
               stream=False)
    out = [call("[plain-ollama]", "ollama", LOCAL_MODEL, False, r.message.content,
                (r.prompt_eval_count, r.eval_count))]
    text, usage = "", None
    ask = [{"role": "user", "content": f"[plain-ollama-stream] {ASK}"}]
    for part in c.chat(model=LOCAL_MODEL, messages=ask, stream=True):
        text += part.message.content or ""
        if part.done:
            usage = (part.prompt_eval_count, part.eval_count)
    out.append(call("[plain-ollama-stream]", "ollama", LOCAL_MODEL, True, text, usage))
    return out


async def httpx_calls(base: str, n: int = 20) -> list[dict]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        async def one(i: int) -> dict:
            marker = f"[plain-httpx-{i:02d}]"
            r = await client.post("/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": f"{marker} {ASK}"}]})
            body = r.json()
            return call(marker, "httpx", MODEL, False, body["choices"][0]["message"]["content"],
                        (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]))
        return list(await asyncio.gather(*(one(i) for i in range(n))))


def curl_calls(base: str) -> list[dict]:
    out = []
    for marker, flag in (("[plain-curl-h1]", "--http1.1"), ("[plain-curl-h2c]", "--http2-prior-knowledge")):
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": f"{marker} {ASK}"}]})
        proc = subprocess.Popen(["curl", "-sS", flag, "-H", "content-type: application/json", "-d", body,
                                 f"{base}/v1/chat/completions"], stdout=subprocess.PIPE, text=True)
        stdout, _ = proc.communicate(timeout=60)
        answer = json.loads(stdout)
        out.append(call(marker, "curl", MODEL, False, answer["choices"][0]["message"]["content"],
                        (answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"]), proc.pid))
    return out


def raw_socket_call(base: str) -> dict:
    """The vectored and peeking calls no library here makes: each byte must be captured once."""
    marker = "[plain-raw-socket]"
    url = urlsplit(base)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": f"{marker} {ASK}"}]}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port)) as s:
        s.sendmsg([head, body])
        assert s.recv(64, socket.MSG_PEEK)  # read again below: must not be recorded twice
        first, rest, data = bytearray(100), bytearray(65536), b""
        while True:
            n, *_ = s.recvmsg_into([first, rest])
            if not n:
                break
            data += (bytes(first) + bytes(rest))[:n]
    answer = json.loads(data.split(b"\r\n\r\n", 1)[1])
    return call(marker, "raw-socket", MODEL, False, answer["choices"][0]["message"]["content"],
                (answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"]))


def main() -> None:
    base = sys.argv[1].rstrip("/")
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    calls = []
    if only in (None, "openai"):
        calls += openai_calls(base)
    if only is None:
        calls += ollama_calls(base)
        calls += asyncio.run(httpx_calls(base))
        calls += curl_calls(base)
        calls.append(raw_socket_call(base))
    print(json.dumps({"pid": os.getpid(), "calls": calls}))


if __name__ == "__main__":
    main()
