"""The gateway's metrics, as Prometheus scrapes them from its HTTP endpoint (OpenMetrics)."""

from __future__ import annotations

import concurrent.futures
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
from echo_upstream import FAIL, SLEEP, UNARY
from gateway_fixtures import POPULATION, PORTAL, PURPOSE, REGISTRY, Setup
from openssl_certs import Made, OpenSsl
from prometheus_client.openmetrics import parser
from waiting import eventually

from lienthong.config import GatewayLimits
from lienthong.tls import secure_channel

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
# The buckets of the duration histogram, in seconds: 0.5 ms to 10 s at 2-2.5x steps.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _samples(setup: Setup) -> Samples:
    """Every sample of one scrape, keyed by its name and labels."""
    url = f"http://127.0.0.1:{setup.gateway.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = response.read().decode("utf-8")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _unary(channel: grpc.Channel, method: str = UNARY) -> grpc.StatusCode:
    return _code(lambda: channel.unary_unary(method)(b"x", timeout=10, metadata=PURPOSE))


def test_a_scrape_shows_answered_calls_by_caller_method_and_code(setup: Setup) -> None:
    with setup.channel() as portal, setup.channel("justice") as registry:
        assert [_unary(portal) for _ in range(3)] == [grpc.StatusCode.OK] * 3
        assert _unary(portal, FAIL) == grpc.StatusCode.FAILED_PRECONDITION
        assert _unary(registry) == grpc.StatusCode.OK

    samples = _samples(setup)

    requests = "lienthong_gateway_requests_total"
    assert samples[_key(requests, caller=PORTAL, method=UNARY, code="OK")] == 3
    assert samples[_key(requests, caller=PORTAL, method=FAIL, code="FAILED_PRECONDITION")] == 1
    assert samples[_key(requests, caller=REGISTRY, method=UNARY, code="OK")] == 1


def _buckets(samples: Samples, method: str) -> dict[str, float]:
    """The duration histogram's cumulative counts of ``method``, by upper bound."""
    name = "lienthong_gateway_request_duration_seconds_bucket"
    return {
        dict(labels)["le"]: value
        for (sample, labels), value in samples.items()
        if sample == name and ("method", method) in labels
    }


def test_a_scrape_shows_the_duration_histogram_by_method(setup: Setup) -> None:
    """Two quick calls, and one whose deadline ends it after 0.3 s (the upstream sleeps)."""
    with setup.channel() as channel:
        assert [_unary(channel) for _ in range(2)] == [grpc.StatusCode.OK] * 2
        slow = _code(lambda: channel.unary_unary(SLEEP)(b"", timeout=0.3, metadata=PURPOSE))
    assert slow == grpc.StatusCode.DEADLINE_EXCEEDED

    samples = _samples(setup)

    bounds = [*(str(float(bound)) for bound in DURATION_BUCKETS), "+Inf"]
    quick, slept = _buckets(samples, UNARY), _buckets(samples, SLEEP)
    assert list(quick) == list(slept) == bounds
    assert list(quick.values()) == sorted(quick.values())  # cumulative
    assert quick["0.25"] == quick["+Inf"] == 2  # each answered within a quarter of a second
    assert slept["0.25"] == 0
    assert slept["10.0"] == slept["+Inf"] == 1
    duration = "lienthong_gateway_request_duration_seconds"
    assert samples[_key(f"{duration}_count", method=UNARY)] == 2
    assert samples[_key(f"{duration}_sum", method=UNARY)] < 0.5
    assert samples[_key(f"{duration}_sum", method=SLEEP)] >= 0.25


def test_the_in_flight_gauge_counts_started_calls_and_returns_to_zero(setup: Setup) -> None:
    in_flight = _key("lienthong_gateway_in_flight_requests", caller=PORTAL)
    with setup.channel() as channel, concurrent.futures.ThreadPoolExecutor(2) as pool:
        sleeping = [pool.submit(_unary, channel, SLEEP) for _ in range(2)]  # 2 s each
        assert eventually(lambda: _samples(setup).get(in_flight) == 2)
        assert [call.result() for call in sleeping] == [grpc.StatusCode.OK] * 2

    assert _samples(setup)[in_flight] == 0


def test_rejections_are_counted_by_reason_and_as_answered_calls(make_setup, tmp_path: Path) -> None:
    """A call over the concurrency limit, two over the rate, one not granted and one whose
    certificate names no lienthong identity: each a rejection by reason and an answered call
    by code, and none of them in the duration histogram."""
    setup = make_setup(GatewayLimits(rate_per_second=0.001, burst=4, max_concurrent=1))
    foreign = OpenSsl(tmp_path / "openssl").issue(
        "foreign",
        Made(setup.pki.ca_certificate, setup.pki.ca_private_key),
        spiffe_id="spiffe://elsewhere.example/adapter",
    )
    ok, exhausted = grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED
    with setup.channel() as portal, concurrent.futures.ThreadPoolExecutor(1) as pool:
        sleeping = pool.submit(_unary, portal, SLEEP)  # the one call in flight, for 2 s
        assert eventually(lambda: len(setup.echo.metadata) == 1)
        assert _unary(portal) == exhausted
        assert sleeping.result() == ok
        assert [_unary(portal) for _ in range(5)] == [ok] * 3 + [exhausted] * 2
    with setup.channel("police") as police:
        assert _unary(police) == grpc.StatusCode.PERMISSION_DENIED
    with secure_channel(setup.address, foreign.material(setup.pki.ca_certificate)) as unknown:
        assert _unary(unknown) == grpc.StatusCode.UNAUTHENTICATED

    samples = _samples(setup)

    rejections = "lienthong_gateway_rejections_total"
    assert samples[_key(rejections, caller=PORTAL, method=UNARY, reason="RATE_LIMITED")] == 2
    assert samples[_key(rejections, caller=PORTAL, method=UNARY, reason="CONCURRENCY_LIMITED")] == 1
    assert samples[_key(rejections, caller=POPULATION, method=UNARY, reason="NOT_GRANTED")] == 1
    assert samples[_key(rejections, caller="unknown", method=UNARY, reason="NO_IDENTITY")] == 1
    requests = "lienthong_gateway_requests_total"
    assert samples[_key(requests, caller=PORTAL, method=UNARY, code="RESOURCE_EXHAUSTED")] == 3
    assert samples[_key(requests, caller=POPULATION, method=UNARY, code="PERMISSION_DENIED")] == 1
    assert samples[_key(requests, caller="unknown", method=UNARY, code="UNAUTHENTICATED")] == 1
    # A rejected call was never in flight and took no time upstream: the three answered only.
    duration = "lienthong_gateway_request_duration_seconds"
    assert samples[_key(f"{duration}_count", method=UNARY)] == 3
