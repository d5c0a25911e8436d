"""template.yaml wiring: the queues, redrives and event sources the code relies on."""

import re
from pathlib import Path

import pytest
import yaml

from distiller.adapters.secrets import DEFAULT_PREFIX
from distiller_tools.local.pipeline import QUEUES

ROOT = Path(__file__).resolve().parents[2]


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation short tags kept as {"!Tag": value}."""


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {f"!{suffix}": value}


CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def resources():
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)["Resources"]


LOGICAL = {
    "ingest": "IngestQueue",
    "ingest-dlq": "IngestDeadLetterQueue",
    "delivery": "DeliveryQueue",
    "retry": "RetryQueue",
    "delivery-dlq": "DeliveryDeadLetterQueue",
}


def test_local_pipeline_creates_the_queues_the_stack_defines(resources):
    queues = {name for name, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
    assert queues == set(LOGICAL.values())
    for name, dead_letter in QUEUES.items():
        redrive = resources[LOGICAL[name]]["Properties"].get("RedrivePolicy")
        if dead_letter is None:
            assert redrive is None
        else:
            assert redrive["deadLetterTargetArn"] == {"!GetAtt": f"{LOGICAL[dead_letter]}.Arn"}


@pytest.mark.parametrize(
    ("function", "queues"),
    [("DistillerFunction", ["IngestQueue"]), ("DispatcherFunction", ["DeliveryQueue", "RetryQueue"])],
)
def test_sqs_sources_report_batch_item_failures_and_visibility_is_6x_timeout(resources, function, queues):
    props = resources[function]["Properties"]
    sources = [e["Properties"] for e in props["Events"].values() if e["Type"] == "SQS"]
    assert sorted(s["Queue"]["!GetAtt"] for s in sources) == sorted(f"{q}.Arn" for q in queues)
    for source in sources:
        assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    for queue in queues:
        assert resources[queue]["Properties"]["VisibilityTimeout"] >= 6 * props["Timeout"]


def test_dead_letter_queues_outlive_their_sources(resources):
    for source, dlq in [
        ("IngestQueue", "IngestDeadLetterQueue"),
        ("DeliveryQueue", "DeliveryDeadLetterQueue"),
        ("RetryQueue", "DeliveryDeadLetterQueue"),
    ]:
        assert (
            resources[dlq]["Properties"]["MessageRetentionPeriod"]
            > resources[source]["Properties"]["MessageRetentionPeriod"]
        )


def test_functions_get_the_queue_urls_their_settings_require(resources):
    distiller = resources["DistillerFunction"]["Properties"]["Environment"]["Variables"]
    dispatcher = resources["DispatcherFunction"]["Properties"]["Environment"]["Variables"]
    assert distiller["DELIVERY_QUEUE_URL"] == {"!Ref": "DeliveryQueue"}
    assert distiller["INGEST_DLQ_URL"] == {"!Ref": "IngestDeadLetterQueue"}
    assert dispatcher["RETRY_QUEUE_URL"] == {"!Ref": "RetryQueue"}
    assert dispatcher["DELIVERY_DLQ_URL"] == {"!Ref": "DeliveryDeadLetterQueue"}


@pytest.fixture(scope="module")
def template():
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)


def test_each_ingest_path_is_switchable(template):
    resources = template["Resources"]
    assert resources["AtlasTriggerRule"]["Condition"] == "UseEventBridge"
    assert resources["DocumentDbEventSource"]["Condition"] == "UseDocumentDb"
    assert resources["RelayFunction"]["Condition"] == "UseRelay"
    assert set(template["Conditions"]) >= {"UseEventBridge", "UseDocumentDb", "UseRelay"}


def test_atlas_rule_targets_the_ingest_queue_with_retries_and_a_dead_letter_queue(template):
    rule = template["Resources"]["AtlasTriggerRule"]["Properties"]
    assert rule["EventPattern"] == {"source": [{"prefix": "aws.partner/mongodb.com"}]}
    [target] = rule["Targets"]
    assert target["Arn"] == {"!GetAtt": "IngestQueue.Arn"}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert target["DeadLetterConfig"]["Arn"] == {"!GetAtt": "IngestDeadLetterQueue.Arn"}


def _refers_to(value, name: str) -> bool:
    """Whether a template value mentions resource `name` (Ref, GetAtt or Sub)."""
    if isinstance(value, dict):
        return any(_refers_to(v, name) for v in value.values())
    if isinstance(value, list):
        return any(_refers_to(v, name) for v in value)
    return isinstance(value, str) and (value == name or value.startswith(f"{name}.") or f"${{{name}" in value)


def test_nothing_invokes_the_distiller_from_eventbridge(template):
    """An asynchronous invocation drops an event after two retries: the Distiller is fed by queues only."""
    resources = template["Resources"]
    permissions = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission" and _refers_to(r["Properties"]["FunctionName"], "DistillerFunction")
    ]
    targets = [t for r in resources.values() if r["Type"] == "AWS::Events::Rule" for t in r["Properties"]["Targets"]]
    events = resources["DistillerFunction"]["Properties"]["Events"].values()

    assert permissions == []
    assert targets and not any(_refers_to(t["Arn"], "DistillerFunction") for t in targets)
    assert {e["Type"] for e in events} == {"SQS"}


@pytest.mark.parametrize("queue", ["IngestQueue", "IngestDeadLetterQueue"])
def test_only_the_atlas_rule_may_send_to_the_queues_it_targets(template, queue):
    [policy] = [
        r
        for r in template["Resources"].values()
        if r["Type"] == "AWS::SQS::QueuePolicy" and r["Properties"]["Queues"] == [{"!Ref": queue}]
    ]
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]

    assert policy["Condition"] == "UseEventBridge"
    assert statement["Effect"] == "Allow" and statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == {"!GetAtt": f"{queue}.Arn"}
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"!GetAtt": "AtlasTriggerRule.Arn"}}}


def test_documentdb_mapping_cannot_miss_events(template):
    mapping = template["Resources"]["DocumentDbEventSource"]["Properties"]
    assert mapping["DocumentDBEventSourceConfig"]["FullDocument"] == "UpdateLookup"
    assert mapping["StartingPosition"] in ("TRIM_HORIZON", "AT_TIMESTAMP")
    assert mapping["SourceAccessConfigurations"] == [{"Type": "BASIC_AUTH", "URI": {"!Ref": "DocumentDbSecretArn"}}]


def test_relay_runs_alone_on_a_schedule_and_may_only_feed_the_ingest_queue(template):
    relay = template["Resources"]["RelayFunction"]["Properties"]
    assert relay["ReservedConcurrentExecutions"] == 1
    assert relay["Events"]["EveryMinute"]["Type"] == "Schedule"
    assert relay["Environment"]["Variables"]["INGEST_QUEUE_URL"] == {"!Ref": "IngestQueue"}
    assert {"SQSSendMessagePolicy": {"QueueName": {"!GetAtt": "IngestQueue.QueueName"}}} in relay["Policies"]


@pytest.mark.parametrize(
    ("alarm", "queue", "metric"),
    [
        ("DeliveryDeadLettersAlarm", "DeliveryDeadLetterQueue", "ApproximateNumberOfMessagesVisible"),
        ("IngestDeadLettersAlarm", "IngestDeadLetterQueue", "ApproximateNumberOfMessagesVisible"),
        ("DeliveryBacklogAlarm", "DeliveryQueue", "ApproximateAgeOfOldestMessage"),
        ("IngestBacklogAlarm", "IngestQueue", "ApproximateAgeOfOldestMessage"),
        ("RetryBacklogAlarm", "RetryQueue", "ApproximateAgeOfOldestMessage"),
    ],
)
def test_alarms_watch_dead_letters_and_backlog_and_are_outputs(template, alarm, queue, metric):
    props = template["Resources"][alarm]["Properties"]
    assert props["MetricName"] == metric
    assert props["Dimensions"] == [{"Name": "QueueName", "Value": {"!GetAtt": f"{queue}.QueueName"}}]
    assert {"!Ref": alarm} in [o["Value"] for o in template["Outputs"].values()]


def test_policies_name_their_queues_and_secrets(template):
    resources = template["Resources"]
    for function in ("DistillerFunction", "DispatcherFunction", "HealthFunction"):
        for policy in resources[function]["Properties"]["Policies"]:
            for name, scope in policy.items():
                if name == "SQSSendMessagePolicy":
                    assert "!GetAtt" in scope["QueueName"]
                if name == "AWSSecretsManagerGetSecretValuePolicy":
                    assert scope["SecretArn"] != "*"


def test_functions_run_python312_on_arm64_with_the_shared_layer(template):
    globals_ = template["Globals"]["Function"]
    assert globals_["Runtime"] == "python3.12" and globals_["Architectures"] == ["arm64"]
    assert globals_["Layers"] == [{"!Ref": "DistillerLayer"}]
    assert template["Resources"]["DistillerLayer"]["Metadata"]["BuildMethod"] == "python3.12"


def test_samconfig_has_the_three_environments():
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for env in ("default", "padev", "prod"):
        deploy = config[env]["deploy"]["parameters"]
        assert deploy["resolve_s3"] is True and "CAPABILITY_IAM" in deploy["capabilities"]
        assert f'Stage="{"dev" if env == "default" else env}"' in deploy["parameter_overrides"]


def test_partner_api_is_a_proxy_to_the_api_function_with_scoped_permissions(template):
    api = template["Resources"]["ApiFunction"]["Properties"]
    event = api["Events"]["Data"]
    assert event["Type"] == "Api" and event["Properties"]["Path"] == "/data/{proxy+}"
    assert event["Properties"]["RestApiId"] == {"!Ref": "PartnerApi"}
    assert {"SQSSendMessagePolicy": {"QueueName": {"!GetAtt": "DeliveryQueue.QueueName"}}} in api["Policies"]
    assert api["Environment"]["Variables"]["DELIVERY_QUEUE_URL"] == {"!Ref": "DeliveryQueue"}


# --- issue 10: concurrency budget, alarms, retained dead letters, claim check --------------------

ALARM_TOPIC = {"!If": ["HasAlarmTopic", [{"!Ref": "AlarmTopicArn"}], {"!Ref": "AWS::NoValue"}]}
FUNCTIONS = ["DistillerFunction", "DispatcherFunction", "ApiFunction", "RelayFunction", "HealthFunction"]


def test_every_sqs_event_source_caps_concurrency_at_the_mongo_connection_budget(template):
    parameter = template["Parameters"]["MaxConcurrentBatches"]
    sources = {
        (name, event_name): event["Properties"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::Serverless::Function"
        for event_name, event in r["Properties"].get("Events", {}).items()
        if event["Type"] == "SQS"
    }

    assert set(sources) == {
        ("DistillerFunction", "Ingest"),
        ("DispatcherFunction", "Deliveries"),
        ("DispatcherFunction", "Retries"),
    }
    for source in sources.values():
        assert source["ScalingConfig"] == {"MaximumConcurrency": {"!Ref": "MaxConcurrentBatches"}}
    assert parameter["Type"] == "Number" and (parameter["MinValue"], parameter["MaxValue"]) == (2, 1000)
    assert 2 <= parameter["Default"] <= 1000 and "connection" in parameter["Description"]


def _alarms(template, namespace: str, metric: str, dimension: str, value) -> list[tuple[str, dict]]:
    return [
        (name, r)
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"].get("Namespace") == namespace
        and r["Properties"].get("MetricName") == metric
        and r["Properties"].get("Dimensions") == [{"Name": dimension, "Value": value}]
    ]


def test_the_functions_with_alarms_are_all_the_functions(template):
    functions = {n for n, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}

    assert functions == set(FUNCTIONS)


@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_has_an_errors_and_a_throttles_alarm(template, function, metric):
    [(name, alarm)] = _alarms(template, "AWS/Lambda", metric, "FunctionName", {"!Ref": function})
    props = alarm["Properties"]

    assert name == f"{function.removesuffix('Function')}{metric}Alarm"
    assert alarm.get("Condition") == template["Resources"][function].get("Condition")
    assert (props["Statistic"], props["Threshold"], props["ComparisonOperator"]) == ("Sum", 0, "GreaterThanThreshold")
    assert props["TreatMissingData"] == "notBreaching"
    assert props["AlarmActions"] == props["OKActions"] == ALARM_TOPIC
    assert props["AlarmDescription"].strip()


def test_retry_queue_alarm_fires_only_well_past_the_longest_retry_delay(template):
    longest = max(int(s) for s in template["Parameters"]["RetryDelays"]["Default"].split(","))
    [(name, alarm)] = _alarms(
        template, "AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", {"!GetAtt": "RetryQueue.QueueName"}
    )
    props = alarm["Properties"]

    assert name == "RetryBacklogAlarm" and longest == 900
    assert props["Threshold"] >= 2 * longest and props["ComparisonOperator"] == "GreaterThanThreshold"
    assert props["Statistic"] == "Maximum" and props["Period"] * props["EvaluationPeriods"] >= 900
    assert "900" in props["AlarmDescription"] and str(props["Threshold"]) in props["AlarmDescription"]
    assert props["AlarmActions"] == props["OKActions"] == ALARM_TOPIC


@pytest.mark.parametrize("queue", ["IngestDeadLetterQueue", "DeliveryDeadLetterQueue"])
def test_dead_letter_queues_outlive_the_stack(template, queue):
    resource = template["Resources"][queue]

    assert (resource.get("DeletionPolicy"), resource.get("UpdateReplacePolicy")) == ("Retain", "Retain")


@pytest.mark.parametrize(
    ("queue", "not_empty"),
    [("IngestDeadLetterQueue", "IngestDeadLettersAlarm"), ("DeliveryDeadLetterQueue", "DeliveryDeadLettersAlarm")],
)
def test_each_dead_letter_queue_has_a_growth_alarm_that_notifies_on_every_wave(template, queue, not_empty):
    """CloudWatch notifies on state changes only: the not-empty alarm stays in ALARM, silent, while
    the queue grows; the growth alarm goes back to OK when growth stops, so each wave notifies."""
    growth = []
    for name, r in template["Resources"].items():
        if r["Type"] != "AWS::CloudWatch::Alarm" or "Metrics" not in r["Properties"]:
            continue
        metrics = {m["Id"]: m for m in r["Properties"]["Metrics"]}
        for metric_id, m in metrics.items():
            metric = m.get("MetricStat", {}).get("Metric", {})
            if metric.get("Dimensions") == [{"Name": "QueueName", "Value": {"!GetAtt": f"{queue}.QueueName"}}]:
                growth.append((name, r["Properties"], metric_id, metric, metrics))
    [(name, props, metric_id, metric, metrics)] = growth
    [returned] = [m for m in metrics.values() if m.get("ReturnData", True)]

    assert metric["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert returned["Expression"] in (f"DIFF({metric_id})", f"RATE({metric_id})")
    assert (props["Threshold"], props["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert props["EvaluationPeriods"] >= 2 and props["DatapointsToAlarm"] == 1  # DIFF needs the previous period
    assert props["AlarmActions"] == ALARM_TOPIC
    assert template["Resources"][not_empty]["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert {"!Ref": name} in [o["Value"] for o in template["Outputs"].values()]


def test_claim_check_bucket_is_private_encrypted_and_expires_after_the_dead_letters(template):
    resources = template["Resources"]
    bucket = resources["ClaimCheckBucket"]["Properties"]
    [encryption] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    [rule] = bucket["LifecycleConfiguration"]["Rules"]
    dead_letter_days = max(
        resources[q]["Properties"]["MessageRetentionPeriod"] / 86400
        for q in ("IngestDeadLetterQueue", "DeliveryDeadLetterQueue")
    )
    [deny] = resources["ClaimCheckBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]

    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert bucket["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True
    )
    assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert rule["Status"] == "Enabled" and rule["ExpirationInDays"] == 30 > dead_letter_days
    assert "Filter" not in rule and "Prefix" not in rule  # every object expires
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert template["Outputs"]["ClaimCheckBucketName"]["Value"] == {"!Ref": "ClaimCheckBucket"}


def _s3_actions(policies) -> dict[str, set[str]]:
    """Claim-check bucket actions granted by a function's SAM policies: {"objects"|"bucket": actions}."""
    granted: dict[str, set[str]] = {"objects": set(), "bucket": set()}
    crud = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"}
    for policy in policies:
        if not isinstance(policy, dict):
            continue
        if policy.get("S3CrudPolicy") == {"BucketName": {"!Ref": "ClaimCheckBucket"}}:
            granted["objects"] |= crud
            granted["bucket"] |= crud
        for statement in policy.get("Statement", []):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if statement["Effect"] != "Allow":
                continue
            if statement["Resource"] == {"!Sub": "${ClaimCheckBucket.Arn}/*"}:
                granted["objects"] |= set(actions)
            if statement["Resource"] == {"!GetAtt": "ClaimCheckBucket.Arn"}:
                granted["bucket"] |= set(actions)
    return granted


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_knows_the_claim_check_bucket_and_may_read_and_write_it(template, function):
    props = template["Resources"][function]["Properties"]
    granted = _s3_actions(props["Policies"])

    assert props["Environment"]["Variables"]["CLAIM_CHECK_BUCKET"] == {"!Ref": "ClaimCheckBucket"}
    assert "s3:GetObject" in granted["objects"]
    # The health sweep only reads payloads (a probe's); held messages keep their claim checks.
    assert ("s3:PutObject" in granted["objects"]) is (function != "HealthFunction")
    # without ListBucket S3 answers a missing key 403, which would be retried as transient
    assert "s3:ListBucket" in granted["bucket"]


