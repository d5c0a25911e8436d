"""bench/scaling.py: the cost arithmetic, input errors, and docs/scaling.md kept in step with the price table."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from bench import scaling

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "bench"


@pytest.fixture(scope="module")
def inputs() -> scaling.Inputs:
    return scaling.Inputs(
        scaling.load_bench(FIXTURES), scaling.load_stack(ROOT / "template.yaml"), scaling.dispatcher_defaults()
    )


def _line(model: scaling.CostModel, item: str) -> float:
    return next(line.usd for line in model.lines if line.item == item)


def test_doubling_memory_doubles_gb_seconds_for_the_same_duration():
    assert scaling.gb_seconds(1024, 0.3) == pytest.approx(2 * scaling.gb_seconds(512, 0.3))


def test_cpu_bound_gb_seconds_do_not_depend_on_memory_below_one_vcpu():
    # Lambda's CPU share grows with memory: below 1,769 MB the same work takes proportionally less time.
    cpu_seconds = 0.1
    small = scaling.gb_seconds(512, cpu_seconds * scaling.cpu_stretch(512))
    large = scaling.gb_seconds(1024, cpu_seconds * scaling.cpu_stretch(1024))
    assert small == pytest.approx(large)
    assert scaling.cpu_stretch(4096) == 1.0


def test_waiting_dispatcher_duration_doubles_its_cost_when_memory_doubles(inputs):
    # At a slow partner the Dispatcher waits rather than computes, so GB-s scale with memory.
    bigger = replace(inputs, stack=replace(inputs.stack, dispatcher=replace(inputs.stack.dispatcher, memory_mb=1024)))
    before = _line(scaling.cost_model(inputs, "documentdb", 1.0), "Dispatcher duration")
    after = _line(scaling.cost_model(bigger, "documentdb", 1.0), "Dispatcher duration")
    assert after == pytest.approx(2 * before)


def test_send_message_batch_divides_send_requests_by_ten():
    assert scaling.sqs_requests(1000, 800, per_call=1) == 1000
    assert scaling.sqs_requests(1000, 800) == 100


def test_each_64_kb_chunk_of_a_call_is_billed_as_a_request():
    # Ten 20 KB messages in one SendMessageBatch carry 200 KB: four 64 KB chunks.
    assert scaling.sqs_requests(10, 20 * 1024) == 4
    assert scaling.sqs_requests(1, 100 * 1024, per_call=1) == 2


def test_dispatcher_batch_waits_for_waves_bounded_by_the_per_host_cap(inputs):
    cap = scaling.one_partner_posts(inputs)
    batch = inputs.stack.dispatcher.batch_size
    seconds = scaling.dispatch_batch_seconds(inputs, 1.0, cap)
    waves = -(-batch // cap)
    assert seconds == pytest.approx(waves * (1.0 + inputs.assume.mongo_round_trip_s))
    # Spread over partners the same batch finishes in fewer waves.
    assert scaling.dispatch_batch_seconds(inputs, 1.0, inputs.dispatcher.workers) < seconds


def test_a_longer_secret_cache_makes_fewer_calls(inputs):
    short = replace(inputs, dispatcher=replace(inputs.dispatcher, webhook_secret_cache_s=30.0))
    longer = replace(inputs, dispatcher=replace(inputs.dispatcher, webhook_secret_cache_s=300.0))
    assert scaling.secret_calls_per_delivery(longer) < scaling.secret_calls_per_delivery(short) / 5


def test_the_deployed_defaults_are_read_from_the_code_and_the_template(inputs):
    assert inputs.dispatcher.webhook_secret_cache_s == 3600.0
    assert inputs.dispatcher.attempts_per_dead_letter == 4  # the first + retries at 60, 300, 900 s
    assert inputs.stack.tracing_mode == "PassThrough"


def test_the_tracing_mode_follows_the_template_parameter_default(tmp_path):
    template = (ROOT / "template.yaml").read_text(encoding="utf-8")
    assert template.count("Default: PassThrough") == 1
    active = tmp_path / "template.yaml"
    active.write_text(template.replace("Default: PassThrough", "Default: Active"), encoding="utf-8")
    assert scaling.load_stack(active).tracing_mode == "Active"
    active.write_text(template.replace("Default: PassThrough", "Default: Sometimes"), encoding="utf-8")
    with pytest.raises(scaling.InputError, match="Tracing"):
        scaling.load_stack(active)


def test_passthrough_tracing_costs_nothing_and_active_adds_traces(inputs):
    passthrough = scaling.cost_model(inputs, "documentdb", 0.05)
    active = scaling.cost_model(replace(inputs, stack=replace(inputs.stack, tracing_mode="Active")), "documentdb", 0.05)
    assert _line(passthrough, "traces recorded") == 0.0
    assert _line(active, "traces recorded") > 0.0
    assert active.per_million - passthrough.per_million == pytest.approx(_line(active, "traces recorded"))


def test_only_attempts_not_delivered_write_a_log_line_unless_every_attempt_is_logged(inputs):
    a = inputs.assume
    failed = 1e6 * (a.retry_fraction + a.dead_letter_fraction * inputs.dispatcher.attempts_per_dead_letter)
    assert scaling.logged_attempts(inputs) == pytest.approx(failed)
    every = replace(inputs, assume=replace(a, every_attempt_logged=True))
    assert scaling.logged_attempts(every) == pytest.approx(1e6 * (1 + a.retry_fraction))
    extra_bytes = (scaling.logged_attempts(every) - failed) * a.log_line_bytes
    quiet, chatty = scaling.cost_model(inputs, "documentdb", 0.05), scaling.cost_model(every, "documentdb", 0.05)
    added = _line(chatty, "Logs ingestion") - _line(quiet, "Logs ingestion")
    assert added == pytest.approx(extra_bytes / 1024**3 * scaling.LOG_INGEST_GB.usd)


def test_the_dispatcher_writes_one_batch_line_per_invocation(inputs):
    longer_line = inputs.assume.batch_log_line_bytes + 1000
    bigger = replace(inputs, assume=replace(inputs.assume, batch_log_line_bytes=longer_line))
    runs = 1e6 * (1 + inputs.assume.retry_fraction) / inputs.stack.dispatcher.batch_size
    added = _line(scaling.cost_model(bigger, "documentdb", 0.05), "Logs ingestion") - _line(
        scaling.cost_model(inputs, "documentdb", 0.05), "Logs ingestion"
    )
    assert added == pytest.approx(runs * 1000 / 1024**3 * scaling.LOG_INGEST_GB.usd)


def test_the_opt_ins_each_cost_more_and_together_match_the_previous_defaults(inputs):
    base = scaling.cost_model(inputs, "documentdb", 0.05).per_million
    for option in scaling.OPT_INS:
        assert option.built
        assert scaling.cost_model(scaling.with_options(inputs, (option,)), "documentdb", 0.05).per_million > base
    before = scaling.with_options(inputs, scaling.OPT_INS)
    assert before.stack.tracing_mode == "Active"
    assert before.dispatcher.webhook_secret_cache_s == 30.0
    assert before.assume.every_attempt_logged


def test_several_deliveries_per_message_is_an_unbuilt_estimate_that_cuts_sqs(inputs):
    packing, without_partner_metrics = scaling.SAVINGS
    assert without_partner_metrics is scaling.WITHOUT_PARTNER_METRICS and without_partner_metrics.built
    assert not packing.built
    base = scaling.cost_model(inputs, "documentdb", 0.05)
    packed = scaling.cost_model(scaling.with_options(inputs, (packing,)), "documentdb", 0.05)
    assert packed.subtotal(("SQS",)) < base.subtotal(("SQS",)) / 2
    assert packed.subtotal(("Lambda",)) == pytest.approx(base.subtotal(("Lambda",)))


def test_the_four_service_subtotal_leaves_out_egress_and_xray(inputs):
    active = replace(inputs, stack=replace(inputs.stack, tracing_mode="Active"))
    model = scaling.cost_model(active, "documentdb", 0.05)
    egress, xray = model.subtotal(("Data transfer",)), model.subtotal(("X-Ray",))
    assert egress > 0 and xray > 0
    assert model.subtotal() == pytest.approx(model.per_million - egress - xray)


def test_the_goal_volume_is_where_the_four_services_first_meet_the_goal(inputs):
    def four(model: scaling.CostModel) -> float:
        return model.subtotal()

    # Per-partner metrics cost per delivery whatever the volume: without them the volume decides.
    assert scaling.goal_volume(inputs, four, 0.05) is None
    inputs = scaling.with_options(inputs, (scaling.WITHOUT_PARTNER_METRICS,))

    volume = scaling.goal_volume(inputs, four, 0.05)
    assert volume is not None
    at = scaling.cost_model(scaling.at_volume(inputs, volume), "documentdb", 0.05)
    below = scaling.cost_model(scaling.at_volume(inputs, volume * 0.75), "documentdb", 0.05)
    assert four(at) <= scaling.GOAL_PER_MILLION < four(below)
    assert scaling.goal_volume(inputs, lambda model: model.per_million + 1.0, 0.05) is None


def test_xray_records_everything_below_one_invocation_a_second_and_five_percent_above():
    month = scaling.SECONDS_PER_MONTH
    assert scaling.xray_traces(0.5 * month) == pytest.approx(0.5 * month)
    assert scaling.xray_traces(101 * month) == pytest.approx((1 + 0.05 * 100) * month)


def test_eventbridge_ingest_adds_a_dollar_per_million_events(inputs):
    eventbridge = scaling.cost_model(inputs, "eventbridge", 0.05)
    documentdb = scaling.cost_model(inputs, "documentdb", 0.05)
    events = 1e6 / inputs.bench.distill.deliveries_per_event
    assert _line(eventbridge, "partner events") == pytest.approx(events * 1e-6)
    assert eventbridge.per_million > documentdb.per_million + events * 1e-6


def test_the_relay_path_pays_a_fixed_monthly_lambda(inputs):
    relay = scaling.cost_model(inputs, "relay", 0.05)
    documentdb = scaling.cost_model(inputs, "documentdb", 0.05)
    assert relay.fixed_per_month > documentdb.fixed_per_month
    assert any(line.item.startswith("relay") for line in relay.fixed)


def test_a_missing_bench_key_is_an_error_naming_the_file_and_key(tmp_path):
    for name in ("distill.json", "dispatch.json", "run.json"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    distill = json.loads((tmp_path / "distill.json").read_text())
    del distill["us_per_event"]
    (tmp_path / "distill.json").write_text(json.dumps(distill))
    with pytest.raises(scaling.InputError, match=r"distill\.json: missing key 'us_per_event'"):
        scaling.load_bench(tmp_path)


def test_a_missing_bench_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(scaling.InputError, match=r"distill\.json: missing"):
        scaling.load_bench(tmp_path)


def test_main_reports_an_input_error_without_a_traceback(tmp_path, capsys):
    assert scaling.main([str(tmp_path)]) == 2
    assert "bench.scaling:" in capsys.readouterr().err


def test_the_template_settings_are_read(inputs):
    assert inputs.stack.distiller.memory_mb == 512
    assert inputs.stack.distiller.batch_size == 100
    assert inputs.stack.dispatcher.sources == 2
    assert inputs.stack.dispatcher.max_concurrency == 10  # MaxConcurrentBatches' default


def test_the_document_has_the_verdict_the_comparison_and_the_limits(inputs):
    document = scaling.render(inputs)
    assert document.startswith(scaling.GENERATED_LINE)
    assert scaling.render_price_table() in document
    assert "EventBridge API destinations" in document
    assert "as published on https://www.svix.com/pricing/" in document
    assert "check current pricing" in document
    model = scaling.cost_model(inputs, "documentdb", inputs.bench.dispatch.latency_ms / 1000)
    verdict = "Meets" if model.subtotal() <= scaling.GOAL_PER_MILLION else "Misses"
    assert f"**{verdict} the goal as deployed:** {scaling.usd(model.subtotal())} per million" in document
    assert "First limit, default configuration:" in document


def test_the_document_prices_each_option_on_top_of_the_deployed_configuration(inputs):
    document = scaling.render(inputs)
    fast = inputs.bench.dispatch.latency_ms / 1000
    base = scaling.cost_model(inputs, "documentdb", fast).per_million
    for option in (*scaling.OPT_INS, *scaling.SAVINGS):
        value = scaling.cost_model(scaling.with_options(inputs, (option,)), "documentdb", fast).per_million
        change = f"{'adds' if value >= base else 'saves'} {scaling.usd(abs(value - base))}"
        rows = [line for line in document.splitlines() if line.startswith(f"| {option.name} | {option.status} |")]
        assert len(rows) == 1 and change in rows[0]
    minutes = inputs.dispatcher.webhook_secret_cache_s / 60
    assert f"within {minutes:.0f} minutes, at once after a 401/403" in document
    assert "so a rotation reaches the next retry" not in document
    assert "TracingMode=PassThrough: only requests that arrive sampled are traced" in document


def test_committed_scaling_doc_is_generated_with_the_current_prices():
    # docs/scaling.md is generated from the lead's local .bench, which CI does not have; what CI can check
    # is that it was generated, and regenerated after the last price change.
    document = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    assert document.splitlines()[0] == scaling.GENERATED_LINE
    assert scaling.render_price_table() in document


def test_per_partner_metrics_cost_a_blob_per_partner_per_batch_and_a_value_per_attempt(inputs):
    without = scaling.with_options(inputs, (scaling.WITHOUT_PARTNER_METRICS,))

    def log_cost(model_inputs: scaling.Inputs) -> float:
        lines = scaling.cost_model(model_inputs, "documentdb", 0.05).lines
        return next(line.usd for line in lines if line.item == "Logs ingestion")

    logs = {"with": log_cost(inputs), "without": log_cost(without)}
    blobs = scaling.partners_per_batch(inputs)
    assert 1 < blobs <= min(inputs.assume.partners, inputs.stack.dispatcher.batch_size)
    assert logs["with"] > logs["without"]
    fewer = scaling.with_options(inputs, (scaling.Option("one partner", "test", assume={"partners": 1}),))
    assert scaling.partners_per_batch(fewer) == pytest.approx(1.0)


def test_the_partner_metrics_switch_the_document_prices_is_the_templates_parameter():
    template = (ROOT / "template.yaml").read_text(encoding="utf-8")
    assert "PartnerMetrics=false" in scaling.WITHOUT_PARTNER_METRICS.name
    assert "\n  PartnerMetrics:\n" in template and "PARTNER_METRICS: !Ref PartnerMetrics" in template
