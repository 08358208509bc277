"""The one handler every tab's Run button goes through: settings from the inputs, the runner on the GPU, progress,
streaming of the predicted clean images, Stop, errors a student understands, and the result rendered by the tab.

Every error reaches the page as a message: a bad input or a model that cannot be had says what was wrong and what is
allowed; anything else is an internal error with a short id, which the log holds too, beside the traceback and the
request's settings.
"""

from __future__ import annotations

import contextvars
import ctypes
import functools
import inspect
import logging
import queue
import secrets
import sys
import threading
from collections import OrderedDict
from dataclasses import fields
from typing import Callable

import gradio as gr

from runners import budget, common

from . import gpu
from .outputs import gallery


class StopFlags:
    """The Stop flag of each visitor's page, dropped when the page goes away (Blocks.unload) and, for pages that
    never say so, the least recently used dropped beyond `size`: nothing here grows with the number of visitors."""

    def __init__(self, size: int = 1024):
        self.size, self._flags, self._lock = size, OrderedDict(), threading.Lock()

    def __len__(self) -> int:
        return len(self._flags)

    def flag(self, request: gr.Request | None) -> threading.Event:
        """The page's flag (a fresh one for a request without a session)."""
        if request is None or not request.session_hash:
            return threading.Event()
        with self._lock:
            flag = self._flags.pop(request.session_hash, None) or threading.Event()
            self._flags[request.session_hash] = flag
            while len(self._flags) > self.size:
                self._flags.popitem(last=False)
            return flag

    def started(self, request: gr.Request | None) -> threading.Event:
        """The page's flag, lowered as its new request starts."""
        flag = self.flag(request)
        flag.clear()
        return flag

    def stop(self, request: gr.Request) -> None:
        """The Stop buttons: the page's running request ends at its next sampler step."""
        self.flag(request).set()

    def drop(self, request: gr.Request) -> None:
        """The page went away: its running request stops, and its flag goes."""
        with self._lock:
            flag = self._flags.pop(request.session_hash, None) if request and request.session_hash else None
        if flag is not None:
            flag.set()


stop_flags = StopFlags()
_previews: contextvars.ContextVar[queue.Queue | None] = contextvars.ContextVar("previews", default=None)
log = logging.getLogger(__name__)
# glibc's malloc_trim: requests run on several threads, each with a heap arena of its own that keeps the memory its
# largest request freed; without handing it back after each request the server's memory creeps up request by request
_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None) if sys.platform.startswith("linux") else None


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (a few ms; nothing where the C library is not glibc)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def internal_error(err: BaseException, where: str, context) -> gr.Error:
    """An unexpected exception as the page shows it: an internal error with a short id, logged with the traceback and
    `context` (the request's settings, or the callback's arguments)."""
    error_id = secrets.token_hex(4)
    log.error("internal error %s in %s: %s: %s; settings: %r", error_id, where, type(err).__name__, err, context,
              exc_info=err)
    return gr.Error(f"Something went wrong inside the Space (error {error_id}); it is still running. Try again; if "
                    f"it happens again, report {error_id} with the settings file under the result.",
                    title=f"Internal error {error_id}", print_exception=False)


def user_errors(fn: Callable) -> Callable:
    """The library's ValueError and ModelLoadError as a gr.Error that says what was wrong, any other exception as an
    internal error with an id (`internal_error`); the server keeps serving."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except common.ModelLoadError as err:
            raise gr.Error(str(err), title="Model not available") from err
        except ValueError as err:
            raise gr.Error(str(err), title="Invalid input") from err
        except Exception as err:
            raise internal_error(err, fn.__name__, (args, kwargs)) from err

    return wrapper


def progress_callback(progress) -> common.Callback:
    """A runner's callback: moves the progress bar and, when the request streams, sends each preview to the page."""
    previews = _previews.get()

    def callback(done: int, total: int, desc: str, preview) -> None:
        progress((done, total), desc=desc)
        if preview is not None and previews is not None:
            previews.put(gallery(preview))

    return callback