def test_relay_may_park_what_it_cannot_forward_on_the_ingest_dead_letter_queue(template):
    relay = template["Resources"]["RelayFunction"]["Properties"]

    assert relay["Environment"]["Variables"]["INGEST_DLQ_URL"] == {"!Ref": "IngestDeadLetterQueue"}
    assert {"SQSSendMessagePolicy": {"QueueName": {"!GetAtt": "IngestDeadLetterQueue.QueueName"}}} in relay["Policies"]


def test_distiller_waits_an_hour_at_most_for_a_linked_deal(template):
    distiller = template["Resources"]["DistillerFunction"]["Properties"]["Environment"]["Variables"]

    assert distiller["LINKED_DEAL_MAX_AGE_SECONDS"] == "3600"


def test_the_relay_start_position_is_a_stack_parameter_that_defaults_to_refusing(resources):
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)
    assert template["Parameters"]["RelayStartAt"]["Default"] == ""
    env = resources["RelayFunction"]["Properties"]["Environment"]["Variables"]
    assert env["RELAY_START_AT"] == {"!Ref": "RelayStartAt"}


# --- issue 11: least privilege on partner secrets, no partner data in traces ---------------------

SAMPLE_PARAMETERS = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-2",
    "AWS::AccountId": "123456789012",
    "AWS::URLSuffix": "amazonaws.com",
    "MongoUriSecretArn": "arn:aws:secretsmanager:us-east-2:123456789012:secret:trigger-distiller/mongo-uri-Q1w2E3",
    "DocumentDbSecretArn": "arn:aws:secretsmanager:us-east-2:123456789012:secret:docdb/credentials-R4t5Y6",
}
PARTNER_SECRET_ARN = "arn:aws:secretsmanager:us-east-2:123456789012:secret:{prefix}{partner}/{kind}-{suffix}"


