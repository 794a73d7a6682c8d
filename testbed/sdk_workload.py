"""Real SDK clients (openai, anthropic) calling the fake providers under their real host names.

Run inside a private mount namespace whose /etc/hosts maps api.openai.com and api.anthropic.com to
127.0.0.1, with SSL_CERT_FILE naming the test CA (scripts/record_fixtures.py does both). Waits for a
line on stdin, then prints a JSON ground truth of what the SDKs returned.
"""

from __future__ import annotations

import json
import sys

import anthropic
import openai

CANARY_KEY = "sk-proj-CANARYcanaryCANARY0123456789"
USER = "What does the fake provider say?"


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    truth: dict = {}
    oa = openai.OpenAI(api_key=CANARY_KEY, max_retries=0)
    r = oa.chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "system", "content": "You are a test."}, {"role": "user", "content": USER}], temperature=0.5)
    truth["chat"] = {"text": r.choices[0].message.content, "usage": r.usage.model_dump()}
    text = ""
    usage = None
    for chunk in oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": USER}],
                                            stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    truth["chat_stream"] = {"text": text, "usage": usage.model_dump()}
    e = oa.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    truth["embeddings"] = {"count": len(e.data)}
    try:
        oa.chat.completions.create(model="rate-limited", messages=[{"role": "user", "content": "x"}])
    except openai.RateLimitError as exc:
        truth["rate_limited"] = {"status": exc.status_code}
    an = anthropic.Anthropic(api_key=CANARY_KEY, max_retries=0)
    m = an.messages.create(model="claude-haiku-4-5", max_tokens=100, system="Be short.",
                           messages=[{"role": "user", "content": USER}])
    truth["anthropic"] = {"text": m.content[0].text, "usage": m.usage.model_dump()}
    with an.messages.stream(model="claude-haiku-4-5", max_tokens=100,
                            messages=[{"role": "user", "content": USER}]) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    truth["anthropic_stream"] = {"text": streamed, "usage": final.usage.model_dump()}
    print(json.dumps(truth), flush=True)


if __name__ == "__main__":
    main()
