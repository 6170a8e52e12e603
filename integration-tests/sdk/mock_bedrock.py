"""Drive mock-llm's Bedrock Converse routes with boto3: the AWS SDK's own event-stream
parser (CRC checks included) and response parsers must accept the mock's answers.

A manual check, not part of `cargo test`:
    pip install boto3
    cargo run -p integration-tests --bin mock-llm -- --port 18080 &
    python3 integration-tests/sdk/mock_bedrock.py http://127.0.0.1:18080
"""
import sys

import boto3
from botocore.config import Config

client = boto3.client(
    "bedrock-runtime",
    endpoint_url=sys.argv[1],
    region_name="us-east-1",
    aws_access_key_id="mock",
    aws_secret_access_key="mock",
    config=Config(retries={"max_attempts": 1}),
)
model = "anthropic.claude-3-haiku-20240307-v1:0"
tools = {"tools": [{"toolSpec": {"name": "get_weather", "description": "w", "inputSchema": {"json": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}}]}

r = client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "hi"}]}])
assert r["output"]["message"]["content"][0]["text"] == "mock reply to: hi", r
assert r["stopReason"] == "end_turn" and r["usage"]["outputTokens"] == 4, r

s = client.converse_stream(modelId=model, messages=[{"role": "user", "content": [{"text": "a b"}]}])
events = list(s["stream"])
kinds = [next(iter(e)) for e in events]
print("converse-stream events:", kinds)
text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
assert text == "mock reply to: a b", events
assert events[-1]["metadata"]["usage"]["outputTokens"] == 5, events

msgs = [{"role": "user", "content": [{"text": "weather?"}]}]
s = client.converse_stream(modelId=model, messages=msgs, toolConfig=tools)
events = list(s["stream"])
start = next(e["contentBlockStart"]["start"]["toolUse"] for e in events if "contentBlockStart" in e)
args = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e)
assert start == {"toolUseId": "tooluse_mock_1", "name": "get_weather"} and args == '{"city":"mock"}', events
stop = next(e["messageStop"]["stopReason"] for e in events if "messageStop" in e)
assert stop == "tool_use"
msgs += [{"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_mock_1", "name": "get_weather", "input": {"city": "mock"}}}]},
         {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_mock_1", "content": [{"text": "sunny"}]}}]}]
r = client.converse(modelId=model, messages=msgs, toolConfig=tools)
assert r["output"]["message"]["content"][0]["text"] == "tool result: sunny", r

# Errors: the x-amzn-errortype header picks boto3's exception class.
try:
    client.converse(modelId="mock-error-429", messages=msgs)
    raise SystemExit("expected a throttling error")
except client.exceptions.ThrottlingException as e:
    assert e.response["Error"]["Message"] == "mock error 429", e.response
try:
    client.converse_stream(modelId="mock-error-400", messages=msgs)
    raise SystemExit("expected a validation error")
except client.exceptions.ValidationException:
    pass
print("ALL BEDROCK SDK CHECKS PASSED")