def _expand(value, parameters):
    """A template value as a string, with parameters and pseudo parameters filled in."""
    import re

    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "!Ref" in value:
        return parameters[value["!Ref"]]  # KeyError: a reference this test has no sample for
    if isinstance(value, dict) and "!Sub" in value:
        text, extra = (value["!Sub"], {}) if isinstance(value["!Sub"], str) else value["!Sub"]
        return re.sub(r"\$\{([^}!]+)\}", lambda m: _expand(extra.get(m[1], {"!Ref": m[1]}), parameters), text)
    raise AssertionError(f"cannot expand {value!r}")


def _iam_matches(pattern: str, arn: str) -> bool:
    """IAM resource matching: `*` is any run of characters, `?` exactly one, the rest literal."""
    import re

    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, arn) is not None


def _secret_statements(policies):
    """(resource, ...) of every statement or policy template that can read a secret."""
    for policy in policies:
        if isinstance(policy, str):  # a managed policy name or ARN
            assert "secret" not in policy.lower(), f"managed policy {policy} may read secrets"
            continue
        for name, scope in policy.items():
            if name == "Statement":
                for statement in scope if isinstance(scope, list) else [scope]:
                    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                    if statement["Effect"] == "Allow" and any(
                        a == "*" or a.lower().startswith("secretsmanager:") for a in actions
                    ):
                        resources = statement["Resource"]
                        yield from resources if isinstance(resources, list) else [resources]
            elif "secretsmanager" in name.lower():
                yield scope["SecretArn"]


