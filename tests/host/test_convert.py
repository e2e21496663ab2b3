"""Conversion: optimisation aliases, integer-only verification, missing SavedModel."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.convert import (
    convert_variant,
    integer_only_offenders,
    resolve_optimization,
    verify_integer_only,
)
from host.errors import ConfigError, ConversionError, NotIntegerOnly


def test_default_needs_no_warning(recwarn: pytest.WarningsRecorder) -> None:
    assert resolve_optimization("DEFAULT") == "DEFAULT"
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]


@pytest.mark.parametrize("name", ["OPTIMIZE_FOR_LATENCY", "OPTIMIZE_FOR_SIZE", "optimize_for_size"])
def test_deprecated_optimisations_are_aliases_with_a_warning(name: str) -> None:
    with pytest.warns(FutureWarning, match="deprecated.*DEFAULT"):
        assert resolve_optimization(name) == "DEFAULT"


def test_unknown_optimisation_is_refused() -> None:
    with pytest.raises(ConfigError, match="choose one of"):
        resolve_optimization("FASTEST")


def test_missing_saved_model_says_run_train(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="host train"):
        convert_variant(tmp_path / "saved_model" / "1", "float32")


def test_int8_artifact_is_integer_only(artifacts: Path) -> None:
    data = (artifacts / "model_int8.tflite").read_bytes()
    assert integer_only_offenders(data) == []
    verify_integer_only(data)


def test_float_model_fails_the_integer_only_check_loudly(artifacts: Path) -> None:
    data = (artifacts / "model_float32.tflite").read_bytes()
    with pytest.raises(NotIntegerOnly) as e:
        verify_integer_only(data)
    assert any("float32" in o for o in e.value.offenders)
    assert "not integer-only" in str(e.value)
