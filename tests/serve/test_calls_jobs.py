"""Call uploads as background jobs, and which keys see which calls and jobs.

The cheap tests build the app without entering its lifespan, so the upload worker never
starts and every job stays queued: what is asserted is the job table and the access
rules, never a model. The slow group runs the worker and a real ingest.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import gradio as gr
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from copilot.context import Account
from copilot.schemas import CallRecord, Turn
from copilot.settings import ServeSettings, Settings, load_settings
from serve.api.app import create_app
from serve.jobs import MAX_ATTEMPTS, CallJobs, UploadJob, UploadJobRow
from serve.service import CopilotService
from serve.ui.calls import export_calls_csv, job_line, poll_upload, start_upload
from tests.serve.conftest import bearer
from tests.serve.test_api import assert_error

CHINESE_TRANSCRIPT = """\
Rep: 您好，我是华信医疗的王磊，感谢您今天抽时间。
Customer: 说实话，你们的报价比我们现在的供应商贵了不少。
Rep: 理解。我们的方案包含三年上门维护，总成本其实更低。
Customer: 好的，那请把报价单发给我，我们这周可以签。
"""


def add_accounts(service: CopilotService) -> None:
    """Two accounts of two teams, one named in Chinese."""
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    service.accounts.store.upsert(
        [
            Account(time=t0, account_id="acct-central", name="Northwind", team="Central"),
            Account(time=t0, account_id="acct-east", name="华信医疗", team="East"),
        ]
    )


def save_call(service: CopilotService, call_id: str, account_id: str | None) -> None:
    record = CallRecord(
        call_id=call_id,
        turns=[Turn("customer", 0.0, 3.0, "价格太高了。")],
        source=f"/tmp/{call_id}.txt",
        source_kind="transcript",
        content_hash=f"hash-{call_id}",
        account_id=account_id,
    )
    service.store.save_calls([record], input_hash=f"input-{call_id}", input_path=record.source)


def app_client(service: CopilotService) -> TestClient:
    """A client without the lifespan: the upload worker is not running."""
    return TestClient(create_app(service, with_ui=False), raise_server_exceptions=False)


def upload(client: TestClient, headers: dict, account_id: str | None = None, name="call.txt"):
    data = {"outcome": "won"} | ({"account_id": account_id} if account_id else {})
    files = {"file": (name, CHINESE_TRANSCRIPT.encode(), "text/plain")}
    return client.post("/v1/calls", files=files, data=data, headers=headers)


def stored_uploads(settings: Settings) -> list[Path]:
    return [p for p in settings.uploads_dir.rglob("*") if p.is_file()]


# --- the job --------------------------------------------------------------------------


def test_upload_answers_202_with_a_job_to_poll(service: CopilotService, settings: Settings) -> None:
    add_accounts(service)
    client = app_client(service)
    headers = bearer(service, "rep", team="Central")

    response = upload(client, headers, "acct-central", name="华信 renewal.txt")
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"job_id", "status", "status_url"}
    assert body["status"] == "queued"
    assert body["status_url"] == f"/v1/calls/jobs/{body['job_id']}"
    assert response.headers["location"] == body["status_url"]

    job = client.get(body["status_url"], headers=headers).json()
    assert job["job_id"] == body["job_id"]
    assert job["status"] == "queued"
    assert job["input"] == "华信 renewal.txt"
    assert (job["account_id"], job["outcome"]) == ("acct-central", "won")
    assert (job["stored"], job["unchanged"], job["failed"], job["error"]) == ([], [], [], None)
    assert job["created_at"].startswith(str(datetime.now(UTC).year))
    assert job["started_at"] is None and job["finished_at"] is None

    [kept] = stored_uploads(settings)
    assert kept.read_text(encoding="utf-8") == CHINESE_TRANSCRIPT
    assert kept.name == "华信_renewal.txt"  # the space made safe, the Chinese kept, own folder


def test_full_queue_is_429_with_retry_after(settings: Settings) -> None:
    serve = ServeSettings(**{**settings.serve.model_dump(), "max_queued_uploads": 2})
    service = CopilotService(settings.model_copy(update={"serve": serve}))
    client = app_client(service)
    headers = bearer(service, "admin")

    assert [upload(client, headers).status_code for _ in range(2)] == [202, 202]
    response = upload(client, headers)
    message = assert_error(response, 429, "too_many_requests")
    assert "serve.max_queued_uploads" in message
    assert response.headers["retry-after"] == "30"
    assert len(stored_uploads(settings)) == 2  # the refused upload left nothing behind


def test_unknown_job_is_404(client: TestClient) -> None:
    message = assert_error(client.get("/v1/calls/jobs/no-such-job"), 404, "not_found")
    assert "no-such-job" in message and "POST /v1/calls" in message


def test_job_whose_file_is_gone_fails_with_the_reason(service: CopilotService) -> None:
    jobs = CallJobs(service)
    path = service.settings.uploads_dir / "abc" / "call.txt"
    path.parent.mkdir(parents=True)
    path.write_text(CHINESE_TRANSCRIPT, encoding="utf-8")
    job = jobs.submit(path, "通话.txt")
    path.unlink()

    finished = jobs.run_job(jobs.get(job.job_id))
    assert finished.status == "failed"
    assert finished.error == (
        "通话.txt: the stored upload is gone from the server; upload the file again"
    )
    assert jobs.get(job.job_id).finished_at is not None


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_jobs_of_a_dead_process_are_queued_again_then_failed(service: CopilotService) -> None:
    jobs = CallJobs(service)
    path = service.settings.uploads_dir / "abc" / "call.txt"
    first = jobs.submit(path, "call.txt")
    second = jobs.submit(path, "again.txt")
    elsewhere = jobs.submit(path, "elsewhere.txt")
    dead = _dead_pid()
    here = socket.gethostname()
    with jobs.engine.begin() as conn:
        for job, attempts, host in [
            (first, 1, here),
            (second, MAX_ATTEMPTS, here),
            (elsewhere, 1, "another-host"),  # its process cannot be checked from here
        ]:
            conn.execute(
                update(UploadJobRow)
                .where(UploadJobRow.job_id == job.job_id)
                .values(status="running", attempts=attempts, pid=dead, host=host)
            )

    recovered = {j.job_id: j for j in jobs.recover()}
    assert set(recovered) == {first.job_id, second.job_id}  # another host's job is left alone
    assert jobs.get(first.job_id).status == "queued"
    failed = jobs.get(second.job_id)
    assert failed.status == "failed"
    assert failed.error.startswith("again.txt: the server stopped 2 times")
    assert jobs.get(elsewhere.job_id).status == "running"


# --- who sees which calls -------------------------------------------------------------


@pytest.fixture
def team_service(service: CopilotService) -> CopilotService:
    add_accounts(service)
    save_call(service, "call-central", "acct-central")
    save_call(service, "call-east", "acct-east")
    save_call(service, "call-orphan", None)
    return service


@pytest.mark.parametrize(
    ("role", "team", "visible"),
    [
        ("rep", "Central", ["call-central"]),
        ("manager", "East", ["call-east"]),
        ("manager", None, ["call-central", "call-east", "call-orphan"]),
        ("admin", None, ["call-central", "call-east", "call-orphan"]),
    ],
)
def test_list_and_read_keep_to_the_team(
    team_service: CopilotService, role: str, team: str | None, visible: list[str]
) -> None:
    client = app_client(team_service)
    headers = bearer(team_service, role, team=team)

    listed = client.get("/v1/calls", headers=headers).json()
    assert [c["call_id"] for c in listed] == visible
    for call_id in ["call-central", "call-east", "call-orphan"]:
        response = client.get(f"/v1/calls/{call_id}", headers=headers)
        if call_id in visible:
            assert response.json()["turns"][0]["text"] == "价格太高了。"
        else:
            # Exactly what a missing call answers, so a key cannot probe for call ids.
            message = assert_error(response, 404, "not_found")
            missing = client.get("/v1/calls/no-such-call", headers=headers).json()
            assert message == missing["error"]["message"].replace("no-such-call", call_id)


def test_calls_routes_need_a_key(team_service: CopilotService) -> None:
    client = app_client(team_service)
    assert_error(client.get("/v1/calls"), 401, "unauthorized")
    assert_error(client.get("/v1/calls/call-central"), 401, "unauthorized")
    assert_error(client.get("/v1/calls/jobs/x"), 401, "unauthorized")
    assert_error(upload(client, {}), 401, "unauthorized")


@pytest.mark.parametrize(
    ("account_id", "expected"),
    [
        ("acct-east", "account 'acct-east' is not one of team 'Central''s accounts"),
        ("acct-nowhere", "account 'acct-nowhere' is not one of team 'Central''s accounts"),
        (None, "must say whose call this is: pass account_id"),
    ],
)
def test_rep_uploads_only_for_accounts_of_their_team(
    team_service: CopilotService, settings: Settings, account_id: str | None, expected: str
) -> None:
    client = app_client(team_service)
    headers = bearer(team_service, "rep", team="Central")
    message = assert_error(upload(client, headers, account_id), 403, "forbidden")
    assert expected in message
    assert stored_uploads(settings) == []
    assert upload(client, headers, "acct-central").status_code == 202


def test_all_teams_keys_upload_for_any_account_or_none(team_service: CopilotService) -> None:
    client = app_client(team_service)
    for role in ("admin", "manager"):
        headers = bearer(team_service, role)
        for account_id in ("acct-east", "acct-nowhere", None):
            assert upload(client, headers, account_id).status_code == 202


def test_jobs_are_seen_by_their_key_and_the_team_managers(team_service: CopilotService) -> None:
    client = app_client(team_service)
    owner = bearer(team_service, "rep", team="Central")
    url = upload(client, owner, "acct-central").json()["status_url"]

    seen = {
        "owner": owner,
        "central manager": bearer(team_service, "manager", team="Central"),
        "all-teams manager": bearer(team_service, "manager"),
        "admin": bearer(team_service, "admin"),
    }
    hidden = {
        "central rep": bearer(team_service, "rep", team="Central"),
        "east rep": bearer(team_service, "rep", team="East"),
        "east manager": bearer(team_service, "manager", team="East"),
    }
    for who, headers in seen.items():
        assert client.get(url, headers=headers).status_code == 200, who
    job_id = url.rsplit("/", 1)[1]
    for who, headers in hidden.items():
        message = assert_error(client.get(url, headers=headers), 404, "not_found")
        assert message.startswith(f"no upload job '{job_id}'"), who


def test_a_job_without_an_account_is_for_all_teams_managers(team_service: CopilotService) -> None:
    client = app_client(team_service)
    url = upload(client, bearer(team_service, "admin")).json()["status_url"]
    assert client.get(url, headers=bearer(team_service, "manager")).status_code == 200
    team_manager = bearer(team_service, "manager", team="Central")
    assert_error(client.get(url, headers=team_manager), 404, "not_found")


# --- slow: the worker runs a real ingest (loads the embedder) ---------------------------


def wait_for_job(client: TestClient, url: str, headers: dict) -> dict:
    """Poll until the job has finished (bounded, so a stuck worker fails the test)."""
    for _ in range(1200):
        body = client.get(url, headers=headers).json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {url} did not finish: {body}")


@pytest.fixture(scope="module")
def worker_service(tmp_path_factory: pytest.TempPathFactory) -> CopilotService:
    service = CopilotService(load_settings(data_dir=tmp_path_factory.mktemp("jobs") / "data"))
    add_accounts(service)
    return service


@pytest.mark.slow
def test_worker_ingests_an_upload_and_a_reupload_is_unchanged(
    worker_service: CopilotService,
) -> None:
    headers = bearer(worker_service, "rep", team="East")
    with TestClient(create_app(worker_service, with_ui=False)) as client:
        url = upload(client, headers, "acct-east", name="east-renewal.txt").json()["status_url"]
        job = wait_for_job(client, url, headers)
        assert job["status"] == "done", job
        assert (job["stored"], job["unchanged"], job["failed"]) == (["east-renewal"], [], [])
        assert job["started_at"] <= job["finished_at"]

        call = client.get("/v1/calls/east-renewal", headers=headers).json()
        assert call["account_id"] == "acct-east"
        assert "贵了不少" in call["turns"][1]["text"]
        central = bearer(worker_service, "rep", team="Central")
        assert_error(client.get("/v1/calls/east-renewal", headers=central), 404, "not_found")

        again = upload(client, headers, "acct-east", name="east-renewal.txt").json()
        job = wait_for_job(client, again["status_url"], headers)
        assert (job["status"], job["stored"], job["unchanged"]) == ("done", [], ["east-renewal"])


@pytest.mark.slow
def test_worker_reports_a_bad_input_by_its_name(worker_service: CopilotService) -> None:
    headers = bearer(worker_service, "admin")
    files = {"file": ("call-07.wav", b"Rep: hello\nCustomer: hi\n", "audio/wav")}
    with TestClient(create_app(worker_service, with_ui=False)) as client:
        url = client.post("/v1/calls", files=files, headers=headers).json()["status_url"]
        job = wait_for_job(client, url, headers)
    assert job["status"] == "failed"
    assert job["error"].startswith("call-07.wav: ")
    assert str(worker_service.settings.uploads_dir) not in job["error"]
    assert job["failed"][0]["input"] == "call-07.wav"
    assert not list(worker_service.settings.uploads_dir.rglob("call-07*"))


# --- the UI's upload --------------------------------------------------------------------


def test_ui_upload_queues_the_same_job_and_polls_it(
    team_service: CopilotService, tmp_path: Path
) -> None:
    source = tmp_path / "华信 通话.txt"
    source.write_text(CHINESE_TRANSCRIPT, encoding="utf-8")

    job_id, line, timer = start_upload(team_service, str(source), " won ", " acct-east ")
    assert line == "**queued** · 华信 通话.txt · next"
    assert timer.active is True
    job = team_service.call_jobs.get(job_id)
    assert (job.account_id, job.team, job.outcome, job.key_id) == ("acct-east", "East", "won", None)
    assert Path(job.path).read_text(encoding="utf-8") == CHINESE_TRANSCRIPT

    line, timer, picker, rows = poll_upload(team_service, job_id)
    assert (line, timer.active) == ("**queued** · 华信 通话.txt · next", True)
    assert picker == gr.skip() and rows == gr.skip()  # the table is left alone until it ends

    Path(job.path).unlink()  # the worker then fails the job, as it would for a lost file
    team_service.call_jobs.run_job(job)
    line, timer, picker, rows = poll_upload(team_service, job_id)
    assert line == (
        "**failed** · 华信 通话.txt: the stored upload is gone from the server; "
        "upload the file again"
    )
    assert timer.active is False
    assert [row[0] for row in rows] == ["call-central", "call-east", "call-orphan"]


def test_ui_upload_refusals_are_messages(service: CopilotService, tmp_path: Path) -> None:
    with pytest.raises(gr.Error, match="Pick a recording or a transcript"):
        start_upload(service, None, "", "")
    setup = tmp_path / "setup.exe"
    setup.write_bytes(b"MZ")
    with pytest.raises(gr.Error, match=r"'setup.exe' has suffix '.exe'; upload audio"):
        start_upload(service, str(setup), "", "")
    assert stored_uploads(service.settings) == []


def test_job_line_for_a_finished_job(service: CopilotService) -> None:
    job = UploadJob(
        job_id="j1",
        status="done",
        input_name="call_1.txt",
        outcome=None,
        account_id=None,
        team=None,
        key_id=None,
        created_at="2026-01-01T00:00:00.000+00:00",
        stored=["call_1"],
        unchanged=["call_0"],
    )
    assert (
        job_line(service, job) == r"**done** · call\_1.txt · stored: call\_1 · unchanged: call\_0"
    )


def test_calls_csv_export_neutralises_formula_cells(service: CopilotService) -> None:
    hostile = {
        '=HYPERLINK("http://evil.example","点我")': "+cmd|' /C calc'!A0",
        "@SUM(A1:A9)": "-2+3",
        "\tcall": "\rwon",
        "华信医疗-续约": "赢单",
    }
    for call_id, outcome in hostile.items():
        record = CallRecord(
            call_id=call_id,
            turns=[Turn("customer", 0.0, 61.0, "太贵了")],
            source="/tmp/x.txt",
            source_kind="transcript",
            content_hash=f"hash-{call_id}",
            outcome=outcome,
            account_id="=1+1",
            duration_s=61.0,
        )
        service.store.save_calls([record], input_hash=f"in-{call_id}", input_path="/tmp/x.txt")

    path = Path(export_calls_csv(service))
    raw = path.read_bytes()
    path.unlink()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    with io.StringIO(raw.decode("utf-8-sig"), newline="") as text:
        rows = list(csv.reader(text))
    assert rows[0] == ["call", "outcome", "account", "duration", "source"]
    assert sorted(rows[1:]) == sorted(
        [
            ["'\tcall", "'\rwon", "'=1+1", "1:01", "transcript"],
            [
                '\'=HYPERLINK("http://evil.example","点我")',
                "'+cmd|' /C calc'!A0",
                "'=1+1",
                "1:01",
                "transcript",
            ],
            ["'@SUM(A1:A9)", "'-2+3", "'=1+1", "1:01", "transcript"],
            ["华信医疗-续约", "赢单", "'=1+1", "1:01", "transcript"],
        ]
    )


# --- an upload never replaces a call it may not ------------------------------------------


def save_won_call(service: CopilotService, call_id: str = "call-text-01") -> None:
    """East's stored call, won, as ingest would have stored it."""
    record = CallRecord(
        call_id=call_id,
        turns=[Turn("customer", 0.0, 3.0, "我们这周签。")],
        source=f"/tmp/{call_id}.txt",
        source_kind="transcript",
        content_hash=f"hash-{call_id}",
        account_id="acct-east",
        outcome="won",
    )
    service.store.save_calls([record], input_hash=f"input-{call_id}", input_path=record.source)


