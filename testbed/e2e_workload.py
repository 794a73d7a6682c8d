"""The end-to-end workload: real, unmodified clients calling the fake providers under their real host
names (run inside a private mount namespace whose /etc/hosts points them at 127.0.0.1; see
testbed/e2e_run.py). Prints {"ready": true}, waits for a line on stdin, runs every call, then prints
the ground truth as the clients saw it: one entry per call, with the marker its prompt carries so the
analyzer's events can be matched to it.

usage: python -m testbed.e2e_workload WORKDIR [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import anthropic
import httpx
import openai
from google import genai

KEY = "sk-proj-E2EcanaryE2Ecanary0123456789"
ASK = "What does the fake provider say?"
SELF_HOSTED = "https://llm.internal:8443/v1"  # an OpenAI-compatible server the registry does not know
NODE_DIR = Path(__file__).resolve().parent / "node"


def call(calls: list, marker: str, client: str, provider: str, model: str, streaming: bool, **seen) -> None:
    calls.append({"marker": marker, "client": client, "provider": provider, "model": model,
                  "streaming": streaming, "pid": seen.pop("pid", os.getpid()), **seen})


def openai_calls(calls: list, long_prompt: bool) -> None:
    oa = openai.OpenAI(api_key=KEY, max_retries=0)
    r = oa.chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "system", "content": "You are a test."}, {"role": "user", "content": f"[chat] {ASK}"}])
    call(calls, "[chat]", "openai-sdk", "openai", "gpt-4o-mini", False, status=200,
         text=r.choices[0].message.content, usage=[r.usage.prompt_tokens, r.usage.completion_tokens])
    text, usage = "", None
    for chunk in oa.chat.completions.create(model="gpt-4o-mini", stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": f"[chat-stream] {ASK}"}]):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    call(calls, "[chat-stream]", "openai-sdk", "openai", "gpt-4o-mini", True, status=200, text=text,
         usage=[usage.prompt_tokens, usage.completion_tokens])
    resp = oa.responses.create(model="gpt-5", input=f"[responses] {ASK}")
    call(calls, "[responses]", "openai-sdk", "openai", "gpt-5", False, status=200, text=resp.output_text,
         usage=[resp.usage.input_tokens, resp.usage.output_tokens])
    e = oa.embeddings.create(model="text-embedding-3-small", input=["[embeddings] one", "two"])
    call(calls, "[embeddings]", "openai-sdk", "openai", "text-embedding-3-small", False, status=200,
         text=None, usage=[e.usage.prompt_tokens, None])
    text = ""
    for chunk in oa.chat.completions.create(model="gpt-4o-long", stream=True,
                                            messages=[{"role": "user", "content": f"[long-answer] {ASK}"}]):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    call(calls, "[long-answer]", "openai-sdk", "openai", "gpt-4o-long", True, status=200, text=text)
    if long_prompt:
        big = "[long-prompt] " + "lorem ipsum dolor sit amet " * 10_000  # 270 KB
        r = oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": big}])
        call(calls, "[long-prompt]", "openai-sdk", "openai", "gpt-4o-mini", False, status=200,
             text=r.choices[0].message.content, usage=[r.usage.prompt_tokens, r.usage.completion_tokens],
             prompt_bytes=len(big))
    for model, marker, exc_type in (("rate-limited", "[err-429]", openai.RateLimitError),
                                    ("bad-request", "[err-400]", openai.BadRequestError)):
        try:
            oa.chat.completions.create(model=model, messages=[{"role": "user", "content": f"{marker} {ASK}"}])
        except exc_type as exc:
            call(calls, marker, "openai-sdk", "openai", model, False, status=exc.status_code, text=None,
                 error=exc.body.get("code") if isinstance(exc.body, dict) else None)
    local = openai.OpenAI(api_key=KEY, base_url=SELF_HOSTED, max_retries=0)
    r = local.chat.completions.create(model="llama-3-long", messages=[
        {"role": "user", "content": f"[self-hosted] {ASK}"}])  # a long answer: served gzip-compressed
    call(calls, "[self-hosted]", "openai-sdk", "openai_compatible", "llama-3-long", False, status=200,
         text=r.choices[0].message.content, usage=[r.usage.prompt_tokens, r.usage.completion_tokens])


async def openai_async_calls(calls: list, n: int) -> None:
    oa = openai.AsyncOpenAI(api_key=KEY, max_retries=0)

    async def one(i: int) -> None:
        marker = f"[async-{i:02d}]"
        r = await oa.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "user", "content": f"{marker} {ASK}"}])
        call(calls, marker, "openai-sdk-async", "openai", "gpt-4o-mini", False, status=200,
             text=r.choices[0].message.content, usage=[r.usage.prompt_tokens, r.usage.completion_tokens])

    await asyncio.gather(*(one(i) for i in range(n)))
    await oa.close()


async def httpx_h2_calls(calls: list, n: int) -> None:
    """n streaming calls multiplexed on one HTTP/2 connection."""
    async with httpx.AsyncClient(http2=True, verify=os.environ["SSL_CERT_FILE"]) as client:
        async def one(i: int) -> None:
            marker = f"[h2-{i:02d}]"
            body = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": f"{marker} {ASK}"}]}
            text, usage = "", None
            async with client.stream("POST", "https://api.openai.com/v1/chat/completions", json=body,
                                     headers={"authorization": f"Bearer {KEY}"}) as resp:
                assert resp.http_version == "HTTP/2", resp.http_version
                async for line in resp.aiter_lines():
                    if line.startswith("data: {"):
                        chunk = json.loads(line[6:])
                        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                            text += chunk["choices"][0]["delta"]["content"]
                        usage = chunk.get("usage") or usage
            call(calls, marker, "httpx-h2", "openai", "gpt-4o-mini", True, status=resp.status_code, text=text,
                 usage=[usage["prompt_tokens"], usage["completion_tokens"]])

        await asyncio.gather(*(one(i) for i in range(n)))


def anthropic_calls(calls: list) -> None:
    an = anthropic.Anthropic(api_key=KEY, max_retries=0)
    with an.messages.stream(model="claude-haiku-4-5", max_tokens=100,
                            messages=[{"role": "user", "content": f"[anthropic-stream] {ASK}"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    u = final.usage
    call(calls, "[anthropic-stream]", "anthropic-sdk", "anthropic", "claude-haiku-4-5", True, status=200,
         text=text, usage=[u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens,
                           u.output_tokens])
    try:
        an.messages.create(model="bad-key", max_tokens=10,
                           messages=[{"role": "user", "content": f"[err-401] {ASK}"}])
    except anthropic.AuthenticationError as exc:
        call(calls, "[err-401]", "anthropic-sdk", "anthropic", "bad-key", False, status=exc.status_code,
             text=None, error="authentication_error")


def gemini_calls(calls: list) -> None:
    client = genai.Client(api_key=KEY)
    r = client.models.generate_content(model="gemini-2.5-flash", contents=f"[gemini] {ASK}")
    call(calls, "[gemini]", "google-genai", "google", "gemini-2.5-flash", False, status=200, text=r.text,
         usage=[r.usage_metadata.prompt_token_count, r.usage_metadata.candidates_token_count])
    try:
        client.models.generate_content(model="rate-limited", contents=f"[err-gemini-429] {ASK}")
    except genai.errors.APIError as exc:
        call(calls, "[err-gemini-429]", "google-genai", "google", "rate-limited", False, status=exc.code,
             text=None, error="RESOURCE_EXHAUSTED")


def curl_calls(calls: list) -> None:
    for version, marker in (("--http1.1", "[curl-h1]"), ("--http2", "[curl-h2]")):
        body = json.dumps({"model": "gpt-4o-mini",
                           "messages": [{"role": "user", "content": f"{marker} {ASK}"}]})
        proc = subprocess.Popen(["curl", "-sS", version, "--cacert", os.environ["SSL_CERT_FILE"],
                                 "https://api.openai.com/v1/chat/completions",
                                 "-H", f"Authorization: Bearer {KEY}", "-H", "Content-Type: application/json",
                                 "-d", body], stdout=subprocess.PIPE)
        out, _ = proc.communicate(timeout=60)
        r = json.loads(out)
        call(calls, marker, "curl", "openai", "gpt-4o-mini", False, pid=proc.pid, status=200,
             text=r["choices"][0]["message"]["content"],
             usage=[r["usage"]["prompt_tokens"], r["usage"]["completion_tokens"]])


def node_calls(calls: list) -> None:
    if not shutil.which("node"):
        return
    out = subprocess.run(["node", str(Path(__file__).resolve().parent / "node_ai_client.js"), KEY, ASK],
                         capture_output=True, text=True, timeout=120, check=True,
                         env={**os.environ, "NODE_EXTRA_CA_CERTS": os.environ["SSL_CERT_FILE"]})
    result = json.loads(out.stdout)
    for c in result["calls"]:
        call(calls, c["marker"], c["client"], "openai", "gpt-4o-mini", c["streaming"], pid=result["pid"],
             status=c["status"], text=c["text"], usage=c.get("usage"))


def non_ai_calls() -> list[dict]:
    """Calls that must yield no AI event: a health check on an AI host, a static file elsewhere."""
    done = []
    for url in ("https://api.openai.com/health", "https://static.example.com/static/app.js"):
        with urllib.request.urlopen(url, timeout=30) as r:
            done.append({"url": url, "status": r.status, "bytes": len(r.read())})
    return done


def main() -> None:
    quick = "--quick" in sys.argv
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    sys.stdin.readline()
    calls: list[dict] = []
    openai_calls(calls, long_prompt=not quick)
    asyncio.run(openai_async_calls(calls, 5 if quick else 20))
    asyncio.run(httpx_h2_calls(calls, 10 if quick else 50))
    anthropic_calls(calls)
    gemini_calls(calls)
    curl_calls(calls)
    node_calls(calls)
    print(json.dumps({"pid": os.getpid(), "calls": calls, "non_ai": non_ai_calls()}), flush=True)


if __name__ == "__main__":
    main()
