"""Per-caller rate and concurrency limits, driven by a clock the tests move by hand."""

from __future__ import annotations

import math
import threading
import time

import pytest
from fakes import FakeClock

from gateway.limits import Admission, CallerLimits, LimitSettings, Rejection, TokenBucket

JUSTICE = "spiffe://lienthong.gov.vn/ministry/justice/adapter"
POLICE = "spiffe://lienthong.gov.vn/ministry/police/adapter"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _admitted(limits: CallerLimits, caller: str, attempts: int) -> list[Admission]:
    outcomes = [limits.admit(caller) for _ in range(attempts)]
    return [outcome for outcome in outcomes if isinstance(outcome, Admission)]


def test_a_burst_beyond_the_limit_is_refused_for_the_excess_only(clock: FakeClock) -> None:
    limits = CallerLimits(LimitSettings(rate_per_second=1.0, burst=5, max_concurrent=100), clock)

    outcomes = [limits.admit(JUSTICE) for _ in range(8)]

    assert [isinstance(outcome, Admission) for outcome in outcomes] == [True] * 5 + [False] * 3
    assert outcomes[5:] == [Rejection("RATE_LIMITED", 1.0)] * 3


def test_tokens_refill_at_the_rate(clock: FakeClock) -> None:
    limits = CallerLimits(LimitSettings(rate_per_second=2.0, burst=4, max_concurrent=100), clock)
    assert len(_admitted(limits, JUSTICE, 4)) == 4

    clock.advance(0.25)  # half a token: not yet
    refused = limits.admit(JUSTICE)
    assert refused == Rejection("RATE_LIMITED", 0.25)

    clock.advance(0.25)
    assert isinstance(limits.admit(JUSTICE), Admission)
    clock.advance(1.0)
    assert len(_admitted(limits, JUSTICE, 5)) == 2


def test_a_long_pause_refills_no_more_than_the_burst(clock: FakeClock) -> None:
    limits = CallerLimits(LimitSettings(rate_per_second=10.0, burst=3, max_concurrent=100), clock)
    _admitted(limits, JUSTICE, 3)

    clock.advance(3600.0)

    assert len(_admitted(limits, JUSTICE, 10)) == 3


def test_one_callers_exhaustion_leaves_other_callers_unaffected(clock: FakeClock) -> None:
    limits = CallerLimits(LimitSettings(rate_per_second=0.0, burst=2, max_concurrent=2), clock)
    assert len(_admitted(limits, JUSTICE, 10)) == 2

    assert len(_admitted(limits, POLICE, 2)) == 2
    assert limits.in_flight(JUSTICE) == 2
    assert limits.in_flight(POLICE) == 2


def test_the_call_beyond_the_concurrency_limit_is_refused_until_one_is_released(
    clock: FakeClock,
) -> None:
    limits = CallerLimits(LimitSettings(rate_per_second=0.0, burst=100, max_concurrent=3), clock)
    running = _admitted(limits, JUSTICE, 3)
    assert len(running) == 3

    assert limits.admit(JUSTICE) == Rejection("CONCURRENCY_LIMITED", 0.0)

    running[0].release()
    assert isinstance(limits.admit(JUSTICE), Admission)
    assert limits.in_flight(JUSTICE) == 3


def test_release_is_idempotent(clock: FakeClock) -> None:
    limits = CallerLimits(LimitSettings(rate_per_second=0.0, burst=100, max_concurrent=2), clock)
    first, second = _admitted(limits, JUSTICE, 2)

    first.release()
    first.release()
    first.release()

    assert first.released
    assert limits.in_flight(JUSTICE) == 1
    # Had the repeated releases counted, three more calls would now fit instead of one.
    assert len(_admitted(limits, JUSTICE, 3)) == 1
    second.release()


def test_an_admission_used_as_a_context_manager_releases_on_exit_even_on_error(
    clock: FakeClock,
) -> None:
    limits = CallerLimits(LimitSettings(rate_per_second=0.0, burst=100, max_concurrent=1), clock)
    admission = limits.admit(JUSTICE)
    assert isinstance(admission, Admission)

    def forward() -> None:
        with admission:
            assert limits.in_flight(JUSTICE) == 1
            raise RuntimeError("the upstream failed")

    with pytest.raises(RuntimeError, match="upstream failed"):
        forward()

    assert limits.in_flight(JUSTICE) == 0
    assert isinstance(limits.admit(JUSTICE), Admission)


