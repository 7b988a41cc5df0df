"""The gateway's metrics, as Prometheus scrapes them from the HTTP endpoint."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import GatewayMetrics, MetricsServer, start_metrics_server

JUSTICE = "spiffe://lienthong.gov.vn/ministry/justice/adapter"
POLICE = "spiffe://lienthong.gov.vn/ministry/police/adapter"
GET_PERSON = "/lienthong.population.v1.PopulationService/GetPerson"
REGISTER_BIRTH = "/lienthong.civilregistry.v1.CivilRegistryService/RegisterBirth"


def _scrape(server: MetricsServer) -> str:
    url = f"http://127.0.0.1:{server.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode("utf-8"))


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by its name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics()


@pytest.fixture
def server(metrics: GatewayMetrics) -> Iterator[MetricsServer]:
    started = start_metrics_server(metrics, "127.0.0.1:0")
    yield started
    started.close()


def test_a_scrape_shows_answered_calls_by_caller_method_and_code(
    metrics: GatewayMetrics, server: MetricsServer
) -> None:
    for _ in range(3):
        metrics.started(JUSTICE)
        metrics.finished(JUSTICE, GET_PERSON, "OK", 0.004)
    metrics.started(JUSTICE)
    metrics.finished(JUSTICE, GET_PERSON, "NOT_FOUND", 0.2)
    metrics.started(POLICE)
    metrics.finished(POLICE, REGISTER_BIRTH, "OK", 3.0)

    samples = _samples(_scrape(server))

    requests = "lienthong_gateway_requests_total"
    assert samples[_key(requests, caller=JUSTICE, method=GET_PERSON, code="OK")] == 3
    assert samples[_key(requests, caller=JUSTICE, method=GET_PERSON, code="NOT_FOUND")] == 1
    assert samples[_key(requests, caller=POLICE, method=REGISTER_BIRTH, code="OK")] == 1


def test_a_scrape_shows_the_duration_histogram_by_method(
    metrics: GatewayMetrics, server: MetricsServer
) -> None:
    for seconds in (0.0004, 0.004, 0.2):
        metrics.started(JUSTICE)
        metrics.finished(JUSTICE, GET_PERSON, "OK", seconds)

    text = _scrape(server)
    samples = _samples(text)

    duration = "lienthong_gateway_request_duration_seconds"
    assert f'{duration}_count{{method="{GET_PERSON}"}} 3.0' in text
    assert f'{duration}_bucket{{le="0.0005",method="{GET_PERSON}"}} 1.0' in text
    assert samples[_key(f"{duration}_bucket", method=GET_PERSON, le="0.005")] == 2
    assert samples[_key(f"{duration}_bucket", method=GET_PERSON, le="10.0")] == 3
    assert samples[_key(f"{duration}_bucket", method=GET_PERSON, le="+Inf")] == 3
    assert samples[_key(f"{duration}_sum", method=GET_PERSON)] == pytest.approx(0.2044)


def test_the_in_flight_gauge_counts_started_calls_and_returns_to_zero(
    metrics: GatewayMetrics, server: MetricsServer
) -> None:
    in_flight = _key("lienthong_gateway_in_flight_requests", caller=JUSTICE)
    metrics.started(JUSTICE)
    metrics.started(JUSTICE)
    assert _samples(_scrape(server))[in_flight] == 2

    metrics.finished(JUSTICE, GET_PERSON, "OK", 0.01)
    metrics.finished(JUSTICE, GET_PERSON, "UNAVAILABLE", 0.01)

    assert _samples(_scrape(server))[in_flight] == 0


def test_rejections_are_counted_by_reason_and_as_answered_calls(
    metrics: GatewayMetrics, server: MetricsServer
) -> None:
    metrics.rejected(JUSTICE, GET_PERSON, "RATE_LIMITED", "RESOURCE_EXHAUSTED")
    metrics.rejected(JUSTICE, GET_PERSON, "RATE_LIMITED", "RESOURCE_EXHAUSTED")
    metrics.rejected(JUSTICE, GET_PERSON, "CONCURRENCY_LIMITED", "RESOURCE_EXHAUSTED")
    metrics.rejected(POLICE, REGISTER_BIRTH, "PERMISSION_DENIED", "PERMISSION_DENIED")
    metrics.rejected(None, GET_PERSON, "UNAUTHENTICATED", "UNAUTHENTICATED")

    samples = _samples(_scrape(server))

    rejections = "lienthong_gateway_rejections_total"
    assert samples[_key(rejections, caller=JUSTICE, method=GET_PERSON, reason="RATE_LIMITED")] == 2
    assert (
        samples[_key(rejections, caller=JUSTICE, method=GET_PERSON, reason="CONCURRENCY_LIMITED")]
        == 1
    )
    assert (
        samples[_key(rejections, caller=POLICE, method=REGISTER_BIRTH, reason="PERMISSION_DENIED")]
        == 1
    )
    assert (
        samples[_key(rejections, caller="unknown", method=GET_PERSON, reason="UNAUTHENTICATED")]
        == 1
    )
    requests = "lienthong_gateway_requests_total"
    assert (
        samples[_key(requests, caller=JUSTICE, method=GET_PERSON, code="RESOURCE_EXHAUSTED")] == 3
    )
    assert (
        samples[_key(requests, caller=POLICE, method=REGISTER_BIRTH, code="PERMISSION_DENIED")] == 1
    )
    assert samples[_key(requests, caller="unknown", method=GET_PERSON, code="UNAUTHENTICATED")] == 1
    # A rejected call was never in flight and took no measurable time upstream.
    assert not any(name.startswith("lienthong_gateway_request_duration") for name, _ in samples)


def test_the_upstream_gauge_shows_each_service_up_or_down(
    metrics: GatewayMetrics, server: MetricsServer
) -> None:
    metrics.upstream_up("lienthong.population.v1.PopulationService", up=True)
    metrics.upstream_up("lienthong.civilregistry.v1.CivilRegistryService", up=True)
    metrics.upstream_up("lienthong.civilregistry.v1.CivilRegistryService", up=False)

    samples = _samples(_scrape(server))

    up = "lienthong_gateway_upstream_up"
    assert samples[_key(up, service="lienthong.population.v1.PopulationService")] == 1
    assert samples[_key(up, service="lienthong.civilregistry.v1.CivilRegistryService")] == 0


def test_two_instances_keep_separate_counts() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.started(JUSTICE)
    first.finished(JUSTICE, GET_PERSON, "OK", 0.01)

    first_server = start_metrics_server(first, "127.0.0.1:0")
    second_server = start_metrics_server(second, "127.0.0.1:0")
    try:
        first_samples = _samples(_scrape(first_server))
        second_samples = _samples(_scrape(second_server))
    finally:
        first_server.close()
        second_server.close()

    requests = _key(
        "lienthong_gateway_requests_total", caller=JUSTICE, method=GET_PERSON, code="OK"
    )
    assert first_samples[requests] == 1
    assert requests not in second_samples


def test_metrics_go_to_the_registry_given(metrics: GatewayMetrics) -> None:
    registry = CollectorRegistry()
    given = GatewayMetrics(registry)
    given.upstream_up("lienthong.population.v1.PopulationService", up=True)

    value = registry.get_sample_value(
        "lienthong_gateway_upstream_up", {"service": "lienthong.population.v1.PopulationService"}
    )
    assert value == 1
    assert metrics.registry is not registry


def test_a_closed_server_stops_answering_and_its_port_can_be_served_again(
    metrics: GatewayMetrics,
) -> None:
    server = start_metrics_server(metrics, "127.0.0.1:0")
    port = server.port
    _scrape(server)

    server.close()

    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
    again = start_metrics_server(metrics, f"127.0.0.1:{port}")
    try:
        assert again.port == port
        assert "lienthong_gateway_requests_total" in _scrape(again)
    finally:
        again.close()


@pytest.mark.parametrize("address", ["127.0.0.1", ":9464", "127.0.0.1:http", "127.0.0.1:70000"])
def test_a_malformed_address_is_refused(metrics: GatewayMetrics, address: str) -> None:
    with pytest.raises(ValueError, match="metrics"):
        start_metrics_server(metrics, address)
