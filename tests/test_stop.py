"""Stop: a run ends at the first sampler step after its page pressed Stop and shows the predicted clean images it had."""

from types import SimpleNamespace

import gradio as gr
import pytest
import torch

from runners import budget
from runners.base import PREVIEWS_PER_RUN, Stopped, Tracker
from ui.handler import StopFlags, live, progress_callback, stop_flags


def test_the_reporter_stops_at_the_next_step_and_keeps_the_last_prediction():
    stop = stop_flags.flag(SimpleNamespace(session_hash="reporter"))
    reporter = Tracker(total=10, desc="", stop=stop)
    x = torch.zeros(2, 3, 8, 8)
    assert reporter.stopped() == []  # nothing to show before the first step
    reporter(0, 900, x, x)
    reporter(1, 800, x, x + 0.5)
    stop.set()
    with pytest.raises(Stopped):
        reporter(2, 700, x, x)
    shown = reporter.stopped()
    assert [caption for _, caption in shown] == ["stopped at step 2 of 10: predicted x0"] * 2  # one per sample
    assert stop_flags.started(SimpleNamespace(session_hash="reporter")) is stop and not stop.is_set()  # a new run lowers it


def test_stop_ends_an_ilvr_run_early_and_returns_what_it_had(bundled):
    from ui import ilvr_tab

    request = SimpleNamespace(session_hash="ilvr-stop")
    calls = []
    handle = bundled.unet.register_forward_hook(lambda *args: calls.append(1))

    def press_stop_at_step_3(value, desc=None):  # the progress bar moves once per finished step
        if value[0] == 3:
            stop_flags.stop(request)

    try:
        gallery, _ = ilvr_tab.run_ilvr("assets/shapes/red-circle.png", "shapes-16", 4, 0, 50, 2, 0, False,
                                       request=request, progress=press_stop_at_step_3)
    finally:
        handle.remove()
    budget_probe = 2  # check_budget times one U-Net call, twice, on a model's first request
    assert len(calls) <= 4 + budget_probe  # 3 steps and the one that saw Stop, of 50
    assert [caption for _, caption in gallery] == ["reference y"] + ["stopped at step 3 of 50: predicted x0"] * 2


def fake_run(steps: int, request=None, progress=None):
    """A tab's run function in miniature: a sampler loop reporting x0_hat (the step number) to a StepReporter."""
    reporter = Tracker(steps, "", progress_callback(lambda *args, **kwargs: None), stop=stop_flags.started(request))
    try:
        for step in range(steps):
            reporter(step, 1000 - step, torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), step / steps * 2 - 1))
    except Stopped:
        return reporter.stopped(), "stopped"
    return ["final"], "done"


def test_a_live_run_streams_its_predictions_then_its_result():
    updates = list(live(fake_run, outputs=2)(100))
    previews, (gallery, info) = updates[:-1], updates[-1]
    assert (gallery, info) == (["final"], "done")
    assert len(previews) == PREVIEWS_PER_RUN - 1  # every 10th of the 100 steps, the last one being the result
    assert [p[0][0][1] for p in previews] == [f"step {k} of 100: predicted x0" for k in range(10, 100, 10)]
    assert all(p[1] is not None for p in previews)  # the other output is left as it is (gr.skip())


def test_closing_a_live_run_stops_it_at_its_next_step():
    request = gr.Request(session_hash="live-close")
    stream = live(fake_run, outputs=2)(10**6, request=request)
    next(stream)  # the first preview
    stream.close()  # what a cancelled event or a closed page does
    assert stop_flags.flag(request).is_set()  # the worker sees it at its next step and returns


def test_the_budget_says_when_no_setting_fits(monkeypatch):
    from pipelines.models import timing

    monkeypatch.setenv("STEER_MAX_SECONDS", "300")
    monkeypatch.setattr(timing, "seconds_per_eval", lambda model, grad=False, batch_size=1: 1.0)
    monkeypatch.setattr(timing, "measured_seconds", lambda model_id, grad=False, batch_size=1: 1.0)
    model = SimpleNamespace(model_id="a-slow-model")

    def cost(evals: int) -> budget.Cost:
        return budget.Cost("a-slow-model", (budget.Work(evals),))

    budget.check_budget(model, cost(300), lower="the steps", smallest=cost(40))  # at the limit: served
    with pytest.raises(ValueError, match="Lower the steps"):
        budget.check_budget(model, cost(301), lower="the steps", smallest=cost(40))
    with pytest.raises(ValueError, match="Even the lightest settings take about 400 s with a-slow-model"):
        budget.check_budget(model, cost(1000), lower="the steps", smallest=cost(400))


def test_a_batch_is_priced_at_its_own_size_not_as_that_many_single_samples(monkeypatch):
    """Measured: 1 s per evaluation at batch 1, 2 s at batch 4, 3 s at 8; a batch of 6 lies between 4 and 8."""
    from pipelines.models import timing

    measured = {1: 1.0, 2: 1.5, 4: 2.0, 8: 3.0}
    timed = []
    monkeypatch.setenv("STEER_MAX_SECONDS", "50")
    monkeypatch.setattr(timing, "measured_seconds", lambda model_id, grad=False, batch_size=1: None)
    monkeypatch.setattr(timing, "seconds_per_eval",
                        lambda model, grad=False, batch_size=1: timed.append(batch_size) or measured[batch_size])
    model = SimpleNamespace(model_id="m")
    assert budget.estimate_seconds(budget.Cost("m", (budget.Work(10, 6),)), model) == 10 * 2.5
    assert 4 in timed and 8 in timed  # 10 x 6 x 1 s would exceed the 50 s limit: the batch's own price decides
    timed.clear()
    assert budget.estimate_seconds(budget.Cost("m", (budget.Work(10, 8),)), SimpleNamespace(model_id="m")) == 10 * 3.0
    timed.clear()
    assert budget.estimate_seconds(budget.Cost("m", (budget.Work(2, 8),)), model) == 2 * 8 * 1.0
    assert timed == [1, 1]  # well within the limit at batch-1 prices: no batch is timed (bracket 1..1 asked twice)


def test_stop_flags_stay_bounded_and_go_with_their_pages():
    flags = StopFlags(size=50)
    for visitor in range(1000):  # a thousand pages that never said goodbye
        flags.started(SimpleNamespace(session_hash=f"visitor-{visitor}"))
    assert len(flags) == 50
    page = SimpleNamespace(session_hash="visitor-999")
    running = flags.flag(page)
    flags.drop(page)  # the page closed (Blocks.unload)
    assert len(flags) == 49 and running.is_set()  # its run stops at its next step, and its flag is gone
