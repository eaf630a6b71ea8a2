"""The public surface: ``__all__`` is honest, documented, and the exception tree is whole."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import client
from client import _exceptions
from client.cli import EXIT_CODES_HELP, exit_code_for


def test_all_names_exist_and_public_ones_are_documented() -> None:
    assert sorted(client.__all__) == sorted(set(client.__all__))
    for name in client.__all__:
        value = getattr(client, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name} has no docstring"
    # Every public class and function the package holds is exported (submodules are not).
    public = {n for n, v in vars(client).items()
              if not n.startswith("_") and (inspect.isclass(v) or inspect.isfunction(v))}
    assert public <= set(client.__all__), public - set(client.__all__)


def test_every_exception_is_a_client_error_and_drawn_in_the_tree() -> None:
    classes = [v for v in vars(_exceptions).values()
               if inspect.isclass(v) and issubclass(v, Exception)]
    tree = _exceptions.__doc__ or ""
    for cls in classes:
        assert issubclass(cls, client.ClientError)
        assert cls.__name__ in tree, f"{cls.__name__} missing from the docstring tree"
        assert cls.__name__ in client.__all__


def test_results_are_frozen_values() -> None:
    det = client.Detection(box=(1.0, 2.0, 3.0, 4.0), score=0.5, label="a", label_id=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        det.score = 0.9  # type: ignore[misc]
    result = client.ImageResult(detections=(det,), image_size=(10, 20))
    assert result.to_dict() == {"image_size": [10, 20], "detections": [
        {"box": [1.0, 2.0, 3.0, 4.0], "score": 0.5, "label": "a", "label_id": 1}]}
    assert hash(det) == hash(client.Detection((1.0, 2.0, 3.0, 4.0), 0.5, "a", 1))


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (client.ConfigError("x"), 2),
        (client.ServerUnreachable("x"), 3),
        (client.RequestTimeout("x"), 3),
        (client.ModelNotFound("x"), 4),
        (client.ModelNotReady("x"), 4),
        (client.UnreadableInput("x"), 5),
        (client.BadRequest("x"), 5),
        (client.ServerError("x"), 6),
        (client.Unauthorized("x"), 7),
        (client.Overloaded("x"), 8),
        (RuntimeError("x"), 1),
    ],
)
def test_exit_codes_are_the_documented_ones(error: Exception, code: int) -> None:
    assert exit_code_for(error) == code
    assert f"\n  {code}  " in f"\n{EXIT_CODES_HELP}"