def assert_east_call_intact(service: CopilotService, call_id: str = "call-text-01") -> None:
    call = service.store.get_call(call_id)
    assert (call.account_id, call.outcome) == ("acct-east", "won")
    assert [t.text for t in call.turns] == ["我们这周签。"]


@pytest.mark.parametrize(
    ("role", "team", "account_id"),
    [
        ("rep", "Central", "acct-central"),  # another team's rep, for their own account
        ("manager", None, "acct-central"),  # an all-teams key may not move it either
    ],
)
def test_upload_of_a_call_id_stored_under_another_account_is_409(
    team_service: CopilotService, settings: Settings, role: str, team: str | None, account_id: str
) -> None:
    save_won_call(team_service)
    client = app_client(team_service)

    response = upload(client, bearer(team_service, role, team=team), account_id, "call-text-01.txt")
    message = assert_error(response, 409, "conflict")
    assert "'call-text-01' is already stored under another account" in message
    assert "rename the file" in message
    assert "acct-east" not in message  # another team's account is never named
    assert stored_uploads(settings) == []
    assert_east_call_intact(team_service)
    east = bearer(team_service, "rep", team="East")
    assert client.get("/v1/calls/call-text-01", headers=east).json()["outcome"] == "won"


def test_transcript_naming_its_call_id_cannot_take_another_accounts_call(
    team_service: CopilotService,
) -> None:
    save_won_call(team_service)
    client = app_client(team_service)
    body = {"call_id": "call-text-01", "turns": [{"speaker": "rep", "text": "您好"}]}
    files = {"file": ("innocent.json", json.dumps(body).encode(), "application/json")}
    headers = bearer(team_service, "rep", team="Central")

    response = client.post(
        "/v1/calls", files=files, data={"account_id": "acct-central"}, headers=headers
    )
    assert "'call-text-01' is already stored" in assert_error(response, 409, "conflict")
    assert_east_call_intact(team_service)


