"""The ops' schema fingerprint in torch.compile's cache keys (_wiring.tag_compile_caches):
a graph cached on disk against other op schemas is never read back."""

import torch.compiler.config as cconfig

import rnnkit.ops  # noqa: F401 (defines the ops, tags the caches)
from rnnkit.ops import _wiring


def test_the_tag_holds_the_fingerprint_once_and_keeps_the_users_own():
    mark = f"rnnkit-ops-{_wiring.schema_fingerprint()}"
    assert mark in cconfig.cache_key_tag.split("+")
    with cconfig.patch(cache_key_tag="mine"):  # (a config module: patch, not monkeypatch)
        _wiring.tag_compile_caches()
        _wiring.tag_compile_caches()
        assert cconfig.cache_key_tag == f"mine+{mark}"


def test_the_fingerprint_follows_the_schemas(monkeypatch):
    before = _wiring.schema_fingerprint()
    assert len(before) == 12 and before == _wiring.schema_fingerprint()
    monkeypatch.setattr(_wiring, "_schemas", [*_wiring._schemas[:-1], "changed() -> Tensor"])
    assert _wiring.schema_fingerprint() != before
