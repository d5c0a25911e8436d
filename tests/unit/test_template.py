"""template.yaml wiring: the queues, redrives and event sources the code relies on."""

from pathlib import Path

import pytest
import yaml

from distiller.local.pipeline import QUEUES

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


def test_atlas_rule_targets_the_distiller_with_a_dead_letter_queue(template):
    rule = template["Resources"]["AtlasTriggerRule"]["Properties"]
    assert rule["EventPattern"] == {"source": [{"prefix": "aws.partner/mongodb.com"}]}
    [target] = rule["Targets"]
    assert target["Arn"] == {"!GetAtt": "DistillerFunction.Arn"}
    assert target["DeadLetterConfig"]["Arn"] == {"!GetAtt": "IngestDeadLetterQueue.Arn"}


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
    ],
)
def test_alarms_watch_dead_letters_and_backlog_and_are_outputs(template, alarm, queue, metric):
    props = template["Resources"][alarm]["Properties"]
    assert props["MetricName"] == metric
    assert props["Dimensions"] == [{"Name": "QueueName", "Value": {"!GetAtt": f"{queue}.QueueName"}}]
    assert {"!Ref": alarm} in [o["Value"] for o in template["Outputs"].values()]


def test_policies_name_their_queues_and_secrets(template):
    resources = template["Resources"]
    for function in ("DistillerFunction", "DispatcherFunction"):
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
