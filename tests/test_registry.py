import pytest

from harness.errors import HarnessError, UnknownNameError
from harness.registry import Registry


def test_lazy_entry_is_imported_on_first_get_only():
    registry = Registry("thing")
    registry.register("join", "os.path:join")
    assert "join" in registry
    import os.path

    assert registry.get("join") is os.path.join


def test_duplicate_name_is_an_error():
    registry = Registry("thing")
    registry.register("a", object())
    with pytest.raises(ValueError, match="thing 'a' is registered twice"):
        registry.register("a", object())


def test_unknown_name_suggests_closest_and_is_a_user_error():
    registry = Registry("dataset")
    for name in ("triviaqa", "nq", "hotpotqa"):
        registry.register(name, object())
    with pytest.raises(UnknownNameError) as caught:
        registry.get("hotpotq")
    message = str(caught.value)
    assert message.startswith("unknown dataset 'hotpotq'. Did you mean 'hotpotqa'?")
    assert "Valid datasets: hotpotqa, nq, triviaqa." in message
    assert isinstance(caught.value, HarnessError) and caught.value.exit_code == 2


def test_unknown_name_without_close_match_lists_choices():
    registry = Registry("method")
    registry.register("concat", object())
    with pytest.raises(UnknownNameError, match=r"^unknown method 'zzz'\. Valid methods: concat\.$"):
        registry.get("zzz")


def test_plugin_package_is_imported_before_lookup():
    from harness.plugins import DATASETS

    assert DATASETS.names()[:3] == ["triviaqa", "nq", "hotpotqa"]
    assert DATASETS.get("nq").name == "nq"
