"""End-to-end check of the egress with the official Python SDKs.

Every client API (OpenAI chat completions, Anthropic Messages, OpenAI Responses) against
every provider API the mock serves natively (OpenAI chat, Anthropic Messages, Bedrock
Converse, and OpenAI Responses for the Responses client), streaming and not, with and
without tools. The mock answers deterministically (see integration-tests/src/mock): plain
prompts get "mock reply to: <prompt>", a request offering tools gets one call to the first
tool with schema-derived arguments ("mock" for strings), and a tool result gets
"tool result: <result>".

Usage: python e2e.py BASE_URL   (BASE_URL like http://127.0.0.1:12000)
Prints one line per case and exits 1 if any case failed.
"""

import json
import sys
import traceback

import anthropic
import openai

BASE = sys.argv[1].rstrip("/")
PROVIDERS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-sonnet-4-5",
    "bedrock": "amazon_bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
}
PROMPT = "say hello"
EXPECT = "mock reply to: say hello"
TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": TOOL_OPENAI["function"]["parameters"],
}
TOOL_RESPONSES = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": TOOL_OPENAI["function"]["parameters"],
}

oa = openai.OpenAI(base_url=BASE + "/v1", api_key="client-key", max_retries=0, timeout=20)
an = anthropic.Anthropic(base_url=BASE, api_key="client-key", max_retries=0, timeout=20)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# ---- OpenAI chat completions ---------------------------------------------------------


def chat_text(model, stream):
    msgs = [{"role": "user", "content": PROMPT}]
    if not stream:
        r = oa.chat.completions.create(model=model, messages=msgs)
        text = r.choices[0].message.content
        check(r.choices[0].finish_reason == "stop", f"finish_reason {r.choices[0].finish_reason}")
        check(r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, f"usage {r.usage}")
    else:
        text, usage, finish = "", None, None
        for c in oa.chat.completions.create(
            model=model, messages=msgs, stream=True, stream_options={"include_usage": True}
        ):
            if c.usage:
                usage = c.usage
            for ch in c.choices:
                text += ch.delta.content or ""
                finish = ch.finish_reason or finish
        check(finish == "stop", f"finish_reason {finish}")
        check(usage and usage.prompt_tokens > 0 and usage.completion_tokens > 0, f"usage {usage}")
    check(EXPECT in text, f"text {text!r}")


def chat_tools(model, stream):
    msgs = [{"role": "user", "content": "weather in Paris?"}]
    if not stream:
        r = oa.chat.completions.create(model=model, messages=msgs, tools=[TOOL_OPENAI])
        m = r.choices[0].message
        check(r.choices[0].finish_reason == "tool_calls", f"finish {r.choices[0].finish_reason}")
        calls = [(c.id, c.function.name, c.function.arguments) for c in m.tool_calls]
    else:
        acc, finish = {}, None
        for c in oa.chat.completions.create(model=model, messages=msgs, tools=[TOOL_OPENAI], stream=True):
            for ch in c.choices:
                finish = ch.finish_reason or finish
                for tc in ch.delta.tool_calls or []:
                    e = acc.setdefault(tc.index, {"id": None, "name": "", "args": ""})
                    e["id"] = tc.id or e["id"]
                    if tc.function:
                        e["name"] += tc.function.name or ""
                        e["args"] += tc.function.arguments or ""
        check(finish == "tool_calls", f"finish {finish}")
        calls = [(e["id"], e["name"], e["args"]) for _, e in sorted(acc.items())]
    check(len(calls) == 1, f"calls {calls}")
    call_id, name, args = calls[0]
    check(name == "get_weather" and json.loads(args) == {"city": "mock"}, f"call {calls[0]}")
    check(call_id, "tool call id missing")
    msgs += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
    ]
    r = oa.chat.completions.create(model=model, messages=msgs, tools=[TOOL_OPENAI])
    check("tool result: sunny" in (r.choices[0].message.content or ""), f"after tool {r.choices[0].message}")


# ---- Anthropic Messages --------------------------------------------------------------


