from __future__ import annotations

import reproloader


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(reproloader) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(reproloader, name)).__name__ == "module"}
    assert set(reproloader.__all__) - {"__version__"} == public - modules


def test_public_names_repr_under_the_package() -> None:
    for name in reproloader.__all__:
        obj = getattr(reproloader, name)
        if not isinstance(obj, str):
            assert obj.__module__ == "reproloader", name
