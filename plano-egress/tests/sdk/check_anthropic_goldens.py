"""Feed the Anthropic golden snapshots to the official SDKs, through real HTTP.

The Rust golden tests pin what the translations produce; this checks that what they
produce is accepted by the strictest parsers clients use: `anthropic` (Message, stream
events, its stream accumulator) for the client-side outputs, `openai` (ChatCompletion,
ChatCompletionChunk) for the upstream-side outputs.

    pip install anthropic openai
    python3 plano-egress/tests/sdk/check_anthropic_goldens.py

Exits non-zero when any snapshot is refused or assembles wrongly.
"""

import glob
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai
from openai.types.chat import ChatCompletionChunk
from pydantic import TypeAdapter

SNAPSHOTS = os.path.join(os.path.dirname(__file__), "..", "snapshots")
replies = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        content_type, body = replies.pop(0)
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def snapshots(kind):
    for path in sorted(glob.glob(f"{SNAPSHOTS}/golden_anthropic__{kind}__*.snap")):
        name = path.rsplit("__", 1)[1][: -len(".snap")]
        if name.startswith("errors"):
            continue
        with open(path) as f:
            yield name, json.loads(f.read().split("---", 2)[2])


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    ac = anthropic.Anthropic(api_key="test", base_url=base, max_retries=0, timeout=10)
    oc = openai.OpenAI(api_key="test", base_url=base + "/v1", max_retries=0, timeout=10)
    args = dict(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    chat_args = dict(model="m", messages=[{"role": "user", "content": "x"}])
    failures = []

    def check(label, fn):
        try:
            print("ok  ", label, fn())
        except Exception as e:  # noqa: BLE001 - report every failure, then exit non-zero
            failures.append(label)
            print("FAIL", label, type(e).__name__, e)

    for name, body in snapshots("response_from_chat"):
        def message(body=body):
            anthropic.types.Message.model_validate(body)
            replies.append(("application/json", json.dumps(body).encode()))
            m = ac.messages.create(**args)
            return [b.type for b in m.content], m.stop_reason
        check(f"Message {name}", message)

    event_adapter = TypeAdapter(anthropic.types.RawMessageStreamEvent)
    for name, events in snapshots("stream_from_chat"):
        def stream(events=events):
            closes = [e for e in events if e["event"] in ("message_stop", "error")]
            assert len(closes) == 1 and closes[0] is events[-1], "exactly one close, last"
            for e in events:
                assert e["event"] == e["data"]["type"]
                if e["event"] != "error":
                    event_adapter.validate_python(e["data"])
            wire = "".join(f"event: {e['event']}\ndata: {json.dumps(e['data'])}\n\n" for e in events)
            replies.append(("text/event-stream", wire.encode()))
            try:
                with ac.messages.stream(**args) as s:
                    for _ in s:
                        pass
                    m = s.get_final_message()
            except anthropic.APIStatusError as e:
                assert events[-1]["event"] == "error", f"unexpected error {e}"
                return f"raised {e.body['error']['type']}"
            assert events[-1]["event"] != "error", "the SDK did not raise the error event"
            return [b.type for b in m.content], m.stop_reason, m.usage.output_tokens

        check(f"Messages stream {name}", stream)

    for name, body in snapshots("response_to_chat"):
        def completion(body=body):
            replies.append(("application/json", json.dumps(body).encode()))
            c = oc.chat.completions.create(**chat_args)
            for t in c.choices[0].message.tool_calls or []:
                json.loads(t.function.arguments)
            return c.choices[0].finish_reason, c.usage.prompt_tokens
        check(f"ChatCompletion {name}", completion)

    for name, snap in snapshots("stream_to_chat"):
        if snap["end"] != "finish: ok":
            continue

        def chunks(chunks=snap["chunks"]):
            for c in chunks:
                ChatCompletionChunk.model_validate(c)
            wire = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            replies.append(("text/event-stream", wire.encode()))
            finish, calls, usage = [], {}, None
            for i, chunk in enumerate(oc.chat.completions.create(**chat_args, stream=True)):
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    if i == 0:
                        assert choice.delta.role == "assistant"
                    for t in choice.delta.tool_calls or []:
                        calls.setdefault(t.index, "")
                        calls[t.index] += (t.function and t.function.arguments) or ""
                    if choice.finish_reason:
                        finish.append(choice.finish_reason)
            assert len(finish) == 1, finish
            assert sorted(calls) == list(range(len(calls))), calls
            return finish[0], [json.loads(a) for a in calls.values()], usage.prompt_tokens

        check(f"chat stream {name}", chunks)

    server.shutdown()
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
