"""The docs say what the code does: the hook reference is the specs, and the
plugin walkthrough's code is the example package in tests/plugin_example.

These read files from the repository, so they run (and fail when out of
date) whether or not the example package is installed."""
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
EXAMPLE = ROOT / "tests" / "plugin_example"
#: A fenced block: its language and its text.
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_hooks", DOCS / "gen_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _blocks(page: Path) -> list[tuple[str, str]]:
    return [(language, text) for language, text in FENCE.findall(page.read_text())]


def _example_files() -> dict[str, str]:
    """Path (relative to tests/plugin_example) -> text of every file the walkthrough shows."""
    paths = [EXAMPLE / "setup.cfg", EXAMPLE / "pyproject.toml", EXAMPLE / "recipe.toml",
             *sorted((EXAMPLE / "micronet_example").glob("*.py"))]
    return {str(path.relative_to(EXAMPLE)): path.read_text() for path in paths}


def test_the_hook_reference_is_generated_from_the_specs_as_they_are():
    generator = _load_generator()
    assert (DOCS / "hooks.md").read_text() == generator.render(), \
        "docs/hooks.md is out of date: run `python docs/gen_hooks.py`"


def test_the_hook_reference_lists_every_hook_with_its_signature():
    from micronet import hookspecs

    page = (DOCS / "hooks.md").read_text()
    specs = [name for name in vars(hookspecs) if name.startswith("micronet_")]
    assert len(specs) == 11
    for name in specs:
        assert f"### `{name}`" in page and f"def {name}(" in page, name
    # types as hookspecs.py writes them, e.g. the observer of a finished step
    assert "    result: Result | None,\n    error: BaseException | None,\n) -> None: ..." in page
    assert "def micronet_register_weighted_layers() -> list[WeightedLayer]: ..." in page


def test_the_walkthrough_shows_every_file_of_the_example_package_exactly():
    blocks = [text for _, text in _blocks(DOCS / "writing-plugins.md")]
    files = _example_files()
    assert set(files) >= {"setup.cfg", "pyproject.toml", "recipe.toml", "micronet_example/__init__.py",
                          "micronet_example/layers.py", "micronet_example/steps.py",
                          "micronet_example/report.py"}
    for path, text in files.items():
        assert text in blocks, f"docs/writing-plugins.md does not show tests/plugin_example/{path} as it is"


def test_every_python_block_of_the_walkthrough_is_tested_code():
    files = set(_example_files().values())
    python = [text for language, text in _blocks(DOCS / "writing-plugins.md") if language == "python"]
    assert len(python) == 4
    for text in python:
        assert text in files, f"a Python block of docs/writing-plugins.md is no file of the example:\n{text}"