def _secret_grants(template) -> dict[str, list[str]]:
    """Each function's Secrets Manager resource patterns, from its Policies and any IAM policy on its role."""
    parameters = {
        **SAMPLE_PARAMETERS,
        **{name: p.get("Default", "") for name, p in template["Parameters"].items() if name not in SAMPLE_PARAMETERS},
    }
    resources = template["Resources"]
    functions = [name for name, r in resources.items() if r["Type"] == "AWS::Serverless::Function"]
    grants: dict[str, list[str]] = {name: [] for name in functions}
    for name in functions:
        for resource in _secret_statements(resources[name]["Properties"].get("Policies", [])):
            grants[name].append(_expand(resource, parameters))
    for resource in resources.values():
        if resource["Type"] in ("AWS::IAM::RolePolicy", "AWS::IAM::Policy"):
            props = resource["Properties"]
            roles = [props["RoleName"]] if "RoleName" in props else props.get("Roles", [])
            owners = [f for f in functions for role in roles if role == {"!Ref": f"{f}Role"}]
            assert len(owners) == len(roles), f"a policy on a role that is not a function's: {roles}"
            for owner in owners:
                for arn in _secret_statements([{"Statement": props["PolicyDocument"]["Statement"]}]):
                    grants[owner].append(_expand(arn, parameters))
    return grants