def test_job_refuses_a_call_stored_after_its_upload_was_accepted(
    team_service: CopilotService,
) -> None:
    client = app_client(team_service)
    central = bearer(team_service, "rep", team="Central")
    url = upload(client, central, "acct-central", "call-text-01.txt").json()["status_url"]
    save_won_call(team_service)  # East's call lands while the upload waits in the queue

    job = team_service.call_jobs.get(url.rsplit("/", 1)[1])
    finished = team_service.call_jobs.run_job(job)
    assert finished.status == "failed"
    assert finished.error.startswith(
        "call-text-01.txt: a call with id 'call-text-01' is already stored under another account"
    )
    assert not Path(job.path).exists()
    assert_east_call_intact(team_service)


def test_same_account_reupload_must_restate_a_stored_outcome(
    team_service: CopilotService,
) -> None:
    save_won_call(team_service)
    client = app_client(team_service)
    east = bearer(team_service, "rep", team="East")
    files = {"file": ("call-text-01.txt", CHINESE_TRANSCRIPT.encode(), "text/plain")}

    # New content without an outcome would keep "won" on text nobody said was won.
    response = client.post("/v1/calls", files=files, data={"account_id": "acct-east"}, headers=east)
    message = assert_error(response, 409, "conflict")
    assert "call 'call-text-01' is already stored with outcome 'won'" in message
    assert "pass outcome (e.g. outcome=won to keep it)" in message

    assert upload(client, east, "acct-east", "call-text-01.txt").status_code == 202
    assert_east_call_intact(team_service)  # nothing is replaced until the worker runs


