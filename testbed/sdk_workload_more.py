"""More real SDK clients under their real host names: google-genai (Gemini), boto3 (Bedrock
Converse and ConverseStream), cohere (chat v2) and ollama (over TLS on localhost:11434).

Run like testbed.sdk_workload: inside a private mount namespace, SSL_CERT_FILE and AWS_CA_BUNDLE
naming the test CA. Prints a JSON ground truth of what the SDKs returned."""

from __future__ import annotations

import json
import os
import sys

CANARY_KEY = "AIzaSyCANARYcanaryCANARY0123456789"
AWS_SECRET = "CANARYsecretCANARYsecretCANARY0123456789"
USER = "What does the fake provider say?"


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    truth: dict = {}
    import openai

    oa = openai.OpenAI(api_key=CANARY_KEY, max_retries=0)
    r = oa.responses.create(model="gpt-5-mini", instructions="Be brief.", input=USER)
    truth["responses"] = {"text": r.output_text, "usage": r.usage.total_tokens}
    text = ""
    with oa.responses.stream(model="gpt-5-mini", input=USER) as stream:
        for ev in stream:
            if ev.type == "response.output_text.delta":
                text += ev.delta
        final = stream.get_final_response()
    truth["responses_stream"] = {"text": text, "usage": final.usage.total_tokens}
    r = oa.completions.create(model="gpt-3.5-turbo-instruct", prompt=USER, max_tokens=30)
    truth["completions"] = {"text": r.choices[0].text, "usage": r.usage.total_tokens}

    from google import genai

    client = genai.Client(api_key=CANARY_KEY)
    r = client.models.generate_content(model="gemini-2.5-flash", contents=USER)
    truth["gemini"] = {"text": r.text, "usage": r.usage_metadata.total_token_count}
    text = "".join(c.text or "" for c in client.models.generate_content_stream(model="gemini-2.5-flash",
                                                                                contents=USER))
    truth["gemini_stream"] = {"text": text}

    import boto3

    os.environ.update(AWS_ACCESS_KEY_ID="AKIACANARY0000000000", AWS_SECRET_ACCESS_KEY=AWS_SECRET)
    br = boto3.client("bedrock-runtime", region_name="us-east-1")
    model = "anthropic.claude-3-haiku-20240307-v1:0"
    msgs = [{"role": "user", "content": [{"text": USER}]}]
    r = br.converse(modelId=model, messages=msgs, inferenceConfig={"maxTokens": 64})
    truth["bedrock"] = {"text": r["output"]["message"]["content"][0]["text"], "usage": r["usage"]}
    stream = br.converse_stream(modelId=model, messages=msgs)
    text, usage = "", None
    for ev in stream["stream"]:
        if "contentBlockDelta" in ev:
            text += ev["contentBlockDelta"]["delta"]["text"]
        if "metadata" in ev:
            usage = ev["metadata"]["usage"]
    truth["bedrock_stream"] = {"text": text, "usage": usage}
    r = br.invoke_model(modelId=model, body=json.dumps({
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
        "messages": [{"role": "user", "content": USER}]}))
    answer = json.loads(r["body"].read())
    truth["bedrock_invoke"] = {"text": answer["content"][0]["text"], "usage": answer["usage"]}

    import cohere

    co = cohere.ClientV2(api_key=CANARY_KEY)
    r = co.chat(model="command-a-03-2025", messages=[{"role": "user", "content": USER}])
    truth["cohere"] = {"text": r.message.content[0].text, "usage": r.usage.tokens.output_tokens}

    import ollama

    ol = ollama.Client(host="https://localhost:11434")
    text = "".join(part["message"]["content"] for part in ol.chat(
        model="llama3.2", messages=[{"role": "user", "content": USER}], stream=True))
    truth["ollama_stream"] = {"text": text}
    print(json.dumps(truth, default=str), flush=True)


if __name__ == "__main__":
    main()
