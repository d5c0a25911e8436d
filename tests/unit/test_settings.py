"""The one settings module, fed with what the template really sets.

Each function's `Environment.Variables` (Globals + its own), with every `!Ref`/`!GetAtt`/`!Sub`
resolved to a value of the kind CloudFormation would put there, must validate into that
function's settings; every variable the template sets must be one the settings read (or a
platform variable), and every variable the settings require must be set by the template.
"""

from __future__ import annotations

import pytest
import yaml

from distiller.api.auth import AuthSettings
from distiller.api.rate_limit import RateLimit
from distiller.relay.stream import StartAt
from distiller.settings import (
    ApiSettings,
    DispatcherSettings,
    DistillerSettings,
    EndpointHealthSettings,
    HealthSweepSettings,
    MongoSettings,
    RelaySettings,
    SettingsError,
)
from tests.unit.test_template import ROOT, CfnLoader

SETTINGS_OF = {
    "DistillerFunction": (MongoSettings, DistillerSettings),
    "DispatcherFunction": (MongoSettings, DispatcherSettings, EndpointHealthSettings),
    "HealthFunction": (MongoSettings, HealthSweepSettings, EndpointHealthSettings),
    "ApiFunction": (MongoSettings, ApiSettings),
    "RelayFunction": (MongoSettings, RelaySettings),
}
#: Read by powertools or kept for operators, not by our settings.
PLATFORM = {
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
    "POWERTOOLS_TRACER_CAPTURE_RESPONSE",
    "POWERTOOLS_TRACER_CAPTURE_ERROR",
    "STAGE",
}
#: Set by the template but not read by that function, and why.
GRANTED_NOT_READ = {
    ("RelayFunction", "CLAIM_CHECK_BUCKET"): "granted for claim-checking oversize changes; the relay parks them today",
}
#: Sample values for parameters without a default (what a deploy must pass).
REQUIRED_PARAMETERS = {
    "MongoUriSecretArn": "arn:aws:secretsmanager:us-east-2:123456789012:secret:mongo-AbCdEf",
    "DocumentsBucketName": "pa-uploads",
}


@pytest.fixture(scope="module")
def template():
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)


def resolve(value, template):
    """A CloudFormation value as the deployed function would see it."""
    if isinstance(value, str):
        return value
    (tag, argument), *_ = value.items()
    resources, parameters = template["Resources"], template.get("Parameters", {})
    if tag == "!Ref":
        if argument in parameters:
            return str(parameters[argument].get("Default", REQUIRED_PARAMETERS.get(argument, "")))
        kind = resources[argument]["Type"]
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.us-east-2.amazonaws.com/123456789012/{argument}"
        if kind == "AWS::S3::Bucket":
            return argument.lower()
        return f"arn:aws:{argument}"
    if tag == "!GetAtt":
        return f"arn:aws:{argument}"
    if tag == "!Sub":
        text = argument if isinstance(argument, str) else argument[0]
        return text.replace("${", "").replace("}", "")
    if tag == "!If":
        return resolve(argument[1], template)
    raise AssertionError(f"unexpected {tag} in an environment variable")


def environment(template, function: str) -> dict[str, str]:
    variables = {
        **template["Globals"]["Function"]["Environment"]["Variables"],
        **template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {}),
    }
    return {name: resolve(value, template) for name, value in variables.items()}


@pytest.mark.parametrize("function", sorted(SETTINGS_OF))
def test_the_templates_environment_validates_into_each_functions_settings(template, function):
    env = environment(template, function)

    for settings in SETTINGS_OF[function]:
        settings.from_env(env)  # raises SettingsError naming the variable otherwise


@pytest.mark.parametrize("function", sorted(SETTINGS_OF))
def test_every_variable_the_template_sets_is_read_and_every_required_one_is_set(template, function):
    env = environment(template, function)
    read = {name: required for settings in SETTINGS_OF[function] for name, required in settings.variables().items()}

    unread = {name for name in env if name not in read and name not in PLATFORM}
    assert unread == {name for (f, name) in GRANTED_NOT_READ if f == function}
    missing = {name for name, required in read.items() if required and not env.get(name)}
    assert missing == set()


def test_the_deployed_api_reads_the_jwt_variables_the_template_sets(template):
    env = {**environment(template, "ApiFunction"), "JWT_MAX_LIFETIME_SECONDS": "300", "JWT_LEEWAY_SECONDS": "5"}

    settings = ApiSettings.from_env(env)

    assert settings.auth == AuthSettings(300, 5)
    assert settings.request_limit == RateLimit(600, 60) and settings.replay_limit == RateLimit(30, 60)


