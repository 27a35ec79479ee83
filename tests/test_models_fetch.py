"""The model fetch: clear errors for missing files, idempotent conversion, tamper detection."""
from __future__ import annotations

import pytest
from safetensors.torch import load_file

from fewshot_core.errors import ModelFileMissingError
from fewshot_core.models import PARTS, fetch_all, require_part


def test_missing_part_names_path_and_command(tmp_path):
    with pytest.raises(ModelFileMissingError) as info:
        require_part("mtcnn", tmp_path)
    message = str(info.value)
    assert str(tmp_path / PARTS["mtcnn"].filename) in message
    assert "python -m fewshot_core.models fetch" in message and "facenet-pytorch==2.6.0" in message


def test_fetch_is_idempotent_and_repairs_tampering(tmp_path, model_dir):
    paths = fetch_all(tmp_path, ["mtcnn"])
    first = paths["mtcnn"].stat().st_mtime_ns
    assert set(load_file(str(paths["mtcnn"]))) >= {"pnet.conv1.weight", "onet.conv1.weight"} or len(
        load_file(str(paths["mtcnn"]))) > 10
    again = fetch_all(tmp_path, ["mtcnn"])
    assert again["mtcnn"].stat().st_mtime_ns == first  # untouched when current
    paths["mtcnn"].write_bytes(paths["mtcnn"].read_bytes()[:-8] + b"corrupt!")
    repaired = fetch_all(tmp_path, ["mtcnn"])
    assert repaired["mtcnn"].stat().st_mtime_ns != first
    assert len(load_file(str(repaired["mtcnn"]))) > 10