def messages_text(model, stream):
    msgs = [{"role": "user", "content": PROMPT}]
    if not stream:
        m = an.messages.create(model=model, max_tokens=100, messages=msgs, system="be brief")
    else:
        with an.messages.stream(model=model, max_tokens=100, messages=msgs, system="be brief") as s:
            for _ in s:
                pass
            m = s.get_final_message()
    text = "".join(b.text for b in m.content if b.type == "text")
    check(EXPECT in text, f"text {text!r}")
    check(m.stop_reason == "end_turn", f"stop_reason {m.stop_reason}")
    check(m.role == "assistant" and m.type == "message", f"message {m}")
    check(m.usage.input_tokens > 0 and m.usage.output_tokens > 0, f"usage {m.usage}")


def messages_tools(model, stream):
    msgs = [{"role": "user", "content": "weather in Paris?"}]
    if not stream:
        m = an.messages.create(model=model, max_tokens=100, messages=msgs, tools=[TOOL_ANTHROPIC])
    else:
        with an.messages.stream(model=model, max_tokens=100, messages=msgs, tools=[TOOL_ANTHROPIC]) as s:
            for _ in s:
                pass
            m = s.get_final_message()
    check(m.stop_reason == "tool_use", f"stop_reason {m.stop_reason}")
    uses = [b for b in m.content if b.type == "tool_use"]
    check(len(uses) == 1, f"content {m.content}")
    u = uses[0]
    check(u.name == "get_weather" and u.input == {"city": "mock"} and u.id, f"tool_use {u}")
    msgs += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": u.id, "content": "sunny"}]},
    ]
    m = an.messages.create(model=model, max_tokens=100, messages=msgs, tools=[TOOL_ANTHROPIC])
    text = "".join(b.text for b in m.content if b.type == "text")
    check("tool result: sunny" in text, f"after tool {m.content}")


# ---- OpenAI Responses ----------------------------------------------------------------


def responses_text(model, stream):
    if not stream:
        r = oa.responses.create(model=model, input=PROMPT, instructions="be brief")
    else:
        with oa.responses.stream(model=model, input=PROMPT, instructions="be brief") as s:
            for _ in s:
                pass
            r = s.get_final_response()
    check(EXPECT in r.output_text, f"text {r.output_text!r}")
    check(r.status == "completed", f"status {r.status}")
    check(r.usage and r.usage.input_tokens > 0 and r.usage.output_tokens > 0, f"usage {r.usage}")


def responses_tools(model, stream):
    if not stream:
        r = oa.responses.create(model=model, input="weather in Paris?", tools=[TOOL_RESPONSES])
    else:
        with oa.responses.stream(model=model, input="weather in Paris?", tools=[TOOL_RESPONSES]) as s:
            for _ in s:
                pass
            r = s.get_final_response()
    calls = [o for o in r.output if o.type == "function_call"]
    check(len(calls) == 1, f"output {r.output}")
    c = calls[0]
    check(c.name == "get_weather" and json.loads(c.arguments) == {"city": "mock"} and c.call_id, f"call {c}")
    follow = [
        {"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments},
        {"type": "function_call_output", "call_id": c.call_id, "output": "sunny"},
    ]
    r2 = oa.responses.create(model=model, input=[{"role": "user", "content": "weather in Paris?"}] + follow,
                             tools=[TOOL_RESPONSES])
    check("tool result: sunny" in r2.output_text, f"after tool {r2.output}")


CASES = {
    "chat": (chat_text, chat_tools),
    "messages": (messages_text, messages_tools),
    "responses": (responses_text, responses_tools),
}


def main():
    failed = 0
    total = 0
    only = sys.argv[2] if len(sys.argv) > 2 else None
    for client, (text_case, tool_case) in CASES.items():
        for provider, model in PROVIDERS.items():
            for stream in (False, True):
                for kind, case in (("text", text_case), ("tools", tool_case)):
                    name = f"{client} -> {provider} {'stream' if stream else 'whole'} {kind}"
                    if only and only not in name:
                        continue
                    total += 1
                    try:
                        case(model, stream)
                        print(f"ok   {name}", flush=True)
                    except Exception as e:  # noqa: BLE001 - every failure is reported
                        failed += 1
                        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
                        if "-v" in sys.argv:
                            traceback.print_exc()
    print(f"{total - failed}/{total} passed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
