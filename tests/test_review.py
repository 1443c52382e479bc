"""``midefend review``: trial sampling, the Wilson interval, the review file, the verdict, the server's privacy."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from pathlib import Path

import pytest

from midefend.errors import ConfigError, DataError
from midefend.review.stats import wilson_interval
from midefend.review.store import ReviewFile, load_review, review_path, save_review
from midefend.review.trials import Trial, draw_trials
from midefend.review.verdict import NOT_RECORDED, human_verdict
from tests.reliability_fixtures import assert_cli_error, invoke
from tests.review_fixtures import CLASSES, FACENET_PRED, LABELS, make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("review"))


@pytest.fixture
def fresh_run(tmp_path) -> Path:
    return make_run(tmp_path)


class TestTrials:
    LABELS = [c for c in range(6) for _ in range(3)]  # 6 classes x 3 reconstructions

    def test_seeded(self):
        a = draw_trials({"ppa": self.LABELS}, classes=range(6), k=4, max_trials=10, seed=3)
        assert a == draw_trials({"ppa": self.LABELS}, classes=range(6), k=4, max_trials=10, seed=3)
        assert a != draw_trials({"ppa": self.LABELS}, classes=range(6), k=4, max_trials=10, seed=4)

    @pytest.mark.parametrize("max_trials", [4, 6, 9, 18, 50])
    def test_balanced_and_true_identity_among_k(self, max_trials):
        trials = draw_trials({"ppa": self.LABELS}, classes=range(6), k=4, max_trials=max_trials, seed=0)
        assert len(trials) == min(max_trials, len(self.LABELS))
        counts = Counter(t.label for t in trials)
        assert max(counts.values()) - min(counts.get(c, 0) for c in range(6)) <= 1  # evenly over the classes
        assert len({t.index for t in trials}) == len(trials)  # a reconstruction at most once
        for t in trials:
            assert self.LABELS[t.index] == t.label
            assert t.label in t.candidates and len(set(t.candidates)) == 4
        slots = Counter(t.candidates.index(t.label) for t in draw_trials({"ppa": self.LABELS * 20}, classes=range(6), k=4, max_trials=400, seed=1))
        assert min(slots.values()) > 60  # the true identity is not always in the same slot

    def test_ids_are_opaque_and_unique(self):
        trials = draw_trials({"a": self.LABELS, "b": self.LABELS}, classes=range(6), k=3, max_trials=18, seed=0)
        assert len({t.id for t in trials}) == len(trials) == 36
        assert all(len(t.id) == 12 and int(t.id, 16) >= 0 for t in trials)

    def test_errors(self):
        with pytest.raises(ConfigError, match="need at least 4 classes with private images; this run has 3"):
            draw_trials({"ppa": [0, 1, 2]}, classes=range(3), k=4)
        with pytest.raises(ConfigError, match=r"k \(candidates per trial\) must be an integer >= 2, got 1"):
            draw_trials({"ppa": [0, 1]}, classes=range(3), k=1)
        with pytest.raises(ConfigError, match="reconstructed class 9, which has no private training images"):
            draw_trials({"ppa": [9]}, classes=range(5), k=2)


class TestWilson:
    # Reference values: scipy.stats.binomtest(k, n).proportion_ci(method="wilson") (scipy 1.17).
    REFERENCE = {(6, 10): (0.3126737697336583, 0.8318196702937639), (3, 5): (0.23072428127601297, 0.8823792257673521),
                 (9, 15): (0.35746830120624595, 0.8017550385865843), (7, 10): (0.39677814746114526, 0.892208732593699)}

    @pytest.mark.parametrize("k,n", list(REFERENCE))
    def test_against_reference(self, k, n):
        assert wilson_interval(k, n) == pytest.approx(self.REFERENCE[(k, n)], abs=1e-12)

    def test_against_scipy(self):
        stats = pytest.importorskip("scipy.stats")
        for k, n in [(0, 7), (7, 7), (1, 40), (13, 40)]:
            ci = stats.binomtest(k, n).proportion_ci(method="wilson")
            assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)

    def test_edges(self):
        assert wilson_interval(0, 0) == (0.0, 1.0)
        with pytest.raises(ValueError, match="need 0 <= successes <= trials"):
            wilson_interval(3, 2)


def _review(path: Path, reviewer: str | None, answers: dict[int, int | None]) -> ReviewFile:
    """A review of the synthetic run's 10 reconstructions in index order; ``answers``: trial -> slot."""
    trials = [Trial(f"{reviewer or 'x'}{i:011x}"[-12:], "ppa", i, LABELS[i], tuple(sorted({LABELS[i], *range(4)} - {4} if LABELS[i] != 4 else {0, 1, 2, 4}))) for i in range(10)]
    review = ReviewFile(path, reviewer, 0, 4, 3, ["ppa"], trials)
    for i, slot in answers.items():
        review.answer(trials[i].id, slot)
    return review


