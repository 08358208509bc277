"""Stop: a run ends at the first sampler step after its page pressed Stop and shows the predicted clean images it had."""

from types import SimpleNamespace

import pytest
import torch

from ui import common


def test_the_reporter_stops_at_the_next_step_and_keeps_the_last_prediction():
    stop = common.stop_flag(SimpleNamespace(session_hash="reporter"))
    reporter = common.StepReporter(lambda *args, **kwargs: None, total=10, desc="", stop=stop)
    x = torch.zeros(2, 3, 8, 8)
    assert reporter.stopped_gallery() == []  # nothing to show before the first step
    reporter(0, 900, x, x)
    reporter(1, 800, x, x + 0.5)
    stop.set()
    with pytest.raises(common.Stopped):
        reporter(2, 700, x, x)
    shown = reporter.stopped_gallery()
    assert [caption for _, caption in shown] == ["stopped at step 2 of 10: predicted x0"] * 2  # one per sample
    assert common.started(SimpleNamespace(session_hash="reporter")) is stop and not stop.is_set()  # a new run lowers it


def test_stop_ends_an_ilvr_run_early_and_returns_what_it_had(bundled):
    from ui import ilvr_tab

    request = SimpleNamespace(session_hash="ilvr-stop")
    calls = []
    handle = bundled.unet.register_forward_hook(lambda *args: calls.append(1))

    def press_stop_at_step_3(value, desc=None):  # the progress bar moves once per finished step
        if value[0] == 3:
            common.request_stop(request)

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
    reporter = common.StepReporter(lambda *args, **kwargs: None, total=steps, desc="", stop=common.started(request))
    try:
        for step in range(steps):
            reporter(step, 1000 - step, torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), step / steps * 2 - 1))
    except common.Stopped:
        return reporter.stopped_gallery(), "stopped"
    return ["final"], "done"


def test_a_live_run_streams_its_predictions_then_its_result():
    updates = list(common.live(fake_run, outputs=2)(100))
    previews, (gallery, info) = updates[:-1], updates[-1]
    assert (gallery, info) == (["final"], "done")
    assert len(previews) == common.PREVIEWS_PER_RUN - 1  # every 10th of the 100 steps, the last one being the result
    assert [p[0][0][1] for p in previews] == [f"step {k} of 100: predicted x0" for k in range(10, 100, 10)]
    assert all(p[1] is not None for p in previews)  # the other output is left as it is (gr.skip())


def test_closing_a_live_run_stops_it_at_its_next_step():
    request = common.gr.Request(session_hash="live-close")
    stream = common.live(fake_run, outputs=2)(10**6, request=request)
    next(stream)  # the first preview
    stream.close()  # what a cancelled event or a closed page does
    assert common.stop_flag(request).is_set()  # the worker sees it at its next step and returns


def test_the_budget_says_when_no_setting_fits(monkeypatch):
    from pipelines import timing

    monkeypatch.setenv("STEER_MAX_SECONDS", "300")
    monkeypatch.setattr(timing, "seconds_per_eval", lambda model, grad=False, batch_size=1: 1.0)
    monkeypatch.setattr(timing, "measured_seconds", lambda model_id, grad=False, batch_size=1: 1.0)
    model = SimpleNamespace(model_id="a-slow-model")
    common.check_budget(model, 300, 0, lower="the steps", smallest=(40, 0))  # at the limit: served
    with pytest.raises(common.gr.Error, match="Lower the steps"):
        common.check_budget(model, 301, 0, lower="the steps", smallest=(40, 0))
    with pytest.raises(common.gr.Error, match="Even the lightest settings take about 400 s with a-slow-model"):
        common.check_budget(model, 1000, 0, lower="the steps", smallest=(400, 0))
