"""A broken plugin costs only itself: the built-ins and the other plugins keep working, and
``boneage plugins`` says what was refused and why (exit 1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from boneage import hookimpl, plugins
from boneage.cli.main import main
from boneage.errors import PluginError, PluginNotFoundError
from boneage.preprocess import PreprocessConfig, StepConfig, build_pipeline
from boneage.specs import BackboneSpec, RuntimeSpec, StepSpec
from tests.test_plugins import ConstantRuntime, FakeEntryPoint, RuntimePlugin

BUILTIN_STEPS = PreprocessConfig(steps=(StepConfig(name="grayscale"), StepConfig(name="normalize")))


def _build(*args: Any, **kwargs: Any) -> Any:
    return lambda image, trace: image


def returning(value: Callable[[], Any], hook: str = "boneage_register_preprocess_steps") -> object:
    """A plugin whose one hook returns ``value()``."""

    def impl(self: object) -> Any:
        return value()

    return type("Garbage", (), {hook: hookimpl(impl)})()


def use_entry_points(monkeypatch: pytest.MonkeyPatch, *points: FakeEntryPoint) -> None:
    """Make ``points`` the installed plugins, with autoload on (the suite switches it off)."""
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", lambda group: list(points))
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "0")
    plugins.reset_plugins()


def builtins_work(manager: plugins.Plugins) -> None:
    assert {"grayscale", "normalize"} <= set(manager.registry("preprocess_steps"))
    assert {"onnx", "tensorflow"} <= set(manager.registry("runtimes"))
    out = build_pipeline(BUILTIN_STEPS)(np.full((40, 30), 200, np.uint8))
    assert out.shape == (40, 30, 1)


def listed(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["plugins"])
    return code, capsys.readouterr().out


POSITIONAL = "boneage_register_preprocess_steps raised TypeError: StepSpec.__init__() takes 1 positional argument"
GARBAGE: dict[str, tuple[Callable[[], Any], str]] = {
    "None in the list": (lambda: [None], "item 0 is None, not a StepSpec"),
    "a string": (lambda: "grayscale", "returned str, not a list"),
    "one spec, not a list": (lambda: StepSpec(name="one", build=_build), "returned StepSpec, not a list"),
    "a spec of another hook": (lambda: [RuntimeSpec(name="r", load=_build)], "item 0 is RuntimeSpec, not a StepSpec"),
    "positional fields": (lambda: [StepSpec("flip", _build, "mirror")], POSITIONAL),  # type: ignore[misc]
    "fields swapped": (lambda: [StepSpec(name=_build, build="flip")], "item 0: StepSpec.name must be a non-empty str"),  # type: ignore[arg-type]
    "params not a model": (lambda: [StepSpec(name="flip", build=_build, params=dict)], "item 0: StepSpec.params must be a pydantic BaseModel"),  # type: ignore[arg-type]
    "build not callable": (lambda: [StepSpec(name="flip", build="not a function")], "item 0: StepSpec.build must be callable"),  # type: ignore[arg-type]
    "doc not a string": (lambda: [StepSpec(name="flip", build=_build, doc=3)], "item 0: StepSpec.doc must be a str"),  # type: ignore[arg-type]
    "a name with a newline": (lambda: [StepSpec(name="a\nb", build=_build)], "item 0: StepSpec.name must be a non-empty str"),
    "a generator": (lambda: (s for s in [StepSpec(name="flip", build=_build)]), "returned generator, not a list"),
}


def hook_message(message: str) -> str:
    return message if message.startswith("boneage_") else f"boneage_register_preprocess_steps: {message}"


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_a_hook_returning_garbage_is_refused_at_registration(case: str) -> None:
    """Refused when it registers, with the plugin named: not accepted, then failing when used."""
    value, message = GARBAGE[case]
    manager = plugins.get_plugins()
    with pytest.raises(PluginError) as raised:
        manager.register(returning(value), "garbage 0.1", name="garbage")
    assert str(raised.value).startswith(f"plugin garbage (garbage 0.1): {hook_message(message)}")
    assert not manager.pm.has_plugin("garbage") and "flip" not in manager.registry("preprocess_steps")
    builtins_work(manager)


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_an_installed_plugin_returning_garbage_is_listed_and_the_rest_work(
        case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    value, message = GARBAGE[case]
    use_entry_points(monkeypatch, FakeEntryPoint("garbage", returning(value)), FakeEntryPoint("good", RuntimePlugin()))
    manager = plugins.get_plugins()
    builtins_work(manager)
    (rejection,) = manager.rejections
    assert rejection.plugin == "boneage-fake 2.0:garbage" and rejection.error.startswith(hook_message(message))
    code, out = listed(capsys)
    assert code == 1 and "grayscale" in out and "constant" in out
    assert f"rejected: boneage-fake 2.0:garbage (boneage-fake 2.0): {hook_message(message)}" in out


def test_a_positional_spec_is_refused_with_a_hint() -> None:
    with pytest.raises(PluginError, match=r"^plugin old \(old 0.1\): .*positional.* \(specs take keyword arguments "
                                          r"only: StepSpec\(name=\.\.\., \.\.\.\), see docs/plugins.md\)$"):
        plugins.get_plugins().register(returning(GARBAGE["positional fields"][0]), "old 0.1", name="old")


def test_a_backbone_with_a_wrong_input_size_is_rejected() -> None:
    manager = plugins.get_plugins()
    plugin = returning(lambda: [BackboneSpec(name="b", build=_build, default_input_size="224")], "boneage_register_backbones")  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="^plugin b .*BackboneSpec.default_input_size must be a positive int, not '224'"):
        manager.register(plugin, "t", name="b")
    assert "b" not in manager.registry("backbones") and "densenet121" in manager.registry("backbones")


@pytest.mark.parametrize("error", [RuntimeError("oops"), SystemExit(3), GeneratorExit()], ids=type)
def test_a_hook_that_raises_hides_only_its_own_plugin(error: BaseException, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    def fail() -> Any:
        raise error

    use_entry_points(monkeypatch, FakeEntryPoint("broken", returning(fail, "boneage_register_runtimes")),
                     FakeEntryPoint("good", RuntimePlugin()))
    manager = plugins.get_plugins()
    builtins_work(manager)
    assert manager.registry("runtimes")["constant"].source == "boneage-fake 2.0"
    code, out = listed(capsys)
    assert code == 1 and "constant" in out and "grayscale" in out
    assert f"rejected: boneage-fake 2.0:broken (boneage-fake 2.0): boneage_register_runtimes raised {type(error).__name__}" in out


def test_keyboard_interrupt_in_a_hook_is_not_swallowed() -> None:
    def interrupt() -> Any:
        raise KeyboardInterrupt

    manager = plugins.get_plugins()
    with pytest.raises(KeyboardInterrupt):
        manager.register(returning(interrupt), "t", name="interrupt")
    assert not manager.pm.has_plugin("interrupt")


def test_a_rejected_plugin_is_withdrawn_whole() -> None:
    class Half:
        @hookimpl
        def boneage_register_runtimes(self) -> list[RuntimeSpec]:
            return [RuntimeSpec(name="constant", load=lambda model, threads: ConstantRuntime())]

        @hookimpl
        def boneage_register_preprocess_steps(self) -> list[StepSpec]:
            raise ValueError("bug")

    manager = plugins.get_plugins()
    with pytest.raises(PluginError, match="^plugin Half .half 1.0.: boneage_register_preprocess_steps raised ValueError: bug"):
        manager.register(Half(), "half 1.0")
    assert "constant" not in manager.registry("runtimes")


def test_an_installed_rejected_plugin_is_withdrawn_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    class Half:
        @hookimpl
        def boneage_register_runtimes(self) -> list[RuntimeSpec]:
            return [RuntimeSpec(name="constant", load=lambda model, threads: ConstantRuntime())]

        @hookimpl
        def boneage_register_preprocess_steps(self) -> list[StepSpec]:
            raise ValueError("bug")

    use_entry_points(monkeypatch, FakeEntryPoint("half", Half()))
    with pytest.raises(PluginNotFoundError, match=r"no runtime named 'constant' \(registered: onnx, tensorflow; "
                                                  r"1 plugin failed to load or was refused, see `boneage plugins`\)"):
        plugins.get("runtimes", "constant")


@pytest.mark.parametrize("error", [SystemExit(0), SystemExit("bye"), ImportError("no module named 'x'")], ids=repr)
def test_a_plugin_that_exits_on_import_is_a_load_failure(error: BaseException, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    use_entry_points(monkeypatch, FakeEntryPoint("exits", error), FakeEntryPoint("good", RuntimePlugin()))
    manager = plugins.get_plugins()
    builtins_work(manager)
    assert "constant" in manager.registry("runtimes")
    (failure,) = manager.failures
    assert failure.entry_point == "exits" and failure.error.startswith(type(error).__name__)
    code, out = listed(capsys)
    assert code == 1 and "constant" in out and f"failed to load: exits (boneage-fake 2.0): {type(error).__name__}" in out


def test_keyboard_interrupt_on_import_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    use_entry_points(monkeypatch, FakeEntryPoint("interrupt", KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        plugins.get_plugins()


def test_unreadable_entry_point_metadata_is_a_load_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(group: str) -> list[Any]:
        raise ValueError("bad entry_points.txt")

    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", broken)
    manager = plugins.Plugins(autoload=True)
    builtins_work(manager)
    (failure,) = manager.failures
    assert "bad entry_points.txt" in failure.error


class Misspelled:
    @hookimpl
    def boneage_register_runtime(self) -> list[RuntimeSpec]:
        return [RuntimeSpec(name="constant", load=lambda model, threads: ConstantRuntime())]


class Unmarked:
    def boneage_register_runtimes(self) -> list[RuntimeSpec]:
        return [RuntimeSpec(name="constant", load=lambda model, threads: ConstantRuntime())]


class UnmarkedTypo:
    def boneage_register_runtime(self) -> list[RuntimeSpec]:
        return []

    def boneage_version(self) -> str:  # a helper, not a hook: no complaint about it
        return "1"


class Wrapper:
    @hookimpl(wrapper=True)
    def boneage_register_runtimes(self) -> Any:
        return (yield)


class Nothing:
    pass


REGISTER_ERRORS: dict[str, tuple[object, str]] = {
    "misspelled": (Misspelled(), "unknown hook 'boneage_register_runtime' (did you mean 'boneage_register_runtimes'?)"),
    "unmarked": (Unmarked(), "boneage_register_runtimes is not marked with @boneage.hookimpl"),
    "unmarked typo": (UnmarkedTypo(), "boneage_register_runtime is not marked with @boneage.hookimpl"),
    "wrapper": (Wrapper(), "boneage_register_runtimes: hook wrappers are not supported"),
    "no hooks": (Nothing(), "implements no boneage hook"),
}


@pytest.mark.parametrize("case", sorted(REGISTER_ERRORS))
def test_a_plugin_with_a_bad_hook_is_refused_when_registered(case: str) -> None:
    plugin, message = REGISTER_ERRORS[case]
    manager = plugins.get_plugins()
    with pytest.raises(PluginError, match=f"^plugin {case}-plugin \\(t\\): {message.replace('(', '.').replace(')', '.')}"):
        manager.register(plugin, "t", name=f"{case}-plugin")
    assert not manager.pm.has_plugin(f"{case}-plugin")
    manager.pm.check_pending()  # nothing unknown left behind
    builtins_work(manager)


def test_a_misspelled_hook_in_an_installed_plugin_is_reported(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    use_entry_points(monkeypatch, FakeEntryPoint("typo", Misspelled()), FakeEntryPoint("good", RuntimePlugin()))
    builtins_work(plugins.get_plugins())
    code, out = listed(capsys)
    assert code == 1 and "constant" in out
    assert "rejected: boneage-fake 2.0:typo (boneage-fake 2.0): unknown hook 'boneage_register_runtime'" in out


def test_a_plugin_cannot_take_a_builtin_name(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    class Impostor:
        @hookimpl
        def boneage_register_runtimes(self) -> list[RuntimeSpec]:
            return [RuntimeSpec(name="onnx", load=lambda model, threads: ConstantRuntime())]

    manager = plugins.get_plugins()
    with pytest.raises(PluginError, match=r"^plugin Impostor \(impostor 0.1\): runtime 'onnx' is registered twice"):
        manager.register(Impostor(), "impostor 0.1")
    assert manager.registry("runtimes")["onnx"].source == plugins.BUILTIN
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", lambda group: [FakeEntryPoint("impostor", Impostor())])
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "0")
    plugins.reset_plugins()
    code, out = listed(capsys)
    assert code == 1 and "rejected: boneage-fake 2.0:impostor (boneage-fake 2.0): runtime 'onnx' is registered twice: " \
                         "by boneage.runtimes (built-in) and by boneage-fake 2.0:impostor (boneage-fake 2.0)" in out


def test_two_entry_points_to_one_module_load_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = RuntimePlugin()
    use_entry_points(monkeypatch, FakeEntryPoint("a", plugin), FakeEntryPoint("b", plugin))
    manager = plugins.get_plugins()
    assert "constant" in manager.registry("runtimes") and not manager.failures and not manager.rejections


class Counted:
    def count_params(self) -> int:
        return 1234


class SomeBackbones:
    @hookimpl
    def boneage_register_backbones(self) -> list[BackboneSpec]:
        def explode(size: int, **options: Any) -> Any:
            raise SystemExit("a plugin's build exited")

        return [BackboneSpec(name="exploding", build=explode, default_input_size=32, doc="raises"),
                BackboneSpec(name="fine", build=lambda size: Counted(), default_input_size=32)]


def test_backbones_lists_a_failing_build_and_the_rest(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    manager = plugins.get_plugins()
    manager.register(SomeBackbones(), "some 1.0")
    everything = manager.registry
    monkeypatch.setattr(manager, "registry", lambda kind: {  # leave out the built-ins: building them needs seconds
        name: item for name, item in everything(kind).items() if item.source != plugins.BUILTIN})
    code = main(["backbones"])
    out = capsys.readouterr().out
    assert code == 1 and "(failed: SystemExit)" in out and "1,234" in out
    assert "backbone 'exploding' (some 1.0) failed to build: SystemExit: a plugin's build exited" in out
