"""Drives a running maas server with the official OpenAI Python client, unmodified.

Environment: MAAS_URL, MAAS_API_KEY, MODEL (chat), EMBED_MODEL (embeddings). Prints "ok" and exits 0 when every check holds.
"""
import os

import openai

client = openai.OpenAI(base_url=os.environ["MAAS_URL"] + "/v1", api_key=os.environ["MAAS_API_KEY"])
model = os.environ["MODEL"]

ids = [m.id for m in client.models.list()]
assert model in ids, ids

messages = [{"role": "user", "content": "What is the capital of France?"}]
plain = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=16, seed=1)
content = plain.choices[0].message.content
assert content and content.strip(), plain
assert plain.choices[0].finish_reason in ("stop", "length"), plain
assert 1 <= plain.usage.completion_tokens <= 16, plain.usage
assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens

stream = client.chat.completions.create(
    model=model, messages=messages, temperature=0, max_tokens=16, seed=1, stream=True,
    stream_options={"include_usage": True},
)
pieces, finish, usage = [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
assert "".join(pieces) == content, ("".join(pieces), content)
assert finish == plain.choices[0].finish_reason
assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens

legacy = client.completions.create(model=model, prompt="The sky is", max_tokens=4, temperature=0)
assert legacy.usage.completion_tokens == 4, legacy.usage
assert legacy.choices[0].finish_reason == "length"

try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    raise AssertionError("expected NotFoundError")
except openai.NotFoundError as e:
    assert "no-such-model" in str(e), e

try:
    client.chat.completions.create(model=model, messages=messages, temperature=7)
    raise AssertionError("expected BadRequestError")
except openai.BadRequestError as e:
    assert e.body["param"] == "temperature", e.body

bad = openai.OpenAI(base_url=os.environ["MAAS_URL"] + "/v1", api_key="wrong-key-wrong-key")
try:
    bad.models.list()
    raise AssertionError("expected AuthenticationError")
except openai.AuthenticationError:
    pass

# Embeddings: the client asks for base64 by default and decodes it; ask for floats too.
embed_model = os.environ["EMBED_MODEL"]
texts = ["The quick brown fox jumps over the lazy dog.", "a"]
packed = client.embeddings.create(model=embed_model, input=texts)
floats = client.embeddings.create(model=embed_model, input=texts, encoding_format="float")
assert [d.index for d in packed.data] == [0, 1], packed
for p, f in zip(packed.data, floats.data):
    assert len(p.embedding) == 384
    assert max(abs(a - b) for a, b in zip(p.embedding, f.embedding)) < 1e-6
    assert abs(sum(x * x for x in p.embedding) - 1.0) < 1e-3
assert packed.usage.prompt_tokens > 2 and packed.usage.total_tokens == packed.usage.prompt_tokens
try:
    client.embeddings.create(model=model, input="x")
    raise AssertionError("expected BadRequestError for embeddings from a chat model")
except openai.BadRequestError as e:
    assert "cannot do embeddings" in str(e), e

print("ok")
