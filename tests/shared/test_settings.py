"""Settings plumbing: list flags split on commas like env vars, one-line validation errors, per-profile defaults
in --help, settings handed to another process through env vars, and the README's list of env prefixes."""

from __future__ import annotations

import argparse
import importlib
import os
import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError
from shared.settings import (
    FloatList,
    IntList,
    PathList,
    StrList,
    add_settings_arguments,
    settings_env,
    settings_from_args,
    split_commas,
)
from student_trainer.detect_settings import DetectSettings, ProposalSettings
from student_trainer.transfer_settings import TransferSettings
from teacher_server.settings import ServeSettings

REPO = Path(__file__).resolve().parents[2]


def _parse(cls: type[BaseSettings], *argv: str) -> BaseSettings:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, cls)
    return settings_from_args(cls, parser.parse_args(list(argv)))


@pytest.mark.parametrize(("value", "expected"), [
    ("a,b", ["a", "b"]), (" a , ,b ", ["a", "b"]), (["a,b", "c"], ["a", "b", "c"]), (["a"], ["a"]), ([1, 2], [1, 2]),
])
def test_split_commas(value, expected):
    assert split_commas(value) == expected


def test_list_flag_splits_on_commas_like_the_env_var(tmp_path, monkeypatch):
    a, b, c = (str(tmp_path / n) for n in "abc")
    assert _parse(ServeSettings, "--stores", f"{a},{b}").stores == [a, b]
    assert _parse(ServeSettings, "--stores", a, f"{b},{c}").stores == [a, b, c]
    monkeypatch.setenv("TEACHER_STORES", f"{a},{b}")
    assert _parse(ServeSettings).stores == [a, b]
    assert _parse(TransferSettings, "--modality", "hha", "--manifest", "m", "--out", "o",
                  "--lr-milestones", "0.5,0.8").lr_milestones == [0.5, 0.8]


class _Lists(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LISTS_")

    names: StrList = []
    sizes: IntList = []
    rates: FloatList = []
    paths: PathList = []


def test_shared_list_types_read_commas_from_env_and_flags(monkeypatch):
    monkeypatch.setenv("LISTS_SIZES", "1, 2")
    monkeypatch.setenv("LISTS_PATHS", "a,b/c")
    s = _parse(_Lists, "--names", "x,y", "z", "--rates", "0.5,1e-3")
    assert (s.names, s.sizes, s.rates, s.paths) == (["x", "y", "z"], [1, 2], [0.5, 1e-3], [Path("a"), Path("b/c")])
    assert settings_env(s)["LISTS_SIZES"] == "1,2"  # comma-joined back for a child process


def test_model_validator_error_is_one_readable_line():
    with pytest.raises(ConfigError) as e:
        _parse(DetectSettings, "--modality", "hha", "--manifest", "m", "--out", "o", "--init", "transfer")
    msg = str(e.value)
    assert msg == "invalid settings: --init transfer needs --trunk-checkpoint", msg  # no "--?", no settings dict


def test_field_errors_name_flag_and_env_var():
    with pytest.raises(ConfigError) as e:
        _parse(ServeSettings, "--stores", "s", "--port", "70000", "--max-batch", "0")
    msg = str(e.value)
    assert "--port / TEACHER_PORT:" in msg and "(got '70000')" in msg and "--max-batch / TEACHER_MAX_BATCH:" in msg


def test_help_shows_the_profile_defaults(capsys):
    parser = argparse.ArgumentParser(prog="x")
    add_settings_arguments(parser, DetectSettings)
    parser.print_help()
    text = " ".join(capsys.readouterr().out.split())
    assert "default by --profile: tiny edge_boxes, quick edge_boxes, full hybrid" in text
    assert "default by --profile: tiny 30, quick 500, full 40000" in text  # iterations


def test_proposals_follow_the_profile_like_detect():
    for profile in ("tiny", "quick", "full"):
        detect = DetectSettings(modality="hha", manifest="m", out="o", profile=profile)
        assert ProposalSettings(manifest="m", profile=profile).method == detect.proposal_method
    assert ProposalSettings(manifest="m").method == DetectSettings(modality="hha", manifest="m",
                                                                   out="o").proposal_method == "edge_boxes"
    assert ProposalSettings(manifest="m", profile="full", method="edge_boxes").method == "edge_boxes"  # flag wins


def test_settings_env_rebuilds_every_field(tmp_path, monkeypatch):
    """Every field, the secret included, survives the trip through env vars (what `serve --workers N` does)."""
    defaults = ServeSettings(stores=[str(tmp_path / "a")])
    changed = {}
    for name in ServeSettings.model_fields:  # a non-default value for every field that has one
        value = getattr(defaults, name)
        if isinstance(value, bool):
            changed[name] = not value
        elif isinstance(value, int):
            changed[name] = value + 1 if name != "port" else 8123
        elif isinstance(value, float):
            changed[name] = value * 2
        elif name == "token":
            changed[name] = "s3cret, with a comma"
        elif name == "log_level":
            changed[name] = "debug"
        elif name == "host":
            changed[name] = "0.0.0.0"
    s = ServeSettings(stores=[str(tmp_path / "a"), str(tmp_path / "b")], **changed)
    for key in list(os.environ):
        if key.startswith("TEACHER_"):
            monkeypatch.delenv(key)
    env = settings_env(s)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    again = ServeSettings()  # type: ignore[call-arg]
    assert again.model_dump() == s.model_dump() and again.token.get_secret_value() == "s3cret, with a comma"
    assert env["TEACHER_STORES"] == f"{tmp_path / 'a'},{tmp_path / 'b'}"


def test_settings_env_refuses_a_list_item_with_a_comma(tmp_path):
    s = ServeSettings(stores=[str(tmp_path / "a")]).model_copy(update={"stores": [str(tmp_path / "a,b")]})
    with pytest.raises(ConfigError, match="contains a comma"):
        settings_env(s)


def _all_settings_classes() -> list[type[BaseSettings]]:
    for cli in ("student_trainer.cli", "teacher_server.cli", "teacher_server.nginx_lb", "xmodal_data.cli",
                "xmodal_pipeline.demo", "xmodal_pipeline.recipes.cli"):
        importlib.import_module(cli)  # each command-line module imports its settings classes
    found, todo = [], list(BaseSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.split(".")[0] in {"shared", "student_trainer", "teacher_server", "xmodal_data",
                                            "xmodal_pipeline"} and cls.model_config.get("env_prefix"):
            found.append(cls)  # (a base without a prefix, TrainSettings, is no command)
    return found


def test_readme_lists_every_env_prefix():
    readme = (REPO / "README.md").read_text()
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]*_)`", readme))
    prefixes = {cls.model_config["env_prefix"] for cls in _all_settings_classes()}
    assert len(prefixes) >= 13
    assert sorted(prefixes - listed) == []