def test_a_call_refused_for_concurrency_consumes_no_token(clock: FakeClock) -> None:
    limits = CallerLimits(LimitSettings(rate_per_second=0.0, burst=3, max_concurrent=1), clock)
    running = limits.admit(JUSTICE)
    assert isinstance(running, Admission)

    refusals = [limits.admit(JUSTICE) for _ in range(20)]
    assert set(refusals) == {Rejection("CONCURRENCY_LIMITED", 0.0)}

    running.release()
    # Two tokens remain of the three: the twenty refusals spent none.
    second = limits.admit(JUSTICE)
    assert isinstance(second, Admission)
    second.release()
    assert isinstance(limits.admit(JUSTICE), Admission)


def test_a_call_refused_for_rate_takes_no_concurrency_slot(clock: FakeClock) -> None:
    limits = CallerLimits(LimitSettings(rate_per_second=1.0, burst=1, max_concurrent=2), clock)
    running = limits.admit(JUSTICE)
    assert isinstance(running, Admission)

    for _ in range(5):
        assert isinstance(limits.admit(JUSTICE), Rejection)

    assert limits.in_flight(JUSTICE) == 1
    clock.advance(1.0)
    assert isinstance(limits.admit(JUSTICE), Admission)


def test_overrides_give_named_callers_their_own_limits(clock: FakeClock) -> None:
    limits = CallerLimits(
        LimitSettings(rate_per_second=0.0, burst=2, max_concurrent=100),
        clock,
        overrides={POLICE: LimitSettings(rate_per_second=0.0, burst=7, max_concurrent=100)},
    )

    assert len(_admitted(limits, JUSTICE, 10)) == 2
    assert len(_admitted(limits, POLICE, 10)) == 7
    assert limits.settings_for(POLICE).burst == 7


def test_a_caller_with_rate_zero_is_told_no_retry_will_succeed(clock: FakeClock) -> None:
    limits = CallerLimits(LimitSettings(rate_per_second=0.0, burst=1, max_concurrent=5), clock)
    _admitted(limits, JUSTICE, 1)

    refused = limits.admit(JUSTICE)

    assert isinstance(refused, Rejection)
    assert refused.reason == "RATE_LIMITED"
    assert math.isinf(refused.retry_after)


def _yielding_clock() -> float:
    # Handing the GIL over inside every clock read makes threads interleave in the middle of
    # admit(): without the locks, this test admits more than the burst.
    time.sleep(0)
    return 0.0


def test_concurrent_admissions_never_exceed_the_burst() -> None:
    limits = CallerLimits(
        LimitSettings(rate_per_second=0.0, burst=100, max_concurrent=10_000), _yielding_clock
    )
    admitted = [0] * 8
    start = threading.Barrier(8)

    def attempt(worker: int) -> None:
        start.wait()
        for _ in range(1000):
            if isinstance(limits.admit(JUSTICE), Admission):
                admitted[worker] += 1

    threads = [threading.Thread(target=attempt, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(admitted) == 100
    assert limits.in_flight(JUSTICE) == 100


def test_concurrent_releases_of_one_admission_free_one_slot() -> None:
    limits = CallerLimits(LimitSettings(rate_per_second=0.0, burst=100, max_concurrent=2))
    admissions = _admitted(limits, JUSTICE, 2)
    start = threading.Barrier(8)

    def release_twice() -> None:
        start.wait()
        admissions[0].release()
        admissions[0].release()

    threads = [threading.Thread(target=release_twice) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert limits.in_flight(JUSTICE) == 1


def test_a_token_bucket_starts_full_and_refills_continuously(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=4.0, burst=2, clock=clock)

    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]
    assert bucket.retry_after() == 0.25
    clock.advance(0.25)
    assert bucket.retry_after() == 0.0
    assert bucket.try_acquire()
    assert not bucket.try_acquire()


def test_a_clock_stepping_back_does_not_drain_the_bucket(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=1.0, burst=2, clock=clock)
    clock.advance(-50.0)

    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize(
    ("rate", "burst", "max_concurrent"),
    [(-1.0, 10, 10), (math.nan, 10, 10), (math.inf, 10, 10), (1.0, 0, 10), (1.0, 10, 0)],
)
def test_settings_that_would_admit_nothing_or_everything_are_refused(
    rate: float, burst: int, max_concurrent: int
) -> None:
    with pytest.raises(ValueError, match="must be"):
        LimitSettings(rate_per_second=rate, burst=burst, max_concurrent=max_concurrent)
