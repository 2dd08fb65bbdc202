"""How ``gradwatch serve`` starts or joins Ray (ray.init itself is replaced: this is about the arguments)."""

import ray

from gradwatch.service import server


def _init_kwargs(monkeypatch, address):
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    started = server.connect_ray(address)
    (kwargs,) = calls
    return started, kwargs


def test_a_local_ray_passes_report_batches_inline_rather_than_through_the_object_store(monkeypatch):
    started, kwargs = _init_kwargs(monkeypatch, None)
    assert started is True
    assert kwargs["address"] is None
    assert kwargs["_system_config"] == {"max_direct_call_object_size": server.INLINE_CALL_BYTES}
    assert server.INLINE_CALL_BYTES > 100_000  # above Ray's default, and a 1,000-layer report (~80 KB) many times


def test_joining_a_running_cluster_sends_no_system_config_which_ray_would_refuse(monkeypatch):
    started, kwargs = _init_kwargs(monkeypatch, "auto")
    assert started is False
    assert kwargs["address"] == "auto" and kwargs["_system_config"] is None