@pytest.mark.parametrize("partner", ["acme-motors", "a", "dealer_42.example"])
def test_each_function_may_read_only_its_own_kind_of_partner_secret(template, partner):
    prefix = template["Parameters"]["PartnerSecretsPrefix"]["Default"]
    shared = PARTNER_SECRET_ARN.format(prefix=prefix, partner=partner, kind="shared-secret", suffix="Ab3dEf")
    webhook = PARTNER_SECRET_ARN.format(prefix=prefix, partner=partner, kind="webhook-secret", suffix="Xy9zQw")
    grants = _secret_grants(template)
    assert set(grants) == set(FUNCTIONS)

    def reads(function: str, arn: str) -> bool:
        return any(_iam_matches(pattern, arn) for pattern in grants[function])

    # The API verifies partner JWTs with shared secrets; it must never read what signs the webhooks.
    assert reads("ApiFunction", shared) and not reads("ApiFunction", webhook)
    # The Dispatcher and the health sweep's probes sign with webhook secrets, never the JWT secrets.
    for signer in ("DispatcherFunction", "HealthFunction"):
        assert reads(signer, webhook) and not reads(signer, shared), signer
        assert reads(signer, webhook.removesuffix("-Xy9zQw")) and not reads(signer, webhook + "x"), signer
    for function in set(FUNCTIONS) - {"ApiFunction", "DispatcherFunction", "HealthFunction"}:
        assert not reads(function, shared) and not reads(function, webhook), function
    # Secrets Manager's six random characters are part of the ARN: exactly six.
    assert not reads("ApiFunction", shared[:-1]) and not reads("DispatcherFunction", webhook + "x")
    # A secret that does not exist is authorized on its bare name: the API must get ResourceNotFound
    # (an unknown partner, 401), not AccessDenied (an unhandled error), and still only for its kind.
    missing_shared, missing_webhook = shared.removesuffix("-Ab3dEf"), webhook.removesuffix("-Xy9zQw")
    assert reads("ApiFunction", missing_shared) and not reads("ApiFunction", missing_webhook)
    assert reads("DispatcherFunction", missing_webhook) and not reads("DispatcherFunction", missing_shared)


def test_every_function_still_reads_the_mongo_uri_secret_and_nothing_else_broadly(template):
    for function, patterns in _secret_grants(template).items():
        assert any(_iam_matches(p, SAMPLE_PARAMETERS["MongoUriSecretArn"]) for p in patterns), function
        for pattern in patterns:
            assert not _iam_matches(pattern, "arn:aws:secretsmanager:us-east-2:123456789012:secret:other-Zz9Yy8")


def test_the_iam_matcher_treats_star_and_question_mark_as_iam_does():
    assert _iam_matches("arn:a:secret:p/*/x-??????", "arn:a:secret:p/acme/x-Ab3dEf")
    assert _iam_matches("arn:a:secret:p/*", "arn:a:secret:p/acme/webhook-secret-Ab3dEf")
    assert not _iam_matches("arn:a:secret:p/*/x-??????", "arn:a:secret:p/acme/x-Ab3dE")
    assert not _iam_matches("arn:a:secret:p.*", "arn:a:secret:pX")  # "." is literal


