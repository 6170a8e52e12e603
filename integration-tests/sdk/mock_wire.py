"""Drive mock-llm with the official Python SDKs: their strict stream accumulators must
accept the mock's Anthropic, Responses and chat streams, tool turns included.

A manual check, not part of `cargo test`:
    pip install anthropic openai
    cargo run -p integration-tests --bin mock-llm -- --port 18080 --strict &
    python3 integration-tests/sdk/mock_wire.py http://127.0.0.1:18080
"""
import json, sys
import anthropic, openai

base = sys.argv[1]
a = anthropic.Anthropic(base_url=base, api_key="k", max_retries=0)
tools = [{"name": "get_weather", "description": "w",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]

# Anthropic non-stream
m = a.messages.create(model="claude-x", max_tokens=64, messages=[{"role": "user", "content": "hello"}])
assert m.content[0].text == "mock reply to: hello", m
assert m.stop_reason == "end_turn" and m.usage.input_tokens > 0
# Anthropic stream, strict accumulation by the SDK helper
with a.messages.stream(model="claude-x", max_tokens=64, messages=[{"role": "user", "content": "one two"}]) as s:
    texts = list(s.text_stream)
    final = s.get_final_message()
assert len(texts) >= 2 and "".join(texts) == "mock reply to: one two", texts
assert final.usage.output_tokens == 5 and final.stop_reason == "end_turn", final
# Anthropic tool turn (stream) then tool result (stream)
msgs = [{"role": "user", "content": "weather?"}]
with a.messages.stream(model="claude-x", max_tokens=64, tools=tools, messages=msgs) as s:
    final = s.get_final_message()
tu = final.content[0]
assert tu.type == "tool_use" and tu.id == "toolu_mock_1" and tu.input == {"city": "mock"}, final
assert final.stop_reason == "tool_use"
msgs += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tu.id, "content": "sunny"}]}]
with a.messages.stream(model="claude-x", max_tokens=64, tools=tools, messages=msgs) as s:
    final = s.get_final_message()
assert final.content[0].text == "tool result: sunny", final
# Anthropic raw stream events
kinds = [e.type for e in a.messages.create(model="c", max_tokens=8, stream=True, messages=[{"role": "user", "content": "x"}])]
print("anthropic events:", kinds)

o = openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0)
# Responses non-stream
r = o.responses.create(model="gpt-r", input="hi there")
assert r.output_text == "mock reply to: hi there", r
assert r.usage.output_tokens == 5
# Responses stream with the SDK's accumulating helper
with o.responses.stream(model="gpt-r", input="a b") as s:
    deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
    final = s.get_final_response()
assert "".join(deltas) == "mock reply to: a b" and final.output_text == "mock reply to: a b", final
# Responses tool turn then function_call_output
rtools = [{"type": "function", "name": "get_weather", "parameters": tools[0]["input_schema"]}]
with o.responses.stream(model="gpt-r", input="weather?", tools=rtools) as s:
    final = s.get_final_response()
call = final.output[0]
assert call.type == "function_call" and call.call_id == "call_mock_1" and json.loads(call.arguments) == {"city": "mock"}, final
r = o.responses.create(model="gpt-r", tools=rtools, input=[
    {"role": "user", "content": "weather?"},
    {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
    {"type": "function_call_output", "call_id": call.call_id, "output": "rain"}])
assert r.output_text == "tool result: rain", r
print("responses events:", [e.type for e in o.responses.create(model="gpt-r", input="x", stream=True)])
# Chat completions with tools, stream, SDK accumulation
ctools = [{"type": "function", "function": {"name": "get_weather", "parameters": tools[0]["input_schema"]}}]
with o.chat.completions.stream(model="gpt", messages=[{"role": "user", "content": "w"}], tools=ctools) as s:
    final = s.get_final_completion()
tc = final.choices[0].message.tool_calls[0]
assert tc.id == "call_mock_1" and json.loads(tc.function.arguments) == {"city": "mock"}, final
c = o.chat.completions.create(model="gpt", tools=ctools, messages=[
    {"role": "user", "content": "w"},
    {"role": "assistant", "tool_calls": [tc.model_dump()]},
    {"role": "tool", "tool_call_id": tc.id, "content": "42"}])
assert c.choices[0].message.content == "tool result: 42", c
# Error shapes through the SDK exception classes
try:
    o.embeddings.create(model="e", input="x")
    raise SystemExit("expected 404")
except openai.NotFoundError as e:
    print("openai 404:", e.body)
# Errors in each API's shape reach the SDKs' own exception classes.
try:
    a.messages.create(model="mock-error-529", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    raise SystemExit("expected 529")
except anthropic.APIStatusError as e:
    assert e.status_code == 529 and e.body["error"]["type"] == "overloaded_error", e.body
try:
    a.messages.create(model="mock-error-429", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    raise SystemExit("expected 429")
except anthropic.RateLimitError as e:
    assert e.body["error"]["type"] == "rate_limit_error", e.body
try:
    o.responses.create(model="mock-error-400", input="x")
    raise SystemExit("expected 400")
except openai.BadRequestError as e:
    assert e.message, e
print("ALL SDK CHECKS PASSED")