@pytest.mark.parametrize(
    ("settings", "env", "message"),
    [
        pytest.param(MongoSettings, {}, "MONGODB_URI_SECRET: required", id="missing-names-the-variable"),
        pytest.param(
            DispatcherSettings,
            {"RETRY_QUEUE_URL": "r", "DELIVERY_DLQ_URL": "d", "DISPATCH_CONCURRENCY": "0"},
            "DISPATCH_CONCURRENCY: Input should be greater than or equal to 1",
            id="out-of-range",
        ),
        pytest.param(
            DispatcherSettings,
            {"RETRY_QUEUE_URL": "r", "DELIVERY_DLQ_URL": "d", "ALLOW_PRIVATE_ENDPOINTS": "perhaps"},
            "ALLOW_PRIVATE_ENDPOINTS:",
            id="not-a-boolean",
        ),
        pytest.param(
            ApiSettings,
            {"DELIVERY_QUEUE_URL": "q", "DOCUMENTS_BUCKET": "b", "API_RATE_LIMIT": "lots"},
            "API_RATE_LIMIT: invalid rate limit 'lots'",
            id="bad-rate-limit",
        ),
        pytest.param(
            RelaySettings,
            {"INGEST_QUEUE_URL": "q", "INGEST_DLQ_URL": "d", "RELAY_START_AT": "yesterday"},
            "RELAY_START_AT:",
            id="bad-start",
        ),
        pytest.param(
            DistillerSettings,
            {"DELIVERY_QUEUE_URL": "q", "DOCUMENTS_BUCKET": "b"},
            "INGEST_DLQ_URL: required (URL of the ingest dead-letter queue)",
            id="missing-says-what-it-is",
        ),
        pytest.param(
            EndpointHealthSettings,
            {"HELD_RETENTION_DAYS": "15"},
            "HELD_RETENTION_DAYS: Input should be less than or equal to 14",
            id="held-past-the-dead-letter-window",
        ),
        pytest.param(
            EndpointHealthSettings,
            {"HEALTH_PROBE_SECONDS": "30"},
            "HEALTH_PROBE_SECONDS: Input should be greater than or equal to 60",
            id="probe-faster-than-the-sweep",
        ),
        pytest.param(
            EndpointHealthSettings,
            {"PAUSE_AFTER_DEAD_LETTERS": "-1"},
            "PAUSE_AFTER_DEAD_LETTERS: Input should be greater than or equal to 0",
            id="negative-pause-count",
        ),
        pytest.param(
            EndpointHealthSettings,
            {"PAUSE_AFTER_FAILING_HOURS": "a day"},
            "PAUSE_AFTER_FAILING_HOURS:",
            id="pause-hours-not-a-number",
        ),
        pytest.param(
            HealthSweepSettings,
            {"DELIVERY_QUEUE_URL": "q"},
            "DELIVERY_DLQ_URL: required",
            id="sweep-needs-the-dead-letter-queue",
        ),
    ],
)
def test_a_bad_setting_fails_naming_the_variable(settings, env, message):
    with pytest.raises(SettingsError) as error:
        settings.from_env(env)

    assert message in str(error.value)


def test_empty_means_unset_and_values_are_typed():
    env = {"INGEST_QUEUE_URL": " q ", "INGEST_DLQ_URL": "d", "RELAY_START_AT": "", "RELAY_MAX_SECONDS": "12.5"}

    settings = RelaySettings.from_env(env)

    assert (settings.ingest_queue_url, settings.start_at, settings.max_seconds) == ("q", None, 12.5)
    assert RelaySettings.from_env({**env, "RELAY_START_AT": "now"}).start_at == StartAt()
    assert DispatcherSettings.from_env(
        {"RETRY_QUEUE_URL": "r", "DELIVERY_DLQ_URL": "d", "ALLOW_PRIVATE_ENDPOINTS": "true"}
    ).allow_private_endpoints


@pytest.mark.parametrize(
    ("variable", "parameter"),
    [
        ("PAUSE_AFTER_DEAD_LETTERS", "PauseAfterDeadLetters"),
        ("PAUSE_AFTER_FAILING_HOURS", "PauseAfterFailingHours"),
        ("HEALTH_PROBE_SECONDS", "HealthProbeSeconds"),
        ("HELD_RETENTION_DAYS", "HeldRetentionDays"),
    ],
)
def test_the_stack_accepts_exactly_the_endpoint_health_values_the_settings_accept(template, variable, parameter):
    """A value CloudFormation lets through must not fail the functions' cold start, and the reverse."""
    spec = template["Parameters"][parameter]
    field = {f.alias: name for name, f in EndpointHealthSettings.model_fields.items()}[variable]

    def accepted(value: float) -> bool:
        try:
            EndpointHealthSettings.from_env({variable: str(value)})
        except SettingsError as error:
            assert variable in str(error)
            return False
        return True

    assert getattr(EndpointHealthSettings(), field) == spec["Default"]
    assert accepted(spec["MinValue"]) and not accepted(spec["MinValue"] - 1)
    if "MaxValue" in spec:
        assert accepted(spec["MaxValue"]) and not accepted(spec["MaxValue"] + 1)
    else:
        assert accepted(10**6)
