"""Schemathesis against the app's own OpenAPI schema (bounded): no input makes it answer 5xx, every
error is an OpenAI error body, and responses match the schema. Runs in-process through ASGI with a
scripted runtime, so it is fast.

Schemathesis's check that every schema-valid request is accepted is left out: some rules are not
expressible in OpenAPI — a tool message's ``tool_call_id`` must name an earlier call, the prompt must
fit the model's context, function ``parameters`` must be valid JSON Schema — and those are 400s."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from serve_minimal.app import create_app
from serve_minimal.settings import ServerSettings
from server_support import ScriptedRuntime, call_output

APP = create_app(
    runtime=ScriptedRuntime(call_output("get_time", {"location": "Singapore"}), context_length=512),
    settings=ServerSettings(model_name="fuzz", max_body_bytes=64 << 10),
)
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)


@SCHEMA.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_server_fail(case):
    response = case.call()
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
