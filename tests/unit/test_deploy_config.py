"""The deploy keeps its stage: samconfig.toml carries each environment's full parameter overrides,
and the README's `sam deploy` commands do not clobber them.

SAM replaces samconfig's whole `parameter_overrides` with a command line's `--parameter-overrides`
(aws-sam-cli issue 2380), so a README command that passes a few overrides deploys `Stage`'s
default (dev) into padev or prod. The overrides are read the way SAM reads them: space-separated
`Key=Value` (or `ParameterKey=K,ParameterValue=V`) with optional quotes.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
STAGES = {"default": "dev", "padev": "padev", "prod": "prod"}


class _CfnLoader(yaml.SafeLoader):
    """Reads template.yaml with its short-form intrinsics (`!Ref`, `!If`, ...) as plain values."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def parse_overrides(text: str) -> dict[str, str]:
    """`parameter_overrides` as SAM reads it: `K=V K2="v 2"` or `ParameterKey=K,ParameterValue=V`."""
    overrides: dict[str, str] = {}
    for token in shlex.split(text):
        long_form = re.fullmatch(r"ParameterKey=([^,]+),ParameterValue=(.*)", token)
        key, sep, value = (long_form.group(1), "=", long_form.group(2)) if long_form else token.partition("=")
        if not sep or not key:
            raise ValueError(f"parameter override {token!r}: expected Key=Value")
        overrides[key] = value
    return overrides


def deploy_commands(readme: str) -> list[str]:
    """Every `sam deploy` command of the ```sh blocks under "## Deploying", continuations joined."""
    section = re.search(r"^## Deploying\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    assert section, 'README.md: no "## Deploying" section'
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", section.group(1), re.S | re.M):
        for command in re.sub(r"\\\n", " ", block).splitlines():
            command = command.split(" #", 1)[0].strip()
            if re.search(r"\bsam deploy\b", command):
                commands.append(command)
    return commands


def command_overrides(command: str) -> dict[str, str] | None:
    """The `--parameter-overrides` a command passes (None: it passes none)."""
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word == "--parameter-overrides":
            values = []
            for value in words[i + 1 :]:
                if value.startswith("--"):
                    break
                values.append(value)
            return parse_overrides(" ".join(shlex.quote(v) for v in values))
        if word.startswith("--parameter-overrides="):
            return parse_overrides(word.partition("=")[2])
    return None


def config_env(command: str) -> str:
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word == "--config-env" and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--config-env="):
            return word.partition("=")[2]
    return "default"


@pytest.fixture(scope="module")
def samconfig() -> dict:
    return tomllib.loads((ROOT / "samconfig.toml").read_text())


@pytest.fixture(scope="module")
def required_parameters() -> list[str]:
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)
    return sorted(name for name, spec in template["Parameters"].items() if "Default" not in spec)


def env_overrides(samconfig: dict, env: str) -> dict[str, str]:
    text = samconfig[env]["deploy"]["parameters"]["parameter_overrides"]
    if isinstance(text, list):  # SAM also takes a TOML list of Key=Value strings
        text = " ".join(text)
    return parse_overrides(text)


# -- the parsers read what SAM reads ---------------------------------------------------------------


def test_overrides_parse_quoted_unquoted_and_long_forms():
    parsed = parse_overrides("Stage=\"padev\" Bucket=b 'Name=with space' ParameterKey=Topic,ParameterValue=arn:x")
    assert parsed == {"Stage": "padev", "Bucket": "b", "Name": "with space", "Topic": "arn:x"}


def test_an_override_without_an_equals_sign_is_refused():
    with pytest.raises(ValueError, match="Stage"):
        parse_overrides("Stage")


def test_the_old_readme_command_is_caught_clobbering_stage():
    # Given the command the README used to carry (issue 15)
    readme = (
        "## Deploying\n\n```sh\nmake validate   # build\n.venv-sam/bin/sam deploy --config-env padev \\\n"
        "    --parameter-overrides MongoUriSecretArn=arn:x \\\n                          DocumentsBucketName=b\n```\n"
        "\n## Next\n\n```sh\nsam deploy --parameter-overrides Stage=prod\n```\n"
    )
    # When its deploy commands are read
    commands = deploy_commands(readme)
    # Then only the Deploying section's is seen, with overrides that lack Stage
    assert len(commands) == 1 and config_env(commands[0]) == "padev"
    assert command_overrides(commands[0]) == {"MongoUriSecretArn": "arn:x", "DocumentsBucketName": "b"}


# -- samconfig.toml ------------------------------------------------------------------------------


@pytest.mark.parametrize("env", STAGES)
def test_each_environment_names_its_own_stage(samconfig, env):
    assert env_overrides(samconfig, env).get("Stage") == STAGES[env]


@pytest.mark.parametrize("env", STAGES)
def test_each_environment_sets_every_parameter_without_a_default(samconfig, required_parameters, env):
    assert required_parameters, "template.yaml: expected parameters without a Default"
    overrides = env_overrides(samconfig, env)
    missing = [name for name in required_parameters if not overrides.get(name)]
    assert not missing, f"samconfig.toml [{env}]: no value for {missing}"


@pytest.mark.parametrize("env", STAGES)
def test_each_environment_overrides_only_template_parameters(samconfig, env):
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)
    unknown = set(env_overrides(samconfig, env)) - set(template["Parameters"])
    assert not unknown, f"samconfig.toml [{env}]: not template parameters: {sorted(unknown)}"


@pytest.mark.parametrize("env", STAGES)
def test_account_specific_values_are_named_placeholders_on_the_environments_own_resources(samconfig, env):
    overrides = env_overrides(samconfig, env)
    secret = overrides["MongoUriSecretArn"]
    assert re.fullmatch(rf"arn:aws:secretsmanager:[a-z0-9-]+:(ACCOUNT_ID|\d{{12}}):secret:\S*{STAGES[env]}\S*", secret)
    # one environment's stack never reads another's secret, bucket or trigger
    for other in set(STAGES.values()) - {STAGES[env]}:
        assert not any(re.search(rf"\b{other}\b", value) for value in overrides.values()), other


def test_the_readme_names_every_placeholder_the_samconfig_carries(samconfig):
    readme = (ROOT / "README.md").read_text()
    placeholders = {
        token
        for env in STAGES
        for value in env_overrides(samconfig, env).values()
        for token in re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]*ID\b", value)
    }
    assert placeholders, "samconfig.toml: expected placeholders such as ACCOUNT_ID"
    section = readme.split("## Deploying", 1)[1].split("\n## ", 1)[0]
    assert not [p for p in placeholders if p not in section]


# -- the README's deploy commands ------------------------------------------------------------------


def test_the_readme_deploys_each_environment_without_clobbering_its_stage(samconfig):
    commands = deploy_commands((ROOT / "README.md").read_text())
    assert commands, 'README.md "## Deploying": no `sam deploy` command'
    for command in commands:
        env = config_env(command)
        assert env in samconfig, f"{command!r}: no [{env}] environment in samconfig.toml"
        overrides = command_overrides(command)
        # A command line's overrides replace samconfig's: allowed only when it repeats the stage
        assert overrides is None or overrides.get("Stage") == STAGES.get(env, env), command
