"""Talks to a running `runtime serve` with the official `openai` Python package.

Usage: python tools/openai_client_check.py BASE_URL MODEL [API_KEY]
Exits non-zero (with the assertion) when a response does not have the shape the
package expects. Run by tests/openai_client.rs; tools/test.sh installs `openai`.
"""

import sys

import openai

base, model = sys.argv[1], sys.argv[2]
key = sys.argv[3] if len(sys.argv) > 3 else "unused"
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)

# Chat, whole response.
chat = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8, temperature=0
)
assert chat.object == "chat.completion", chat
assert chat.choices[0].message.role == "assistant", chat
assert chat.choices[0].finish_reason in ("stop", "length"), chat
assert chat.usage.completion_tokens >= 1 and chat.usage.prompt_tokens > 0, chat
chat_text = chat.choices[0].message.content

# Chat, streamed: the deltas add up to the same greedy text; usage arrives last.
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Say hi"}],
    max_tokens=8,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
parts, usage, finish = [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            parts.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
assert "".join(parts) == chat_text, (parts, chat_text)
assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens, usage
assert finish == chat.choices[0].finish_reason, finish

# Completion, whole and streamed, n=2 and logprobs.
comp = client.completions.create(model=model, prompt="the cat", max_tokens=6, temperature=0, n=2, logprobs=1)
assert comp.object == "text_completion" and len(comp.choices) == 2, comp
assert comp.choices[0].text == comp.choices[1].text, comp  # greedy
assert len(comp.choices[0].logprobs.token_logprobs) == comp.usage.completion_tokens // 2, comp
text = "".join(
    c.choices[0].text for c in client.completions.create(model=model, prompt="the cat", max_tokens=6, temperature=0, stream=True)
)
assert text == comp.choices[0].text, (text, comp.choices[0].text)

# Models, and an error the package surfaces as BadRequestError.
assert model in [m.id for m in client.models.list().data]
try:
    client.completions.create(model=model, prompt="x", max_tokens=6, extra_body={"top_k": -5})
except openai.BadRequestError as e:
    assert "top_k" in str(e), e
else:
    raise AssertionError("top_k=-5 was accepted")
print("openai client: chat, streaming chat, completions (n=2, logprobs), streaming completion, models, errors OK")