def test_tracing_never_captures_handler_responses_or_errors(template):
    from aws_lambda_powertools.shared import constants

    switches = [constants.TRACER_CAPTURE_RESPONSE_ENV, constants.TRACER_CAPTURE_ERROR_ENV]
    assert switches == ["POWERTOOLS_TRACER_CAPTURE_RESPONSE", "POWERTOOLS_TRACER_CAPTURE_ERROR"]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    for switch in switches:
        assert env[switch] == "false"
    for function in FUNCTIONS:  # no function turns it back on
        own = template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
        for switch in switches:
            assert own.get(switch, "false") == "false"


def test_the_api_gets_its_per_partner_rate_limits_from_stack_parameters(template):
    import re

    from distiller.api.rate_limit import RateLimit
    from distiller.runtime import api_limits
    from distiller.settings import ApiSettings

    variables = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    parameters = template["Parameters"]
    assert variables["API_RATE_LIMIT"] == {"!Ref": "ApiRateLimit"}
    assert variables["API_REPLAY_RATE_LIMIT"] == {"!Ref": "ApiReplayRateLimit"}
    defaults = {
        name: parameters[ref]["Default"]
        for name, ref in (("API_RATE_LIMIT", "ApiRateLimit"), ("API_REPLAY_RATE_LIMIT", "ApiReplayRateLimit"))
    }
    limits = api_limits(ApiSettings.from_env({"DELIVERY_QUEUE_URL": "q", "DOCUMENTS_BUCKET": "d", **defaults}))
    assert limits.replays.requests / limits.replays.per_seconds < limits.requests.requests / limits.requests.per_seconds
    for name in ("ApiRateLimit", "ApiReplayRateLimit"):
        pattern = re.compile(parameters[name]["AllowedPattern"])
        assert pattern.fullmatch(parameters[name]["Default"])
        # What CloudFormation lets through, the function parses (and the reverse for a typo).
        assert RateLimit.parse("5/0.5") and pattern.fullmatch("5/0.5")
        assert not pattern.fullmatch("5 per minute")


# --- issue 13: the partner write API -------------------------------------------------------------

WRITE_ROUTES = {
    "SellPost": ("/sell/{partnerId}", "POST"),
    "SellGet": ("/sell/{partnerId}", "GET"),
    "LeadsPost": ("/leads/{partnerId}", "POST"),
    "LeadsGet": ("/leads/{partnerId}/{callerReferenceId}", "GET"),
}


def test_the_write_routes_reach_the_api_function_and_only_with_their_methods(template):
    from distiller.api.routes import openapi_document

    events = template["Resources"]["ApiFunction"]["Properties"]["Events"]
    routed = {(e["Properties"]["Path"], e["Properties"]["Method"]) for e in events.values()}
    assert {(path, method) for path, method in WRITE_ROUTES.values()} <= routed
    for name, (path, method) in WRITE_ROUTES.items():
        assert events[name]["Properties"]["RestApiId"] == {"!Ref": "PartnerApi"}
        # API Gateway routes exactly what the function serves (its OpenAPI document says so).
        assert method.lower() in openapi_document()["paths"][path], (path, method)


@pytest.mark.parametrize(
    ("domain", "accepted"),
    [
        ("dealnow.com", True),
        ("padev.xyz", True),
        ("my-dealer.co.uk", True),
        ("app.dealnow.com", False),  # links add app. themselves: app.app.dealnow.com is no host
        ("https://dealnow.com", False),
        ("dealnow.com/", False),
        ("localhost", False),
        ("DealNow.com", False),
        ("-dealnow.com", False),
    ],
)
def test_link_domains_are_bare_domains_in_the_stack_and_in_the_settings(template, domain, accepted):
    import re

    from pydantic import ValidationError

    from distiller.settings import ApiSettings, SettingsError

    parameters = template["Parameters"]
    variables = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    for variable, parameter in (("DEALNOW_DOMAIN", "DealNowDomain"), ("APP_DOMAIN", "AppDomain")):
        assert variables[variable] == {"!Ref": parameter}
        pattern = re.compile(parameters[parameter]["AllowedPattern"])
        assert pattern.fullmatch(parameters[parameter]["Default"])
        assert bool(pattern.fullmatch(domain)) is accepted, (parameter, domain)
        env = {"DELIVERY_QUEUE_URL": "q", "DOCUMENTS_BUCKET": "d", variable: domain}
        if accepted:
            assert getattr(ApiSettings.from_env(env), variable.lower()) == domain
        else:
            with pytest.raises((SettingsError, ValidationError), match=variable):
                ApiSettings.from_env(env)