class TestVerdict:
    def test_two_reviewers_merge_and_agreement(self, fresh_run):
        truth = lambda i: _review(Path("x"), None, {}).trials[i].candidates.index(LABELS[i])  # noqa: E731
        wrong = lambda i: (truth(i) + 1) % 4  # noqa: E731
        # ana: right on 0-5, wrong on 6-7, "none" on 8-9 -> 6 of 10
        ana = _review(review_path(fresh_run, "ana"), "ana", {**{i: truth(i) for i in range(6)}, 6: wrong(6), 7: wrong(7), 8: None, 9: None})
        # bo: right on 0-2, wrong on 3-4 -> 3 of 5
        bo = _review(review_path(fresh_run, "bo"), "bo", {**{i: truth(i) for i in range(3)}, 3: wrong(3), 4: wrong(4)})
        save_review(ana)
        save_review(bo)
        verdict = human_verdict(fresh_run)
        row = verdict["attacks"]["ppa"]
        assert verdict["reviewers"] == ["ana", "bo"]
        assert (row["n"], row["correct"], row["accuracy"], row["chance"]) == (15, 9, 0.6, 0.25)
        assert row["ci95"] == pytest.approx(TestWilson.REFERENCE[(9, 15)], abs=1e-12)
        assert row["above_chance"] is True and row["none_of_these"] == 2
        assert row["by_reviewer"]["ana"]["accuracy"] == 0.6 and row["by_reviewer"]["bo"]["accuracy"] == 0.6
        assert row["by_reviewer"]["bo"]["ci95"] == pytest.approx(TestWilson.REFERENCE[(3, 5)], abs=1e-12)
        # the evaluation model is always right: it agrees where the person is right (9 of 15); 6 hits unconfirmed
        ev = row["judges"]["eval"]
        assert (ev["n"], ev["agreement"], ev["judge_hits"], ev["judge_hits_not_confirmed"]) == (15, 9 / 15, 15, 6)
        # facenet is right on even reconstructions: ana 0..9 and bo 0..4, person right on ana 0-5 and bo 0-2
        person = [i < 6 for i in range(10)] + [i < 3 for i in range(5)]
        idx = list(range(10)) + list(range(5))
        hits = [FACENET_PRED[i] == LABELS[i] for i in idx]
        assert hits == [i % 2 == 0 for i in idx]
        fn = row["judges"]["facenet"]
        assert fn["agreement"] == pytest.approx(sum(h == p for h, p in zip(hits, person)) / 15)  # 8/15
        assert fn["agreement"] == pytest.approx(8 / 15)
        assert fn["judge_hits_not_confirmed"] == sum(h and not p for h, p in zip(hits, person)) == 3

    def test_without_per_image_verdicts(self, tmp_path):
        run = make_run(tmp_path, per_image=False)
        save_review(_review(review_path(run), None, {0: 0}))
        assert human_verdict(run)["attacks"]["ppa"]["judges"] == {"note": NOT_RECORDED}

    def test_no_answers_no_verdict(self, fresh_run):
        assert human_verdict(fresh_run) is None
        save_review(_review(review_path(fresh_run), None, {}))
        assert human_verdict(fresh_run) is None


