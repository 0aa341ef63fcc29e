"""The HTTP API over a real service: error shapes (no models) and end-to-end answers (slow)."""

from __future__ import annotations

import time

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from copilot.errors import StateError
from copilot.settings import Settings, load_settings
from serve.api.app import create_app
from serve.api.routes.calls import upload_names
from serve.service import CopilotService
from tests.serve.conftest import SAMPLE_TRANSCRIPT, bearer, client_with_limit, store_call


def assert_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["message"]


# --- cheap: never reach a model ------------------------------------------------


def test_healthz_counts_calls(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "calls": 0}


def test_openapi_page_and_schema(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "Sales copilot"
    routes = {
        "/healthz",
        "/v1/objections/handle",
        "/v1/chat",
        "/v1/calls",
        "/v1/calls/{call_id}",
        "/v1/calls/jobs/{job_id}",
    }
    assert routes <= set(schema["paths"])


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_objection_text_names_the_field(client: TestClient, text: str) -> None:
    message = assert_error(
        client.post("/v1/objections/handle", json={"text": text}), 422, "invalid_request"
    )
    assert message == "body.text: must not be empty"


def test_missing_text_and_unknown_field(client: TestClient) -> None:
    message = assert_error(
        client.post("/v1/objections/handle", json={"txt": "too expensive"}), 422, "invalid_request"
    )
    assert "body.text" in message and "body.txt" in message


def test_malformed_json(client: TestClient) -> None:
    response = client.post(
        "/v1/objections/handle", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "invalid_request")


def test_chat_needs_messages(client: TestClient) -> None:
    message = assert_error(client.post("/v1/chat", json={"messages": []}), 422, "invalid_request")
    assert message.startswith("body.messages:")


def test_chat_needs_a_user_message(client: TestClient) -> None:
    body = {"messages": [{"role": "assistant", "content": "How can I help?"}]}
    message = assert_error(client.post("/v1/chat", json=body), 422, "invalid_request")
    assert "body.messages" in message and "user" in message


def test_chat_rejects_unknown_role(client: TestClient) -> None:
    body = {"messages": [{"role": "tool", "content": "hi"}]}
    message = assert_error(client.post("/v1/chat", json=body), 422, "invalid_request")
    assert "body.messages.0.role" in message


def test_unknown_route_and_method(client: TestClient) -> None:
    message = assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert "/v1/nothing-here" in message
    assert_error(client.delete("/healthz"), 405, "method_not_allowed")


def test_unknown_call_is_404(client: TestClient) -> None:
    message = assert_error(client.get("/v1/calls/no-such-call"), 404, "not_found")
    assert "no-such-call" in message


def test_list_calls_empty(client: TestClient) -> None:
    response = client.get("/v1/calls")
    assert response.status_code == 200
    assert response.json() == []


def test_upload_with_unsupported_suffix_is_415(client: TestClient, settings: Settings) -> None:
    files = {"file": ("setup.exe", b"MZ\x90\x00", "application/octet-stream")}
    message = assert_error(client.post("/v1/calls", files=files), 415, "unsupported_media_type")
    assert "setup.exe" in message and ".exe" in message and ".wav" in message
    assert not any(settings.uploads_dir.rglob("*.exe"))


def test_upload_without_file_field(client: TestClient) -> None:
    message = assert_error(
        client.post("/v1/calls", data={"outcome": "won"}), 422, "invalid_request"
    )
    assert "body.file" in message


def test_oversized_upload_is_413_and_nothing_is_kept(settings: Settings) -> None:
    payload = b"Rep: hello\n" * 20_000  # ~220 KB against a 0.1 MB limit
    with client_with_limit(settings, 0.1) as limited:
        response = limited.post("/v1/calls", files={"file": ("big.txt", payload, "text/plain")})
    message = assert_error(response, 413, "too_large")
    assert "serve.max_upload_mb" in message
    assert not any(p.is_file() for p in settings.uploads_dir.rglob("*"))


def test_oversized_streamed_upload_without_content_length(settings: Settings) -> None:
    """A chunked body has no Content-Length; the limit must still hold as bytes arrive."""
    boundary = "testboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()

    def body():
        yield head
        for _ in range(64):
            yield b"Customer: too expensive\n" * 4096  # ~100 KB a chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    with client_with_limit(settings, 1) as limited:
        response = limited.post(
            "/v1/calls",
            content=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
    assert_error(response, 413, "too_large")


def test_copilot_errors_map_to_statuses_and_crashes_hide_the_traceback(
    service: CopilotService, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(service, with_ui=False)
    probe = APIRouter()

    @probe.get("/probe/state")
    def state() -> None:
        raise StateError("no calls are stored yet; run `copilot ingest PATH` first")

    @probe.get("/probe/crash")
    def crash() -> None:
        raise RuntimeError("secret detail /srv/internal/path")

    app.include_router(probe)
    with TestClient(app, raise_server_exceptions=False, headers=bearer(service)) as c:
        message = assert_error(c.get("/probe/state"), 409, "bad_state")
        assert "copilot ingest" in message
        response = c.get("/probe/crash")
    assert response.json() == {
        "error": {"code": "internal", "message": "internal error; see the server log"}
    }
    assert response.status_code == 500
    assert "secret detail" not in response.text
    assert "secret detail" in caplog.text  # the traceback is in the server log


def test_unknown_adapter_is_404_naming_it(client: TestClient) -> None:
    # The registry is consulted before any model loads, so this stays cheap.
    response = client.post(
        "/v1/objections/handle", json={"text": "Too expensive.", "adapter": "no-such-adapter"}
    )
    message = assert_error(response, 404, "not_found")
    assert "no-such-adapter" in message


def test_stored_call_is_listed_and_readable(client: TestClient, service: CopilotService) -> None:
    store_call(service)
    listed = client.get("/v1/calls").json()
    assert listed == [
        {
            "call_id": "call-a",
            "outcome": "won",
            "account_id": "acct-1",
            "rep_id": None,
            "deal_id": None,
            "date": None,
            "duration_s": 9.5,
            "source_kind": "transcript",
            "language": None,
        }
    ]
    call = client.get("/v1/calls/call-a").json()
    assert call["turns"] == [
        {"speaker": "rep", "start": 0.0, "end": 4.0, "text": "Thanks for your time."},
        {"speaker": "customer", "start": 4.0, "end": 9.5, "text": "It is too expensive."},
    ]
    assert "source" not in call  # a server path is not the client's business
    assert client.get("/healthz").json() == {"status": "ok", "calls": 1}


@pytest.mark.parametrize(
    ("client_name", "shown", "stored_name"),
    [
        ("../../etc/passwd.txt", "passwd.txt", "passwd.txt"),
        ("C:\\Users\\rep\\Desktop\\call 01.WAV", "call 01.WAV", "call_01.wav"),
        ("", "upload", "upload"),
        (".hidden", ".hidden", "hidden"),
        ("华信医疗 续约/../通话.mp3", "通话.mp3", "通话.mp3"),
        ("华信医疗 续约.mp3", "华信医疗 续约.mp3", "华信医疗_续约.mp3"),
    ],
)
def test_upload_names_never_follow_the_client_path(
    client_name: str, shown: str, stored_name: str
) -> None:
    display, relative = upload_names(client_name)
    folder, name = relative.split("/")
    assert display == shown
    assert name == stored_name
    assert len(folder) == 32 and folder.isalnum()


# --- slow: these load the embedder, the generator or whisper ---------------------
# One service for the whole group: the generator's first load (GGUF dequantisation)
# is cached under the data dir, so sharing it saves most of the group's time.


@pytest.fixture(scope="module")
def slow_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(data_dir=tmp_path_factory.mktemp("slow") / "data")


@pytest.fixture(scope="module")
def slow_client(slow_settings: Settings):
    service = CopilotService(slow_settings)
    app = create_app(service, with_ui=False)
    # The lifespan (entered by ``with``) starts the worker that ingests uploads.
    with TestClient(app, raise_server_exceptions=False, headers=bearer(service)) as c:
        yield c


def upload_and_wait(client: TestClient, **kwargs) -> dict:
    """POST /v1/calls (202), then poll its job until it has finished."""
    response = client.post("/v1/calls", **kwargs)
    assert response.status_code == 202, response.text
    url = response.json()["status_url"]
    for _ in range(1200):  # bounded, so a stuck worker fails the test
        job = client.get(url).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"upload job {url} did not finish: {job}")


@pytest.fixture(scope="module")
def ingested(slow_client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    transcript = tmp_path_factory.mktemp("inputs") / "northwind-renewal.txt"
    transcript.write_text(SAMPLE_TRANSCRIPT, encoding="utf-8")
    with transcript.open("rb") as fh:
        job = upload_and_wait(
            slow_client,
            files={"file": (transcript.name, fh, "text/plain")},
            data={"outcome": "won", "account_id": "acct-northwind"},
        )
    assert job["status"] == "done", job
    assert (job["stored"], job["unchanged"], job["failed"]) == (["northwind-renewal"], [], [])
    return job["stored"][0]


@pytest.mark.slow
def test_uploaded_transcript_shows_its_turns(slow_client: TestClient, ingested: str) -> None:
    call = slow_client.get(f"/v1/calls/{ingested}").json()
    assert call["call_id"] == ingested
    assert call["outcome"] == "won"
    assert call["account_id"] == "acct-northwind"
    assert call["source_kind"] == "transcript"
    speakers = [t["speaker"] for t in call["turns"]]
    assert speakers == ["rep", "customer", "rep", "customer", "rep"]
    assert "expensive" in call["turns"][1]["text"]
    assert all(t["end"] >= t["start"] for t in call["turns"])

    listed = slow_client.get("/v1/calls").json()
    assert ingested in [c["call_id"] for c in listed]
    assert slow_client.get("/healthz").json()["calls"] >= 1


@pytest.mark.slow
def test_reupload_is_unchanged(slow_client: TestClient, ingested: str) -> None:
    job = upload_and_wait(
        slow_client,
        files={"file": ("northwind-renewal.txt", SAMPLE_TRANSCRIPT.encode(), "text/plain")},
        data={"outcome": "won", "account_id": "acct-northwind"},
    )
    assert (job["status"], job["stored"], job["unchanged"]) == ("done", [], [ingested])


@pytest.mark.slow
def test_answer_cites_stored_calls(slow_client: TestClient, ingested: str) -> None:
    response = slow_client.post(
        "/v1/objections/handle", json={"text": "Your price is too expensive for us."}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["adapter"] == "base"
    assert body["citations"], "the stored won call should be cited"
    for citation in body["citations"]:
        assert citation["call_id"] == ingested
        assert citation["end"] >= citation["start"]
        assert citation["text"].strip()
    assert body["reply"].strip(), "an empty suggestion is no help to a rep"


@pytest.mark.slow
def test_chat_answers_with_citations(slow_client: TestClient, ingested: str) -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "The customer says our premium is too expensive."},
        ]
    }
    response = slow_client.post("/v1/chat", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["reply"].strip()
    assert answer["citations"]
    assert {c["call_id"] for c in answer["citations"]} == {ingested}


@pytest.mark.slow
def test_text_file_named_wav_is_refused(slow_client: TestClient, slow_settings: Settings) -> None:
    files = {"file": ("call-07.wav", b"Rep: hello\nCustomer: hi\n", "audio/wav")}
    job = upload_and_wait(slow_client, files=files)
    assert job["status"] == "failed"
    message = job["error"]
    assert message.startswith("call-07.wav: ")
    assert str(slow_settings.uploads_dir) not in message  # the server path stays private
    assert not list(slow_settings.uploads_dir.rglob("call-07*"))
    assert "call-07" not in [c["call_id"] for c in slow_client.get("/v1/calls").json()]