def test_link_emails_may_be_sent_only_from_the_configured_sender(template):
    api = template["Resources"]["ApiFunction"]["Properties"]
    assert api["Environment"]["Variables"]["SES_FROM_ADDRESS"] == {"!Ref": "SesFromAddress"}
    assert template["Parameters"]["SesFromAddress"]["Default"] == ""  # unset: no email, nothing granted
    grants = [p for p in api["Policies"] if isinstance(p, dict) and "!If" in p]
    (grant,) = [g["!If"] for g in grants if g["!If"][0] == "HasSesSender"]
    (statement,) = grant[1]["Statement"]
    assert statement["Action"] == "ses:SendEmail"
    assert statement["Condition"] == {"StringEquals": {"ses:FromAddress": {"!Ref": "SesFromAddress"}}}
    assert grant[2] == {"!Ref": "AWS::NoValue"}


def test_the_leads_default_rate_limit_is_a_stack_parameter_the_settings_parse(template):
    import re

    from distiller.api.rate_limit import RateLimit
    from distiller.settings import ApiSettings

    parameter = template["Parameters"]["LeadsRateLimit"]
    variables = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["LEADS_RATE_LIMIT"] == {"!Ref": "LeadsRateLimit"}
    assert re.fullmatch(parameter["AllowedPattern"], parameter["Default"])
    settings = ApiSettings.from_env({"DELIVERY_QUEUE_URL": "q", "DOCUMENTS_BUCKET": "d", "LEADS_RATE_LIMIT": "7/30"})
    assert settings.leads_limit == RateLimit(7, 30)
    default = ApiSettings.from_env({"DELIVERY_QUEUE_URL": "q", "DOCUMENTS_BUCKET": "d"}).leads_limit
    assert default == RateLimit.parse(parameter["Default"])


