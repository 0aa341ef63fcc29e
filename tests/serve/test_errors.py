"""The one error shape: messages that name the fix, and never longer than a reader can use."""

from __future__ import annotations

from fastapi.testclient import TestClient

from serve.api.errors import MAX_MESSAGE_CHARS, shorten_message

QUOTES = "/v1/accounts/Acme Corporation/quote-strategies"


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


def test_a_body_that_is_not_json_says_how_to_send_it(client: TestClient) -> None:
    reply = client.post(QUOTES, content=b"not json", headers={"content-type": "application/json"})
    assert reply.status_code == 422
    assert error_of(reply) == {
        "code": "invalid_request",
        "message": "body: not valid JSON (Expecting value at character 0); send a JSON object "
        "with the header Content-Type: application/json",
    }

    # Without the header the body is read as text, which no JSON route can take.
    reply = client.post(QUOTES, content=b'{"items": []}', headers={"content-type": "text/plain"})
    assert reply.status_code == 422
    assert error_of(reply)["message"] == (
        "body: not read as JSON; send a JSON object with the header Content-Type: application/json"
    )


def test_a_very_long_id_is_named_by_its_start(client: TestClient) -> None:
    long_id = "X" * 3000
    reply = client.get(f"/v1/accounts/{long_id}/signals")
    assert reply.status_code == 404
    message = error_of(reply)["message"]
    assert message.startswith(f"no account '{'X' * 80}…' is stored")
    assert "X" * 81 not in message and len(message) < 400

    reply = client.get(f"/v1/{long_id}")
    assert reply.status_code == 404
    assert error_of(reply)["message"] == f"no route GET '/v1/{'X' * 76}…'; see /docs for the API"


def test_shorten_message_cuts_quoted_values_and_the_whole() -> None:
    value = "值" * 200
    assert shorten_message(f"account '{value}' and the account's owner 'dana'") == (
        f"account '{'值' * 80}…' and the account's owner 'dana'"
    )
    assert shorten_message('got "' + "a" * 81 + '"') == 'got "' + "a" * 80 + '…"'
    short = "华信医疗's owner '李娜' is not on record"
    assert shorten_message(short) == short
    unquoted = "word " * 1000
    assert shorten_message(unquoted) == unquoted[: MAX_MESSAGE_CHARS - 1] + "…"
    assert len(shorten_message(unquoted)) == MAX_MESSAGE_CHARS == 2000
