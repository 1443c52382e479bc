"""``midefend review``: a person judges a verify run's reconstructions in the browser.

    midefend review runs/nodef                      # serve the page on 127.0.0.1, open the browser
    midefend review runs/nodef --reviewer ana --no-browser --port 8765
    midefend review runs/nodef --summary            # the human verdict, no server
    midefend review runs/nodef --export page.html   # one self-contained page to mail
    midefend review runs/nodef --import answers.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import app, console, err_console, handle_errors


def _print_summary(run_dir: Path) -> None:
    from ..evaluation.reports import human_markdown
    from ..review.verdict import human_verdict

    verdict = human_verdict(run_dir)
    if verdict is None:
        console.print(f"no answers yet in {run_dir / 'review'} (run 'midefend review {run_dir}')", highlight=False, soft_wrap=True)
        return
    for line in human_markdown(verdict):
        console.print(line, highlight=False, soft_wrap=True, markup=False)


def _serve(session, port: int, open_browser: bool, run_dir: Path) -> None:  # noqa: ANN001 - a ReviewSession
    import signal
    import webbrowser

    from ..review.report_hook import refresh_report
    from ..review.server import make_server

    server = make_server(session, port=port)
    state = session.state()
    console.print(f"review: {state['answered']} of {state['total']} trials answered; answers go to {session.review.path}", highlight=False, soft_wrap=True)
    console.print(f"open {server.url}  (127.0.0.1 only; Ctrl-C to stop)", highlight=False, soft_wrap=True)
    err_console.print("note: the page shows private training images; keep it on this computer.", highlight=False)
    if open_browser:
        webbrowser.open(server.url)

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # a plain `kill` stops the server like Ctrl-C, and the report is still updated

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        server.server_close()
        if refresh_report(run_dir):
            console.print(f"report updated with the human verdict: {run_dir / 'report.md'}", highlight=False)


@app.command("review")
@handle_errors
def review_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A verify run folder (with report.json).", exists=True, file_okay=False)],
    k: Annotated[int, typer.Option("--k", help="Candidate identities per trial (chance is 1/K).", min=2, max=9)] = 4,
    trials: Annotated[int, typer.Option("--trials", help="At most this many trials per attack, spread evenly over the classes.", min=1)] = 40,
    shots: Annotated[int, typer.Option("--shots", help="Private training images shown per candidate.", min=1, max=8)] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the trial draw (recorded in human.json).")] = 0,
    all_attacks: Annotated[bool, typer.Option("--all", help="Trials from every attack, not only the strongest.")] = False,
    reviewer: Annotated[Optional[str], typer.Option("--reviewer", help="Your name: answers go to review/human-NAME.json (one file per reviewer).")] = None,
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: a free one).", min=0, max=65535)] = 0,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the URL only; do not open a browser.")] = False,
    summary: Annotated[bool, typer.Option("--summary", help="Print the human verdict and exit (no server).")] = False,
    export: Annotated[Optional[Path], typer.Option("--export", help="Write one self-contained HTML page (images inlined) and exit.", dir_okay=False)] = None,
    import_: Annotated[Optional[Path], typer.Option("--import", help="Add the answers downloaded from an exported page.", exists=True, dir_okay=False)] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="The private data (default: as recorded in report.json and the target checkpoint).")] = None,
    train_data: Annotated[Optional[Path], typer.Option("--train-data", help="The training class folder (with --test-data), as given to verify.", exists=True, file_okay=False)] = None,
    test_data: Annotated[Optional[Path], typer.Option("--test-data", help="The held-out class folder (with --train-data).", exists=True, file_okay=False)] = None,
) -> None:
    """Judge the reconstructions yourself: forced-choice trials in the browser; the human verdict goes into the report."""
    from ..review.store import check_reviewer, load_review, review_path

    check_reviewer(reviewer)
    if summary:
        _print_summary(run_dir)
        return
    if import_ is not None:
        from ..review.export import import_answers
        from ..review.report_hook import refresh_report

        review = load_review(review_path(run_dir, reviewer))
        if review is None:
            raise typer.BadParameter(f"no review to import into: {review_path(run_dir, reviewer)} (export the page first, with the same --reviewer)")
        added = import_answers(review, import_)
        refresh_report(run_dir)
        console.print(f"imported {added} answers into {review.path}", highlight=False, soft_wrap=True)
        _print_summary(run_dir)
        return
    from ..review.session import ReviewOptions, open_review

    options = ReviewOptions(
        k=k, trials=trials, shots=shots, seed=seed, all_attacks=all_attacks, reviewer=reviewer, data=data,
        train_data=str(train_data) if train_data else None, test_data=str(test_data) if test_data else None,
    )  # fmt: skip
    session = open_review(run_dir, options)
    stored = session.review
    if (stored.k, stored.seed) != (k, seed) and stored.answers:
        err_console.print(f"note: resuming the review in {stored.path} (K={stored.k}, seed {stored.seed}); its settings win", highlight=False)
    if export is not None:
        from ..review.export import export_html

        path = export_html(session, export)
        console.print(f"wrote {path} ({len(stored.trials)} trials; it contains private images: send it only to the reviewer)", highlight=False, soft_wrap=True)
        return
    _serve(session, port, not no_browser, run_dir)