def test_tracing_is_one_parameter_passed_through_by_default(template):
    """X-Ray costs per trace: off unless the stack asks for it, for the functions and the API alike."""
    parameter = template["Parameters"]["TracingMode"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("PassThrough", ["Active", "PassThrough"])
    assert template["Globals"]["Function"]["Tracing"] == {"!Ref": "TracingMode"}
    assert template["Conditions"]["TracingActive"] == {"!Equals": [{"!Ref": "TracingMode"}, "Active"]}
    api = template["Resources"]["PartnerApi"]["Properties"]
    assert api["TracingEnabled"] == {"!If": ["TracingActive", True, False]}
    assert all("Tracing" not in r.get("Properties", {}) for r in template["Resources"].values())


# --- issue 15 item 2: endpoint health (pause, hold, probe, drain) --------------------------------

HEALTH_PARAMETERS = {
    "PAUSE_AFTER_DEAD_LETTERS": "PauseAfterDeadLetters",
    "PAUSE_AFTER_FAILING_HOURS": "PauseAfterFailingHours",
    "HEALTH_PROBE_SECONDS": "HealthProbeSeconds",
    "HELD_RETENTION_DAYS": "HeldRetentionDays",
}


def _queues_sent_to(policies) -> set[str]:
    """Logical ids of the queues a function's policies may send to (SQSSendMessagePolicy or a statement)."""
    queues = set()
    for policy in policies:
        if not isinstance(policy, dict):
            continue
        if "SQSSendMessagePolicy" in policy:
            queues.add(policy["SQSSendMessagePolicy"]["QueueName"]["!GetAtt"].removesuffix(".QueueName"))
        for statement in policy.get("Statement", []):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert not any(a.lower().startswith("sqs:") or a == "*" for a in actions), statement
    return queues


def test_the_health_sweep_runs_alone_every_minute_and_ends_before_the_next(template):
    resource = template["Resources"]["HealthFunction"]
    props = resource["Properties"]
    [event] = props["Events"].values()

    assert props["FunctionName"] == {"!Sub": "trigger-distiller-${Stage}-health"}
    assert (props["CodeUri"], props["Handler"]) == ("functions/health/", "app.handler")
    assert (ROOT / props["CodeUri"] / "app.py").is_file()
    assert "Condition" not in resource  # paused partners exist whatever the ingest path
    # Two sweeps at once would probe twice and drain the same held deliveries twice.
    assert props["ReservedConcurrentExecutions"] == 1
    assert (event["Type"], event["Properties"]["Schedule"]) == ("Schedule", "rate(1 minute)")
    assert props["Timeout"] <= 60
    # The fastest probe interval the stack accepts is the schedule's.
    assert template["Parameters"]["HealthProbeSeconds"]["MinValue"] == 60


def test_the_health_sweep_may_send_only_to_the_delivery_and_delivery_dead_letter_queues(template):
    props = template["Resources"]["HealthFunction"]["Properties"]
    env = props["Environment"]["Variables"]

    assert _queues_sent_to(props["Policies"]) == {"DeliveryQueue", "DeliveryDeadLetterQueue"}
    assert env["DELIVERY_QUEUE_URL"] == {"!Ref": "DeliveryQueue"}
    assert env["DELIVERY_DLQ_URL"] == {"!Ref": "DeliveryDeadLetterQueue"}
    assert env["PARTNER_SECRETS_PREFIX"] == {"!Ref": "PartnerSecretsPrefix"}
    # Probes are the real partner endpoints: loopback and private addresses stay refused.
    assert "ALLOW_PRIVATE_ENDPOINTS" not in env


def test_the_dispatcher_holds_in_mongo_and_gains_no_queue_for_it(template):
    dispatcher = template["Resources"]["DispatcherFunction"]["Properties"]

    assert _queues_sent_to(dispatcher["Policies"]) == {"RetryQueue", "DeliveryDeadLetterQueue"}


def test_when_to_pause_probe_and_expire_are_stack_parameters_both_functions_read(template):
    parameters = template["Parameters"]
    dispatcher = template["Resources"]["DispatcherFunction"]["Properties"]["Environment"]["Variables"]
    health = template["Resources"]["HealthFunction"]["Properties"]["Environment"]["Variables"]

    for variable, parameter in HEALTH_PARAMETERS.items():
        assert health[variable] == {"!Ref": parameter}
        assert parameters[parameter]["Type"] == "Number" and parameters[parameter]["Description"].strip()
    # The Dispatcher decides the pause; probing and expiring are the sweep's alone.
    assert {v: dispatcher[v] for v in HEALTH_PARAMETERS if v in dispatcher} == {
        "PAUSE_AFTER_DEAD_LETTERS": {"!Ref": "PauseAfterDeadLetters"},
        "PAUSE_AFTER_FAILING_HOURS": {"!Ref": "PauseAfterFailingHours"},
    }
    assert (parameters["PauseAfterDeadLetters"]["Default"], parameters["PauseAfterFailingHours"]["Default"]) == (5, 24)
    assert (parameters["PauseAfterDeadLetters"]["MinValue"], parameters["PauseAfterFailingHours"]["MinValue"]) == (0, 0)
    assert (parameters["HealthProbeSeconds"]["Default"], parameters["HeldRetentionDays"]["Default"]) == (300, 14)


def test_a_held_delivery_dead_lettered_at_the_end_of_its_hold_still_finds_its_claim_check(template):
    resources = template["Resources"]
    held_days = template["Parameters"]["HeldRetentionDays"]
    dead_letter_days = resources["DeliveryDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"] / 86400
    [rule] = resources["ClaimCheckBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]

    assert (held_days["MinValue"], held_days["MaxValue"]) == (1, 14)
    assert held_days["MaxValue"] + dead_letter_days < rule["ExpirationInDays"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_has_a_log_group_with_a_retention(template, function):
    resources = template["Resources"]
    [group] = [
        r
        for r in resources.values()
        if r["Type"] == "AWS::Logs::LogGroup"
        and r["Properties"]["LogGroupName"] == {"!Sub": f"/aws/lambda/${{{function}}}"}
    ]

    assert group["Properties"]["RetentionInDays"] == 30
    assert group.get("Condition") == resources[function].get("Condition")


def test_a_paused_partner_alarms_once_per_stage_and_tells_the_on_call_what_to_do(template):
    alarm = template["Resources"]["PartnerPausedAlarm"]
    props = alarm["Properties"]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    description = " ".join(props["AlarmDescription"].split())

    assert "Condition" not in alarm
    assert props["AlarmName"] == {"!Sub": "trigger-distiller-${Stage}-partner-paused"}
    assert props["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert props["Dimensions"] == [
        {"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]},
        {"Name": "stage", "Value": {"!Ref": "Stage"}},
    ]
    assert (props["Statistic"], props["Period"], props["EvaluationPeriods"]) == ("Sum", 300, 1)
    assert (props["Threshold"], props["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert props["TreatMissingData"] == "notBreaching"
    assert props["AlarmActions"] == ALARM_TOPIC
    assert "OKActions" not in props  # OK five minutes later says nothing about the partner
    for step in ("`distiller deliveries --stats`", "`distiller partners enable P`", "reason"):
        assert step in description, step
    assert {"!Ref": "PartnerPausedAlarm"} in [o["Value"] for o in template["Outputs"].values()]


def test_the_health_errors_alarm_tells_that_held_deliveries_wait(template):
    props = template["Resources"]["HealthErrorsAlarm"]["Properties"]

    assert props["AlarmName"] == {"!Sub": "trigger-distiller-${Stage}-health-errors"}
    assert (props["Period"], props["EvaluationPeriods"]) == (300, 1)  # as the Distiller's: one failed sweep alarms
    assert "held" in props["AlarmDescription"] and "probe" in props["AlarmDescription"]
    assert template["Outputs"]["HealthFunctionName"]["Value"] == {"!Ref": "HealthFunction"}


@pytest.mark.parametrize(
    ("prefix", "accepted"),
    [
        ("trigger-distiller/partners/", True),
        ("pa/prod/", True),
        ("partners/", True),
        ("*", False),  # every secret ending in /webhook-secret
        ("trigger-distiller/*/", False),
        ("trigger-distiller/partners?/", False),
        ("trigger-distiller/partners", False),  # the partner id would run into the prefix
        ("trigger-distiller//", False),
        ("", False),
    ],
)
def test_the_partner_secrets_prefix_cannot_widen_the_secret_grants(template, prefix, accepted):
    parameter = template["Parameters"]["PartnerSecretsPrefix"]
    assert bool(re.fullmatch(parameter["AllowedPattern"], prefix)) is accepted
    assert re.fullmatch(parameter["AllowedPattern"], parameter["Default"])
    assert re.fullmatch(parameter["AllowedPattern"], DEFAULT_PREFIX)
