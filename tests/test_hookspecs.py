"""Meta-tests of the contract: every hook is documented and exercised."""
import inspect
import pathlib

from micronet import hookspecs

SPECS = [name for name, fn in vars(hookspecs).items() if name.startswith("micronet_") and callable(fn)]
TESTS = pathlib.Path(__file__).parent


def test_every_hook_is_prefixed_and_documented():
    assert len(SPECS) >= 10
    for name in SPECS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert ":return:" in doc, f"{name} does not say what it returns"
        assert len(doc.splitlines()) >= 3, f"{name} is not documented"


def test_every_hook_is_exercised_by_a_test():
    sources = "\n".join(p.read_text() for p in TESTS.rglob("*.py") if p.name != "test_hookspecs.py")
    for name in SPECS:
        assert name in sources, f"no test implements or calls {name}"