@pytest.mark.slow
def test_worker_replaces_a_call_only_for_its_own_account(worker_service: CopilotService) -> None:
    east = bearer(worker_service, "rep", team="East")
    central = bearer(worker_service, "rep", team="Central")
    first = "Rep: 您好，续约的事情我们谈一下。\nCustomer: 好的，我们这周签。\n"
    with TestClient(create_app(worker_service, with_ui=False)) as client:

        def post(text: str, headers: dict, data: dict):
            files = {"file": ("call-text-02.txt", text.encode(), "text/plain")}
            return client.post("/v1/calls", files=files, data=data, headers=headers)

        url = post(first, east, {"account_id": "acct-east", "outcome": "won"}).json()["status_url"]
        assert wait_for_job(client, url, east)["stored"] == ["call-text-02"]

        response = post(CHINESE_TRANSCRIPT, central, {"account_id": "acct-central"})
        assert_error(response, 409, "conflict")
        call = client.get("/v1/calls/call-text-02", headers=east).json()
        assert (call["account_id"], call["outcome"]) == ("acct-east", "won")
        assert call["turns"][1]["text"] == "好的，我们这周签。"

        data = {"account_id": "acct-east", "outcome": "lost"}
        url = post(CHINESE_TRANSCRIPT, east, data).json()["status_url"]
        job = wait_for_job(client, url, east)
        assert (job["status"], job["stored"]) == ("done", ["call-text-02"])
        call = client.get("/v1/calls/call-text-02", headers=east).json()
        assert (call["account_id"], call["outcome"]) == ("acct-east", "lost")
        assert "贵了不少" in call["turns"][1]["text"]
