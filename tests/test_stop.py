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
