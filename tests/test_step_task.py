"""The arguments a step message may carry."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.step_task import InvalidArguments, step_arguments

ENVELOPE = {"tipo_evento": "iniciar_coleta"}


@pytest.mark.parametrize("args, kwargs, expected", [
    ((ENVELOPE,), {}, (ENVELOPE, {})),
    ((ENVELOPE, {"a": 1}), {}, (ENVELOPE, {"a": 1})),
    ((ENVELOPE,), {"options": {"a": 1}}, (ENVELOPE, {"a": 1})),
    ((), {"entrada": ENVELOPE, "options": None}, (ENVELOPE, {})),
])
def test_the_ways_a_step_is_called(args: tuple[Any, ...], kwargs: dict[str, Any],
                                   expected: tuple[Any, dict[str, Any]]) -> None:
    assert step_arguments(args, kwargs) == expected


@pytest.mark.parametrize("args, kwargs, message", [
    ((ENVELOPE,), {"unexpected": 1}, "unexpected keyword"),
    ((ENVELOPE, {}, {}), {}, "at most 2"),
    ((), {}, "missing"),
    ((ENVELOPE,), {"entrada": ENVELOPE}, "given twice"),
    ((ENVELOPE,), {"options": [1]}, "must be an object"),
])
def test_wrong_step_arguments_are_named(args: tuple[Any, ...], kwargs: dict[str, Any],
                                        message: str) -> None:
    with pytest.raises(InvalidArguments, match=message):
        step_arguments(args, kwargs)
