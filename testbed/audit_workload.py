"""The workloads of the audit sample (testbed/audit_sample.py): what one pod of a small cluster does
with AI APIs, through real, unmodified SDK clients calling the fake providers under their real host
names. Run like testbed/e2e_workload.py (private mount namespace, SSL_CERT_FILE naming the test CA):
prints {"ready": true}, waits for a line on stdin, makes its calls, prints what the clients saw.

usage: python -m testbed.audit_workload ROLE REPLICA

Roles: support-bot (openai: a system prompt, tools and tool calls, streaming, a prompt with a fake
e-mail address and a fake AWS key, a stream the user stops half-way, errors, an answer cut at
max_tokens), summarizer (anthropic and gemini: long documents, one over the recorder's per-call
capture limit, tool use, overload and rate-limit errors), indexer (openai embeddings, cohere,
bedrock), gateway (httpx over HTTP/2 with a connection opened before the recorder started, a
self-hosted OpenAI-compatible server, a health check that is no AI call).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request

KEY = "sk-proj-AUDITcanaryAUDITcanary0123456789"
# Calls are spread out so that the notebooks' timelines have a shape; nothing waits on this.
PACE_SECONDS = 1.5
# Made-up personal data and an AWS-key-shaped string for the prompt audit: not real, never valid.
FAKE_EMAIL = "jane.doe@example.com"
FAKE_AWS_KEY = "AKIAEXAMPLEFAKE12345"
SELF_HOSTED = "https://llm.internal:8443/v1"

SUPPORT_SYSTEM = ("You are the support assistant of Acme Cloud. Answer in two sentences at most, never "
                  "reveal internal ticket notes, and look orders up with the tools before answering.")
SUPPORT_TOOLS = [
    {"type": "function", "function": {
        "name": "lookup_order", "description": "Find an order by its number",
        "parameters": {"type": "object", "properties": {"order": {"type": "string"}},
                       "required": ["order"]}}},
    {"type": "function", "function": {
        "name": "open_ticket", "description": "Open a ticket for the human support team",
        "parameters": {"type": "object", "properties": {"summary": {"type": "string"}}}}},
]
QUESTIONS = ["Where is my order 4711?", "Can I change the delivery address of order 1234?",
             "Why was I charged twice this month?", "How do I reset my password?"]
SUMMARIZER_SYSTEM = ("You summarise research papers for the lab's weekly digest. Keep it under 120 words "
                     "and cite section numbers.")
SUMMARIZER_TOOLS = [{"name": "search_papers", "description": "Search the lab's paper archive",
                     "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]


def document(sections: int) -> str:
    """A long, made-up paper (about 115 bytes a section), the kind of prompt that dominates token use."""
    return "\n".join(f"Section {i}. In configuration {i} the measured throughput was {i * 37 % 211} requests "
                     f"per second with a median latency of {i * 13 % 97} ms." for i in range(1, sections + 1))


class Calls:
    def __init__(self, role: str):
        self.role = role
        self.seen: list[dict] = []

    def add(self, what: str, provider: str, model: str, streaming: bool, status: int, **more) -> None:
        self.seen.append({"what": what, "provider": provider, "model": model, "streaming": streaming,
                          "status": status, **more})


def steps_support_bot(calls: Calls, replica: int) -> list:
    import openai

    oa = openai.OpenAI(api_key=KEY, max_retries=0)

    def system(question: str) -> list[dict]:
        return [{"role": "system", "content": SUPPORT_SYSTEM}, {"role": "user", "content": question}]

    def tool_round_trip(question: str) -> None:
        messages = system(question)
        r = oa.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=SUPPORT_TOOLS)
        tc = r.choices[0].message.tool_calls[0]
        calls.add("tool-call", "openai", "gpt-4o-mini", False, 200, tool=tc.function.name)
        messages += [r.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": tc.id, "content": json.dumps({"status": "shipped"})}]
        r = oa.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=SUPPORT_TOOLS)
        calls.add("tool-answer", "openai", "gpt-4o-mini", False, 200, finish=r.choices[0].finish_reason)

    def streamed(question: str, model: str = "gpt-4o-mini") -> None:
        text = ""
        for chunk in oa.chat.completions.create(model=model, messages=system(question), stream=True,
                                                stream_options={"include_usage": True}):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        calls.add("stream", "openai", model, True, 200, chars=len(text))

    def streamed_tool_call() -> None:
        names = set()
        for chunk in oa.chat.completions.create(model="gpt-4o", messages=system(QUESTIONS[2]), stream=True,
                                                tools=SUPPORT_TOOLS, stream_options={"include_usage": True}):
            for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                names.add(tc.function.name)
        calls.add("stream-tool-call", "openai", "gpt-4o", True, 200, tools=sorted(n for n in names if n))

    def pasted_secret() -> None:
        prompt = (f"Hi, I am Jane Doe ({FAKE_EMAIL}). Our deploy broke after we rotated the access key "
                  f"{FAKE_AWS_KEY}, can you check what is wrong?")
        oa.chat.completions.create(model="gpt-4o-mini", messages=system(prompt))
        calls.add("pii", "openai", "gpt-4o-mini", False, 200)

    def stopped_mid_stream() -> None:
        # The user presses stop: the client reads a few chunks and closes the connection, so the
        # capture holds a stream without its end: an incomplete exchange.
        stream = oa.chat.completions.create(model="gpt-4o-long", stream=True,
                                            messages=system("Explain the bill in detail."))
        for n, _ in enumerate(stream):
            if n == 5:
                break
        stream.close()
        calls.add("stopped", "openai", "gpt-4o-long", True, 200, complete=False)

    def cut_off() -> None:
        r = oa.chat.completions.create(model="gpt-4o-mini", messages=system(QUESTIONS[3]), max_tokens=8)
        calls.add("cut-off", "openai", "gpt-4o-mini", False, 200, finish=r.choices[0].finish_reason)

    def error(model: str, exc_type) -> None:
        try:
            oa.chat.completions.create(model=model, messages=system(QUESTIONS[0]))
        except exc_type as exc:
            calls.add("error", "openai", model, False, exc.status_code)
        else:
            raise AssertionError(f"{model} did not fail")

    first = [lambda: tool_round_trip(QUESTIONS[replica % 2]), lambda: streamed(QUESTIONS[1])]
    if replica == 0:
        return first + [pasted_secret, stopped_mid_stream, lambda: streamed(QUESTIONS[3]), cut_off,
                        lambda: error("rate-limited", openai.RateLimitError), streamed_tool_call]
    rate_limited = lambda: error("rate-limited", openai.RateLimitError)  # noqa: E731
    return first + [rate_limited, lambda: streamed(QUESTIONS[2], "gpt-4o"),
                    lambda: error("server-error", openai.InternalServerError),
                    lambda: tool_round_trip(QUESTIONS[0]), rate_limited]


def steps_summarizer(calls: Calls, replica: int) -> list:
    import anthropic
    from google import genai
    from google.genai import types

    an = anthropic.Anthropic(api_key=KEY, max_retries=0)
    gem = genai.Client(api_key="AIzaSyAUDITcanaryAUDITcanary01234567")

    def summarize(sections: int, model: str = "claude-haiku-4-5", what: str = "summary") -> None:
        m = an.messages.create(model=model, max_tokens=400, system=SUMMARIZER_SYSTEM, messages=[
            {"role": "user", "content": f"Summarise this paper:\n{document(sections)}"}])
        calls.add(what, "anthropic", model, False, 200, prompt_bytes=len(document(sections)),
                  finish=m.stop_reason)

    def tool_use() -> None:
        messages = [{"role": "user", "content": "Find last year's papers on cache eviction, compare them."}]
        with an.messages.stream(model="claude-opus-4-1", max_tokens=400, system=SUMMARIZER_SYSTEM,
                                tools=SUMMARIZER_TOOLS, messages=messages) as stream:
            final = stream.get_final_message()
        block = next(b for b in final.content if b.type == "tool_use")
        calls.add("tool-use", "anthropic", "claude-opus-4-1", True, 200, tool=block.name)
        messages += [{"role": "assistant", "content": [b.model_dump() for b in final.content]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id,
                                                   "content": "3 papers found: LRU-K, ARC, TinyLFU"}]}]
        with an.messages.stream(model="claude-opus-4-1", max_tokens=400, system=SUMMARIZER_SYSTEM,
                                tools=SUMMARIZER_TOOLS, messages=messages) as stream:
            text = "".join(stream.text_stream)
        calls.add("tool-answer", "anthropic", "claude-opus-4-1", True, 200, chars=len(text))

    def cut_off() -> None:
        m = an.messages.create(model="claude-haiku-4-5", max_tokens=5, system=SUMMARIZER_SYSTEM,
                               messages=[{"role": "user", "content": "Summarise section 3 in detail."}])
        calls.add("cut-off", "anthropic", "claude-haiku-4-5", False, 200, finish=m.stop_reason)

    def overloaded() -> None:
        try:
            an.messages.create(model="overloaded", max_tokens=100,
                               messages=[{"role": "user", "content": "Summarise the intro."}])
        except anthropic.APIStatusError as exc:
            calls.add("error", "anthropic", "overloaded", False, exc.status_code)

    def gemini(model: str, stream: bool) -> None:
        config = types.GenerateContentConfig(system_instruction="You write one-line abstracts.")
        prompt = f"Abstract of:\n{document(40)}"
        if stream:
            text = "".join(c.text or "" for c in gem.models.generate_content_stream(
                model=model, contents=prompt, config=config))
        else:
            text = gem.models.generate_content(model=model, contents=prompt, config=config).text
        calls.add("abstract", "google", model, stream, 200, chars=len(text))

    def gemini_rate_limited() -> None:
        try:
            gem.models.generate_content(model="rate-limited", contents="One more abstract, please.")
        except genai.errors.APIError as exc:
            calls.add("error", "google", "rate-limited", False, exc.code)

    # 250 sections (about 30 KB) fit the capture limit of the sample's recorder (64 KiB a call);
    # 700 (about 80 KB) do not: the capture keeps a gap where the rest of that prompt was.
    return [tool_use, lambda: summarize(250), lambda: gemini("gemini-2.5-flash", False), overloaded,
            lambda: summarize(700, "claude-opus-4-1", "summary-over-limit"),
            lambda: gemini("gemini-2.5-flash", True), cut_off, gemini_rate_limited,
            lambda: gemini("gemini-2.5-pro", False), lambda: summarize(60)]


def steps_indexer(calls: Calls, replica: int) -> list:
    import boto3
    import cohere
    import openai

    oa = openai.OpenAI(api_key=KEY, max_retries=0)
    co = cohere.ClientV2(api_key="co-AUDITcanaryAUDITcanary0123456789")
    os.environ.update(AWS_ACCESS_KEY_ID="AKIACANARY0000000000",
                      AWS_SECRET_ACCESS_KEY="CANARYsecretCANARYsecretCANARY0123456789")
    br = boto3.client("bedrock-runtime", region_name="us-east-1")

    def embed(batch: int) -> None:
        chunks = [f"chunk {batch}.{i}: {document(3)}" for i in range(8)]
        e = oa.embeddings.create(model="text-embedding-3-small", input=chunks)
        calls.add("embeddings", "openai", "text-embedding-3-small", False, 200, vectors=len(e.data))

    def rerank_question(stream: bool) -> None:
        messages = [{"role": "system", "content": "Rewrite search queries for the document index."},
                    {"role": "user", "content": "cache eviction policies compared"}]
        if stream:
            text = "".join(ev.delta.message.content.text for ev in co.chat_stream(
                model="command-a-03-2025", messages=messages) if ev.type == "content-delta")
        else:
            text = co.chat(model="command-a-03-2025", messages=messages).message.content[0].text
        calls.add("query-rewrite", "cohere", "command-a-03-2025", stream, 200, chars=len(text))

    def bedrock(model: str, stream: bool) -> None:
        msgs = [{"role": "user", "content": [{"text": "Label this chunk: storage, network or compute?"}]}]
        system = [{"text": "You label documents with one word."}]
        if stream:
            text = "".join(ev["contentBlockDelta"]["delta"]["text"] for ev in br.converse_stream(
                modelId=model, messages=msgs, system=system)["stream"] if "contentBlockDelta" in ev)
        else:
            r = br.converse(modelId=model, messages=msgs, system=system, inferenceConfig={"maxTokens": 64})
            text = r["output"]["message"]["content"][0]["text"]
        calls.add("label", "aws_bedrock", model, stream, 200, chars=len(text))

    return [lambda: embed(0), lambda: rerank_question(False),
            lambda: bedrock("anthropic.claude-3-haiku-20240307-v1:0", False), lambda: embed(1),
            lambda: bedrock("amazon.nova-lite-v1:0", True), lambda: rerank_question(True), lambda: embed(2),
            lambda: bedrock("amazon.nova-lite-v1:0", False), lambda: embed(3)]


class Gateway:
    """An LLM gateway: one HTTP/2 connection to OpenAI opened (and used) before the recorder starts,
    so the recorder joins it mid-connection and cannot read its compressed headers."""

    def __init__(self, calls: Calls):
        import httpx

        self.calls = calls
        self.verify = os.environ["SSL_CERT_FILE"]
        # httpx closes idle connections after 5 s by default: longer than the recorder takes to start
        self.early = httpx.Client(http2=True, verify=self.verify, limits=httpx.Limits(keepalive_expiry=300))
        self.chat(self.early, "warm-up", stream=False, record=False)

    def chat(self, client, what: str, stream: bool, record: bool = True) -> None:
        body = {"model": "gpt-4o-mini", "stream": stream,
                "messages": [{"role": "system", "content": "You are the platform's routing model."},
                             {"role": "user", "content": f"Route this request: {what}"}]}
        with client.stream("POST", "https://api.openai.com/v1/chat/completions", json=body,
                           headers={"authorization": f"Bearer {KEY}"}) as r:
            r.read()
        if record:
            self.calls.add("routed", "openai", "gpt-4o-mini", stream, r.status_code, http=r.http_version)

    async def fan_out(self, n: int) -> None:
        import httpx

        async with httpx.AsyncClient(http2=True, verify=self.verify) as client:
            async def one(i: int) -> None:
                body = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
                        "messages": [{"role": "user", "content": f"Classify ticket {i} by urgency."}]}
                async with client.stream("POST", "https://api.openai.com/v1/chat/completions", json=body,
                                         headers={"authorization": f"Bearer {KEY}"}) as r:
                    await r.aread()
                self.calls.add("fan-out", "openai", "gpt-4o-mini", True, r.status_code, http=r.http_version)

            await asyncio.gather(*(one(i) for i in range(n)))

    def self_hosted(self, model: str) -> None:
        import openai

        local = openai.OpenAI(api_key=KEY, base_url=SELF_HOSTED, max_retries=0)
        local.chat.completions.create(model=model,
                                      messages=[{"role": "user", "content": "Draft a status page."}])
        self.calls.add("self-hosted", "openai_compatible", model, False, 200)

    def health(self) -> None:
        with urllib.request.urlopen("https://api.openai.com/health", timeout=30) as r:
            r.read()

    def steps(self) -> list:
        return [lambda: self.chat(self.early, "billing question", stream=False),
                lambda: asyncio.run(self.fan_out(6)), lambda: self.self_hosted("llama-3.1-8b"), self.health,
                lambda: self.chat(self.early, "password reset", stream=True),
                lambda: self.self_hosted("llama-3-long"), lambda: asyncio.run(self.fan_out(4)),
                lambda: self.chat(self.early, "refund", stream=False)]


def main() -> None:
    role, replica = sys.argv[1], int(sys.argv[2])
    calls = Calls(role)
    # Clients are made (SDKs imported, the gateway's early connection opened) before "ready", so that
    # every pod starts calling as soon as the recorder runs.
    if role == "gateway":
        steps = Gateway(calls).steps()
    else:
        steps = {"support-bot": steps_support_bot, "summarizer": steps_summarizer,
                 "indexer": steps_indexer}[role](calls, replica)
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    sys.stdin.readline()
    for i, step in enumerate(steps):
        if i:
            time.sleep(PACE_SECONDS)
        step()
    print(json.dumps({"role": role, "replica": replica, "pid": os.getpid(), "calls": calls.seen}), flush=True)


if __name__ == "__main__":
    main()
