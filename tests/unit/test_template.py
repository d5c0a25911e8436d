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
