"""Check the Responses golden snapshots with the official `openai` SDK's own types.

Run: python3 plano-egress/tests/sdk/check_responses_snapshots.py   (needs `pip install openai`)

Every Response object snapshot must validate as `openai.types.responses.Response`; every
stream snapshot must validate event by event as `ResponseStreamEvent` and be accepted by
the SDK's stream accumulator (`responses.stream()`), which is stricter about order than
the types; the request fixtures must be valid `responses.create` bodies, except `err_*`
(bad input) and `lenient_*` (forms we accept beyond the SDK's types).
The golden tests catch changes; this catches shapes the SDK would reject.
"""

import glob
import json
import os
import sys

from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseCreateParams, ResponseStreamEvent
from pydantic import TypeAdapter

HERE = os.path.dirname(os.path.abspath(__file__))
SNAPSHOTS = os.path.join(HERE, "..", "snapshots")
FIXTURES = os.path.join(HERE, "..", "golden", "responses")
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def snapshot(path):
    # insta: a YAML header between `---` lines, then the JSON body.
    return json.loads(open(path, encoding="utf-8").read().split("---\n", 2)[2])


def main():
    failures = []
    checked = 0
    for path in sorted(glob.glob(os.path.join(SNAPSHOTS, "golden_responses__response__*.snap"))):
        body = snapshot(path)
        if "param" in (body.get("error") or {}):
            continue  # a translation error, not a Response
        try:
            Response.model_validate(body)
            checked += 1
        except Exception as e:  # noqa: BLE001 - report every failure, then exit non-zero
            failures.append(f"{os.path.basename(path)}: {str(e)[:500]}")
    events = TypeAdapter(ResponseStreamEvent)
    for path in sorted(glob.glob(os.path.join(SNAPSHOTS, "golden_responses__stream__*.snap"))):
        try:
            state = ResponseStreamState(input_tools=omit, text_format=omit)
            closes = 0
            for e in snapshot(path):
                ev = events.validate_python(e["data"])
                assert ev.type == e["event"], f"event {e['event']} carries type {ev.type}"
                state.handle_event(ev)
                closes += ev.type in TERMINAL
            assert closes == 1, f"{closes} terminal events"
            checked += 1
        except Exception as e:  # noqa: BLE001
            failures.append(f"{os.path.basename(path)}: {str(e)[:500]}")
    create = TypeAdapter(ResponseCreateParams)
    for path in sorted(glob.glob(os.path.join(FIXTURES, "request", "*.json"))):
        if os.path.basename(path).startswith(("err_", "lenient_")):
            continue
        try:
            create.validate_python(json.load(open(path, encoding="utf-8")))
            checked += 1
        except Exception as e:  # noqa: BLE001
            failures.append(f"{os.path.basename(path)}: {str(e)[:500]}")
    for f in failures:
        print("FAIL", f)
    print(f"{checked} checked, {len(failures)} failed")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