class TestStore:
    def test_damaged_file_one_line_error_and_unchanged(self, fresh_run):
        path = review_path(fresh_run)
        path.parent.mkdir()
        for damage in (b'{"format": "midefend-human-review", "version": 1, "trials": [', b"\x00\xff", b'{"format": "midefend-human-review", "version": 1}'):
            path.write_bytes(damage)
            with pytest.raises(DataError, match="is damaged .*it was left unchanged"):
                load_review(path)
            result = invoke("review", str(fresh_run), "--no-browser")
            assert_cli_error(result, "review file .* is damaged .*")
            result = invoke("review", str(fresh_run), "--summary")
            assert_cli_error(result, "review file .* is damaged .*")
            assert path.read_bytes() == damage

    def test_reviewer_name_is_checked(self, fresh_run):
        with pytest.raises(DataError, match="reviewer name '../x' must be"):
            review_path(fresh_run, "../x")
        assert_cli_error(invoke("review", str(fresh_run), "--reviewer", "a/b", "--summary"), "reviewer name 'a/b' must be .*")


@pytest.fixture
def server(run):
    from midefend.review.server import make_server
    from midefend.review.session import ReviewOptions, open_review

    srv = make_server(open_review(run, ReviewOptions(trials=10, reviewer="srv")), port=0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _get(srv, path: str, host: str | None = None, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host or f"127.0.0.1:{srv.port}")
    for key, value in (headers or {}).items():
        conn.putheader(key, value)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


class TestServer:
    def test_binds_loopback_only(self, server):
        assert server.server_address[0] == "127.0.0.1"
        assert server.url.startswith(f"http://127.0.0.1:{server.port}/")

    def test_page_and_api(self, server):
        key = server.key
        status, page = _get(server, f"/{key}/")
        assert status == 200 and b"private training images" in page
        assert _get(server, f"/{key}/app.js")[0] == 200 and _get(server, f"/{key}/app.css")[0] == 200
        state = json.loads(_get(server, f"/{key}/api/state")[1])
        assert state["total"] == 10 and state["k"] == 4

    @pytest.mark.parametrize("path", [
        "/report.json", "/{key}/report.json", "/{key}/../report.json", "/{key}/%2e%2e/report.json", "/{key}/img/../../report.json",
        "/{key}/img/..%2F..%2Freport.json", "/{key}/static/app.js", "/{key}/attacks/ppa/class_00000.safetensors",
        "/{key}/../../data/c0/0.png", "//etc/passwd", "/{key}/api/trial/99", "/{key}/api/trial/-1", "/wrongkey/api/state",
    ])  # fmt: skip
    def test_refuses_paths_outside_the_api(self, server, path):
        status, body = _get(server, path.format(key=server.key))
        assert status in (403, 404)
        assert b"target" not in body and b"PNG" not in body and b"safetensors" not in body

    def test_refuses_foreign_host(self, server):
        assert _get(server, f"/{server.key}/api/state", host="evil.example:80")[0] == 403

    def test_no_answer_leak(self, server, run):
        review = server.session.review
        seen_tokens: set[str] = set()
        for n in range(len(review.trials)):
            status, body = _get(server, f"/{server.key}/api/trial/{n}")
            payload = json.loads(body)
            assert set(payload) == {"id", "number", "total", "reconstruction", "candidates", "answer"}
            assert [c["slot"] for c in payload["candidates"]] == [0, 1, 2, 3]
            urls = [payload["reconstruction"], *(u for c in payload["candidates"] for u in c["images"])]
            assert all(u.startswith("img/") and len(u) == 20 for u in urls)
            assert not seen_tokens & set(urls)  # a class's images get new tokens in every trial
            seen_tokens |= set(urls)
            text = body.decode()
            for word in ("label", "class", "correct", "true", '"c0"', "attack", "ppa"):
                assert word not in text
        trial = review.trials[0]
        body = json.dumps({"id": trial.id, "slot": 0}).encode()
        status, reply = _get(server, f"/{server.key}/api/answer", method="POST", body=body, headers={"Content-Type": "application/json"})
        assert status == 200 and b"correct" not in reply and b"label" not in reply
        assert load_review(review.path).answers[trial.id].slot == 0
        status, _ = _get(server, f"/{server.key}/api/answer", method="POST", body=body, headers={"Content-Type": "text/plain"})
        assert status == 400


class TestExportImport:
    def test_export_has_no_classes_and_import_adds_answers(self, fresh_run, tmp_path):
        page = tmp_path / "page.html"
        result = invoke("review", str(fresh_run), "--export", str(page), "--trials", "6", "--reviewer", "mail")
        assert result.exit_code == 0, result.output
        html = page.read_text()
        assert html.count("data:image/png;base64,") == 6 * (1 + 4 * 3)
        assert 'src="app.js"' not in html and "http://" not in html and "https://" not in html
        review = load_review(review_path(fresh_run, "mail"))
        blob = json.loads(html.split("window.MIDEFEND_REVIEW = ", 1)[1].split(";</script>", 1)[0])
        assert set(blob["trials"][0]) == {"id", "reconstruction", "candidates"}
        first = review.trials[0]
        answers = {"format": "midefend-review-answers", "version": 1, "review": blob["review"],
                   "answers": {first.id: first.candidates.index(first.label), review.trials[1].id: None}}
        (tmp_path / "a.json").write_text(json.dumps(answers))
        result = invoke("review", str(fresh_run), "--import", str(tmp_path / "a.json"), "--reviewer", "mail")
        assert result.exit_code == 0, result.output
        stored = load_review(review_path(fresh_run, "mail"))
        assert stored.answers[first.id].correct and stored.answers[review.trials[1].id].slot is None
        assert json.loads((fresh_run / "report.json").read_text())["human"]["attacks"]["ppa"]["n"] == 2
        assert "## Human verdict" in (fresh_run / "report.md").read_text()
        answers["review"] = "other-3"
        (tmp_path / "b.json").write_text(json.dumps(answers))
        assert_cli_error(invoke("review", str(fresh_run), "--import", str(tmp_path / "b.json"), "--reviewer", "mail"), "answers .* belong to another trial list .*")


def test_classes_fixture_matches():
    assert len(LABELS) == 10 and CLASSES == 5


class TestReportHooks:
    def test_verify_report_writer_and_compare_show_the_human_verdict(self, fresh_run, tmp_path):
        import shutil

        from midefend.evaluation.reports import write_report
        from midefend.review.report_hook import attach_human

        report = json.loads((fresh_run / "report.json").read_text())
        write_report(fresh_run, attach_human(fresh_run, report))  # what verify does before it writes
        assert "human" not in json.loads((fresh_run / "report.json").read_text())  # nobody reviewed yet
        trial_slot = lambda i: _review(Path("x"), None, {}).trials[i].candidates.index(LABELS[i])  # noqa: E731
        save_review(_review(review_path(fresh_run), None, {0: trial_slot(0), 1: None}))
        write_report(fresh_run, attach_human(fresh_run, report))
        written = json.loads((fresh_run / "report.json").read_text())
        assert written["human"]["attacks"]["ppa"]["n"] == 2 and written["human"]["attacks"]["ppa"]["correct"] == 1
        md = (fresh_run / "report.md").read_text()
        assert "## Human verdict" in md and "| ppa | 2 | 50.0 |" in md and "eval: judge accuracy 100.0 %" in md
        other = tmp_path / "other"
        shutil.copytree(fresh_run, other)
        shutil.rmtree(other / "review")
        result = invoke("compare", str(fresh_run), str(other), "--out", str(tmp_path / "cmp"))
        assert result.exit_code == 0, result.output
        rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
        assert rows[0]["human"].startswith("ppa: 50.0 % (95 % CI 9.5–90.5, n=2, chance 25.0 %)") and "human" not in rows[1]
        assert "human verdict ppa: 50.0 %" in result.stdout

    def test_summary_command(self, fresh_run):
        assert "no answers yet" in invoke("review", str(fresh_run), "--summary").stdout
        save_review(_review(review_path(fresh_run, "ana"), "ana", {0: None}))
        out = invoke("review", str(fresh_run), "--summary").stdout
        assert "## Human verdict" in out and "Reviewers: ana" in out and "| ppa | 1 | 0.0 |" in out
