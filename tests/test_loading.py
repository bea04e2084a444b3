"""Finding the Definitions of user code: -m module, -f file, ':attr' and TIDEGATE_DEFINITIONS."""

import os
import re
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tidegate as tg
from tidegate.definitions.loading import ENV_VAR, CodeLocation, load_definitions

VALID = """
import tidegate as tg

@tg.asset
def numbers():
    return [1, 2, 3]

defs = tg.Definitions(assets=[numbers])
"""

TWO_DEFS = """
import tidegate as tg

@tg.asset
def first_asset():
    return 1

@tg.asset
def second_asset():
    return 2

{first_name} = tg.Definitions(assets=[first_asset])
{second_name} = tg.Definitions(assets=[second_asset])
"""

WriteModule = Callable[[str], str]


@pytest.fixture
def code_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for user code; modules imported meanwhile are forgotten after."""
    monkeypatch.syspath_prepend(str(tmp_path))  # also restores sys.path as it was
    monkeypatch.delenv(ENV_VAR, raising=False)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.fixture
def write_module(code_dir: Path) -> WriteModule:
    """Write ``source`` as a module with a unique name in ``code_dir``; return that name."""

    def write(source: str) -> str:
        name = f"tg_user_{uuid.uuid4().hex[:12]}"
        (code_dir / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


def asset_names(defs: tg.Definitions) -> set[str]:
    return {str(k) for k in defs.assets}


class TestParse:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("etl.definitions", CodeLocation(module="etl.definitions")),
            ("etl.definitions:defs", CodeLocation(module="etl.definitions", attribute="defs")),
            ("etl/definitions.py", CodeLocation(file="etl/definitions.py")),
            ("definitions.py:prod", CodeLocation(file="definitions.py", attribute="prod")),
            ("etl/definitions", CodeLocation(file="etl/definitions")),
            ("/srv/app/defs.py:defs", CodeLocation(file="/srv/app/defs.py", attribute="defs")),
        ],
    )
    def test_parse(self, text: str, expected: CodeLocation) -> None:
        assert CodeLocation.parse(text) == expected

    def test_needs_exactly_one_target(self) -> None:
        with pytest.raises(
            tg.DefinitionsLoadError, match=re.escape("give exactly one of a module (-m) or a file (-f)")
        ):
            CodeLocation()
        with pytest.raises(tg.DefinitionsLoadError, match="exactly one"):
            CodeLocation(module="a", file="a.py")

    def test_str(self, tmp_path: Path) -> None:
        assert str(CodeLocation(module="etl.definitions", attribute="defs")) == "etl.definitions:defs"
        assert str(CodeLocation(module="etl.definitions")) == "etl.definitions"
        file = tmp_path / "defs.py"
        assert str(CodeLocation(file=str(file), attribute="prod")) == f"{file.resolve()}:prod"


class TestModule:
    def test_load_a_module(self, write_module: WriteModule) -> None:
        name = write_module(VALID)
        defs = CodeLocation(module=name).load()
        assert isinstance(defs, tg.Definitions)
        assert asset_names(defs) == {"numbers"}
        assert defs is sys.modules[name].defs

    def test_load_a_package_module(self, code_dir: Path) -> None:
        package = f"tg_pkg_{uuid.uuid4().hex[:12]}"
        (code_dir / package).mkdir()
        (code_dir / package / "__init__.py").write_text("")
        (code_dir / package / "assets.py").write_text("import tidegate as tg\n\n@tg.asset\ndef rows():\n    return 1\n")
        (code_dir / package / "definitions.py").write_text(
            f"import tidegate as tg\nfrom {package}.assets import rows\n\ndefs = tg.Definitions(assets=[rows])\n"
        )
        defs = CodeLocation.parse(f"{package}.definitions").load()
        assert asset_names(defs) == {"rows"}

    def test_attribute(self, write_module: WriteModule) -> None:
        name = write_module(TWO_DEFS.format(first_name="staging", second_name="prod"))
        assert asset_names(CodeLocation.parse(f"{name}:prod").load()) == {"second_asset"}
        assert asset_names(CodeLocation.parse(f"{name}:staging").load()) == {"first_asset"}

    @pytest.mark.parametrize("attribute", ["first_asset", "missing"])
    def test_attribute_that_is_not_definitions(self, write_module: WriteModule, attribute: str) -> None:
        name = write_module(VALID.replace("@tg.asset", "@tg.asset(name='first_asset')"))
        with pytest.raises(
            tg.DefinitionsLoadError,
            match=re.escape(f"code location '{name}:{attribute}': {attribute!r} is not a Definitions object"),
        ):
            CodeLocation.parse(f"{name}:{attribute}").load()

    def test_no_definitions(self, write_module: WriteModule) -> None:
        name = write_module("import tidegate as tg\n\nVALUE = 1\n")
        with pytest.raises(
            tg.DefinitionsLoadError, match=re.escape(f"code location '{name}': holds no Definitions object")
        ):
            CodeLocation(module=name).load()

    def test_two_definitions_one_named_defs_wins(self, write_module: WriteModule) -> None:
        name = write_module(TWO_DEFS.format(first_name="other", second_name="defs"))
        assert asset_names(CodeLocation(module=name).load()) == {"second_asset"}
        name = write_module(TWO_DEFS.format(first_name="defs", second_name="other"))
        assert asset_names(CodeLocation(module=name).load()) == {"first_asset"}

    def test_two_definitions_without_defs_is_an_error(self, write_module: WriteModule) -> None:
        name = write_module(TWO_DEFS.format(first_name="staging", second_name="prod"))
        with pytest.raises(
            tg.DefinitionsLoadError,
            match=re.escape(
                f"code location '{name}': several Definitions objects (prod, staging); name one with ':attribute'"
            ),
        ):
            CodeLocation(module=name).load()

    def test_the_same_object_twice_is_one(self, write_module: WriteModule) -> None:
        name = write_module(VALID + "\nalias = defs\n")
        assert asset_names(CodeLocation(module=name).load()) == {"numbers"}

    def test_no_such_module(self, code_dir: Path) -> None:
        with pytest.raises(
            tg.DefinitionsLoadError, match=re.escape("code location 'tg_no_such_module': no such module")
        ):
            CodeLocation(module="tg_no_such_module").load()
        with pytest.raises(
            tg.DefinitionsLoadError, match=re.escape("code location 'tg_no_such_pkg.defs': no such module")
        ):
            CodeLocation(module="tg_no_such_pkg.defs").load()

    def test_missing_import_inside_an_existing_module(self, write_module: WriteModule) -> None:
        # the module exists; what it imports does not (and its name is a prefix of the module's)
        name = write_module("import tg_user\n")
        with pytest.raises(tg.DefinitionsLoadError, match=re.escape(f"code location '{name}': import failed")) as info:
            CodeLocation(module=name).load()
        assert "tg_user" in str(info.value)
        assert isinstance(info.value.__cause__, ModuleNotFoundError)

    def test_import_error(self, write_module: WriteModule) -> None:
        name = write_module("raise RuntimeError('warehouse unreachable')\n")
        with pytest.raises(
            tg.DefinitionsLoadError,
            match=re.escape(f"code location '{name}': import failed: RuntimeError('warehouse unreachable')"),
        ) as info:
            CodeLocation(module=name).load()
        assert isinstance(info.value.__cause__, RuntimeError)

    def test_syntax_error(self, write_module: WriteModule) -> None:
        name = write_module("def broken(:\n    pass\n")
        with pytest.raises(
            tg.DefinitionsLoadError, match=re.escape(f"code location '{name}': import failed: SyntaxError")
        ):
            CodeLocation(module=name).load()

    def test_invalid_definitions_raise_the_definition_error(self, write_module: WriteModule) -> None:
        name = write_module(
            """
            import tidegate as tg

            @tg.asset(deps=["b"])
            def a():
                return 1

            @tg.asset(deps=["a"])
            def b():
                return 1

            defs = tg.Definitions(assets=[a, b])
            """
        )
        with pytest.raises(tg.DependencyCycleError, match=re.escape("asset 'a': dependency cycle a -> b -> a")):
            CodeLocation(module=name).load()


class TestFile:
    def test_load_a_file(self, code_dir: Path) -> None:
        path = code_dir / "pipeline.py"
        path.write_text(VALID)
        defs = CodeLocation(file=str(path)).load()
        assert asset_names(defs) == {"numbers"}

    def test_load_a_file_relative_to_the_working_directory(
        self, code_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (code_dir / "jobs").mkdir()
        (code_dir / "jobs" / "pipeline.py").write_text(VALID)
        monkeypatch.chdir(code_dir)
        location = CodeLocation.parse("jobs/pipeline.py")
        assert location.file == "jobs/pipeline.py"
        assert asset_names(location.load()) == {"numbers"}

    def test_a_file_may_import_its_neighbours(self, tmp_path: Path, code_dir: Path) -> None:
        folder = tmp_path / "project"
        folder.mkdir()
        helper = f"tg_helper_{uuid.uuid4().hex[:12]}"
        (folder / f"{helper}.py").write_text("import tidegate as tg\n\n@tg.asset\ndef shared():\n    return 1\n")
        (folder / "definitions.py").write_text(
            f"import tidegate as tg\nfrom {helper} import shared\n\ndefs = tg.Definitions(assets=[shared])\n"
        )
        assert asset_names(CodeLocation(file=str(folder / "definitions.py")).load()) == {"shared"}

    def test_the_module_is_named_after_the_file(self, code_dir: Path) -> None:
        path = code_dir / "pipeline.py"
        path.write_text(VALID + "\nclass Row:\n    pass\n")
        defs = CodeLocation(file=str(path)).load()
        module = sys.modules["pipeline"]
        assert defs.get_asset("numbers").fn.__module__ == "pipeline" and module.__file__ == str(path)
        assert module.Row.__module__ == "pipeline"  # so pickle can find classes the file defines
        assert CodeLocation(file=str(path)).load().get_asset("numbers") is defs.get_asset("numbers")

    def test_a_second_file_of_the_same_name_replaces_the_first(self, code_dir: Path) -> None:
        for folder, source in (("one", VALID), ("two", VALID.replace("numbers", "letters"))):
            (code_dir / folder).mkdir()
            (code_dir / folder / "pipeline.py").write_text(source)
        assert asset_names(CodeLocation(file=str(code_dir / "one" / "pipeline.py")).load()) == {"numbers"}
        assert asset_names(CodeLocation(file=str(code_dir / "two" / "pipeline.py")).load()) == {"letters"}

    @pytest.mark.parametrize(("stem", "taken_by"), [("queue", "Python's standard library"), ("pytest", "pytest")])
    def test_a_file_named_like_another_module_is_refused(self, code_dir: Path, stem: str, taken_by: str) -> None:
        path = code_dir / f"{stem}.py"
        path.write_text(VALID)
        with pytest.raises(tg.DefinitionsLoadError) as info:
            CodeLocation(file=str(path)).load()
        assert str(info.value).startswith(f"code location '{path}': the file is imported as module '{stem}', ")
        assert taken_by in str(info.value) and "rename the file" in str(info.value)
        assert getattr(sys.modules.get(stem), "__file__", None) != str(path)  # nothing shadowed

    def test_attribute(self, code_dir: Path) -> None:
        path = code_dir / "two.py"
        path.write_text(TWO_DEFS.format(first_name="staging", second_name="prod"))
        assert asset_names(CodeLocation.parse(f"{path}:staging").load()) == {"first_asset"}
        with pytest.raises(tg.DefinitionsLoadError, match="several Definitions objects"):
            CodeLocation.parse(str(path)).load()

    def test_no_definitions(self, code_dir: Path) -> None:
        path = code_dir / "empty.py"
        path.write_text("VALUE = 1\n")
        with pytest.raises(
            tg.DefinitionsLoadError, match=re.escape(f"code location '{path}': holds no Definitions object")
        ):
            CodeLocation(file=str(path)).load()

    def test_no_such_file(self, code_dir: Path) -> None:
        path = code_dir / "missing.py"
        with pytest.raises(tg.DefinitionsLoadError, match=re.escape(f"code location '{path}': no such file")):
            CodeLocation(file=str(path)).load()
        with pytest.raises(tg.DefinitionsLoadError, match="no such file"):
            CodeLocation(file=str(code_dir)).load()  # a directory is not a file

    def test_import_error(self, code_dir: Path) -> None:
        path = code_dir / "broken.py"
        path.write_text("import tidegate as tg\n\n1 / 0\n")
        with pytest.raises(
            tg.DefinitionsLoadError, match=re.escape(f"code location '{path}': import failed: ZeroDivisionError")
        ) as info:
            CodeLocation(file=str(path)).load()
        assert isinstance(info.value.__cause__, ZeroDivisionError)

    def test_invalid_definitions_raise_the_definition_error(self, code_dir: Path) -> None:
        path = code_dir / "invalid.py"
        path.write_text(
            textwrap.dedent(
                """
                import tidegate as tg

                @tg.asset
                def report(cleaned):
                    return cleaned

                defs = tg.Definitions(assets=[report])
                """
            )
        )
        with pytest.raises(tg.UnknownDependencyError, match=re.escape("asset 'report': unknown dependency 'cleaned'")):
            CodeLocation(file=str(path)).load()

    def test_a_fixed_file_loads_after_a_failure(self, code_dir: Path) -> None:
        path = code_dir / "fixme.py"
        path.write_text(VALID.replace("def numbers():", "def numbers(missing):"))
        with pytest.raises(tg.UnknownDependencyError, match="asset 'numbers': unknown dependency 'missing'"):
            CodeLocation(file=str(path)).load()
        path.write_text(VALID)
        assert asset_names(CodeLocation(file=str(path)).load()) == {"numbers"}


class TestEnvironment:
    def test_file_from_env(self, code_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = code_dir / "from_env.py"
        path.write_text(VALID)
        monkeypatch.setenv(ENV_VAR, str(path))
        assert CodeLocation.from_env() == CodeLocation(file=str(path))
        assert asset_names(load_definitions()) == {"numbers"}

    def test_module_with_attribute_from_env(self, write_module: WriteModule, monkeypatch: pytest.MonkeyPatch) -> None:
        name = write_module(TWO_DEFS.format(first_name="staging", second_name="prod"))
        monkeypatch.setenv(ENV_VAR, f"{name}:prod")
        assert CodeLocation.from_env() == CodeLocation(module=name, attribute="prod")
        assert asset_names(load_definitions()) == {"second_asset"}

    def test_explicit_location_wins_over_env(self, write_module: WriteModule, monkeypatch: pytest.MonkeyPatch) -> None:
        name = write_module(VALID)
        monkeypatch.setenv(ENV_VAR, "tg_no_such_module")
        assert asset_names(load_definitions(CodeLocation(module=name))) == {"numbers"}

    @pytest.mark.parametrize("value", [None, ""])
    def test_no_location(self, code_dir: Path, monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
        if value is not None:
            monkeypatch.setenv(ENV_VAR, value)
        with pytest.raises(tg.DefinitionsLoadError, match=f"no code location: .*or set {ENV_VAR}"):
            load_definitions()

    def test_export_round_trips(self, code_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(ENV_VAR, "placeholder")  # so that monkeypatch restores it
        (code_dir / "pkgdir").mkdir()
        path = code_dir / "pkgdir" / "exported.py"
        path.write_text(VALID)
        monkeypatch.chdir(code_dir)
        CodeLocation(file="pkgdir/exported.py", attribute="defs").export()
        assert os.environ[ENV_VAR] == f"{path.resolve()}:defs"  # absolute: children may chdir
        monkeypatch.chdir(code_dir.parent)
        assert asset_names(load_definitions()) == {"numbers"}

        CodeLocation(module="etl.definitions").export()
        assert os.environ[ENV_VAR] == "etl.definitions"