def unwrapped(value):
    """An input as the runners take it: an unprocessed upload (a file-data dict) as its path."""
    return value["path"] if isinstance(value, dict) and "path" in value else value


def estimator(settings_class, cost: Callable, model_field: str = "model_id") -> Callable[..., str]:
    """The time estimate next to a Run button, from the tab's inputs (the settings, in order)."""
    return lambda *values: budget.estimate_text(settings_class(*map(unwrapped, values)), cost, model_field)


def settings_signature(settings_class) -> inspect.Signature:
    """An endpoint's parameters: the settings' fields, then the request and the progress bar Gradio fills in."""
    params = [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default)
              for f in fields(settings_class)]
    params += [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request),
               inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress())]
    return inspect.Signature(params)


def call_arguments(settings_class, args: tuple, named: dict):
    """(settings, request, progress) from an endpoint's arguments as Gradio passes them: the settings' fields, then
    the request and the progress bar (positional, or by name)."""
    n = len(fields(settings_class))
    request, progress = (*args[n:], None, None)[:2]
    request, progress = named.pop("request", request), named.pop("progress", progress)
    settings = settings_class(*map(unwrapped, args[:n]), **{k: unwrapped(v) for k, v in named.items()})
    return settings, request, progress if progress is not None else gr.Progress()


def duration(settings_class, cost: Callable) -> Callable[..., float]:
    """The seconds a ZeroGPU request asks for: its own estimate with a margin, within the budget's limit."""

    def seconds(*args, **named) -> float:
        try:
            estimate = budget.estimate_seconds(cost(call_arguments(settings_class, args, named)[0]))
        except (TypeError, ValueError, common.ModelLoadError):  # refused in the call itself, at once
            return 10.0
        limit = budget.max_seconds()
        return limit if estimate is None else min(limit, 10.0 + gpu.DURATION_MARGIN * estimate)

    return seconds


def endpoint(name: str, settings_class, run: Callable, render: Callable, cost: Callable) -> Callable:
    """The function a tab's button calls, named `name` (its API name, which its MCP tool takes too), taking the
    settings' fields: it runs `run(settings, callback=..., stop=...)` (on the GPU, asking ZeroGPU for `cost`'s
    estimate) and returns `render(result)`."""

    def call(*args, **named):
        settings, request, progress = call_arguments(settings_class, args, named)
        try:
            return render(run(settings, callback=progress_callback(progress), stop=stop_flags.started(request)))
        except (gr.Error, ValueError, common.ModelLoadError):
            raise
        except Exception as err:  # logged with the settings it ran with
            raise internal_error(err, name, settings) from err
        finally:
            release_freed_memory()

    call.__name__ = call.__qualname__ = name
    call.__signature__ = settings_signature(settings_class)
    call.__annotations__ = {"request": gr.Request}
    return user_errors(gpu.gpu(call, duration(settings_class, cost)))


def live(run: Callable, outputs: int) -> Callable:
    """A streaming endpoint over an endpoint (whose first output is its gallery): `run` works on a thread while this
    yields the gallery of its latest predicted clean images every few sampler steps (its other outputs left as they
    are), then its result. Closing the stream (a cancelled event, a closed page) stops the run at its next step."""
    finished = object()

    @functools.wraps(run)
    def stream(*args, **kwargs):
        request = next((a for a in (*args, *kwargs.values()) if isinstance(a, gr.Request)), None)
        updates: queue.Queue = queue.Queue()

        def work():
            _previews.set(updates)
            try:
                updates.put((finished, run(*args, **kwargs)))
            except Exception as err:  # re-raised below, in the request's own thread
                updates.put((finished, err))

        threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True).start()
        update = None
        try:
            while True:
                update = updates.get()
                if isinstance(update, tuple) and update[0] is finished:
                    break
                yield (update, *[gr.skip()] * (outputs - 1)) if outputs > 1 else update
        finally:
            if not (isinstance(update, tuple) and update[0] is finished):  # closed while the run was working
                stop_flags.flag(request).set()
        if isinstance(update[1], Exception):
            raise update[1]
        yield update[1]

    return stream
